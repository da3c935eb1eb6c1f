"""The prepared GPU check: ``python -m benchmarks.gpu_check`` (see __main__.py)."""
