"""`radio-vlm quickstart` (= `make demo`): a tiny VLM learns to read on CPU, then the paper's
comparison at an equal visual-token budget. ``runner`` runs it; ``model``, ``training`` and
``report`` are its parts."""
