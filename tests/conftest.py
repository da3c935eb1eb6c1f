"""The ``cuda`` marker: tests that need a CUDA device.

``pytest -m cuda`` selects them (benchmarks/gpu_check runs them on a lent GPU); without a
device they skip with one reason. A test is a CUDA test when it carries ``@pytest.mark.cuda``.
"""

from __future__ import annotations

import pytest
import torch

NO_CUDA = "needs a CUDA device (run with -m cuda on a GPU machine)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"cuda: {NO_CUDA}; skipped without one")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = torch.cuda.is_available()
    for item in items:
        if not has_cuda and item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.skip(reason=NO_CUDA))
