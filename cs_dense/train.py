"""Device choice, seeding and autograde-aware budgets shared by every notebook."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

#: Set by nbgrader while it executes a notebook for grading.
AUTOGRADE_ENV = "NBGRADER_EXECUTION"
#: Optional override of the device choice, e.g. ``CS_DENSE_DEVICE=cpu``.
DEVICE_ENV = "CS_DENSE_DEVICE"


def device() -> torch.device:
    """The device notebooks should use: CUDA when present, else the CPU.

    ``CS_DENSE_DEVICE`` overrides the choice (``cpu``, ``cuda``, ``cuda:1``).

    Raises:
        ValueError: ``CS_DENSE_DEVICE`` names CUDA on a machine without it.
    """
    override = os.environ.get(DEVICE_ENV)
    if override:
        chosen = torch.device(override)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={override!r} but CUDA is not available on this machine")
        return chosen
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (all devices)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autograding() -> bool:
    """True while nbgrader executes the notebook for grading."""
    return bool(os.environ.get(AUTOGRADE_ENV))


def budget(interactive, autograde):
    """Pick a budget (steps, seconds, samples...): the full one interactively, the small one when graded."""
    return autograde if autograding() else interactive
