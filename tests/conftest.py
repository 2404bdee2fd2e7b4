"""Shared fixtures: every test that takes a ``device`` argument runs on the CPU and, when
present, on CUDA (skipped otherwise); the slow tiers are marked so a developer has a fast loop.

Tiers (``make test`` runs them all; ``make test-fast`` leaves out ``slow``):

* unmarked: reference operations against their oracles, grading helpers, data, viz.
* ``slow``: executing notebooks, nbgrader round trips, the demo, benchmark smoke runs.
"""

import sys
from pathlib import Path

import pytest
import torch

# Test helpers (the toy course, slow reference loops) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
)
def device(request) -> str:
    """The device a test runs on: ``"cpu"``, and ``"cuda"`` when there is a GPU."""
    return request.param


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: runs notebooks or nbgrader; left out by `make test-fast`")


def pytest_collection_modifyitems(config, items) -> None:
    # Solution notebooks collected by nbval are the slowest tier of all.
    for item in items:
        if item.fspath.ext == ".ipynb":
            item.add_marker(pytest.mark.slow)
