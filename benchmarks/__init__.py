"""Benchmark scripts (see README.md); a package so that ``python -m benchmarks.gpu_check`` finds
this folder before any installed module of the same name."""
