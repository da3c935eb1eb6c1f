"""Training tests: the ``distributed`` marker (slow: `accelerate launch` with 2 CPU processes
of DeepSpeed; they run in `make test` too, `-m "not distributed"` leaves them out)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "distributed: slow (~1-2 min): launches 2 CPU processes through accelerate + DeepSpeed",
    )
