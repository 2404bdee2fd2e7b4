"""Device choice, seeding, autograde-aware budgets and a time-boxed training loop, shared by
every notebook."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cs_dense.validation import check_int

#: Set by nbgrader while it executes a notebook for grading.
AUTOGRADE_ENV = "NBGRADER_EXECUTION"
#: Optional override of the device choice, e.g. ``CS_DENSE_DEVICE=cpu``.
DEVICE_ENV = "CS_DENSE_DEVICE"
#: Learning-rate schedules of :func:`fit`.
SCHEDULES = ("cosine", "constant")


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


@dataclass
class History:
    """What :func:`fit` did: the loss after each step, and when.

    Attributes:
        losses: training loss of each step.
        seconds: wall-clock time since the start at the end of each step.
        stopped: why training ended: ``"time"``, ``"steps"`` or ``"data"``.
    """

    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stopped: str = ""

    @property
    def steps(self) -> int:
        return len(self.losses)


def shuffled_batches(n: int, batch_size: int, seed: int = 0) -> Iterator[Tensor]:
    """Endless batches of indices into ``range(n)``, reshuffled every epoch.

    The last batch of an epoch may be smaller. Give the result to a generator that
    indexes the data, e.g. ``((images[i], labels[i]) for i in shuffled_batches(len(images), 8))``.

    Args:
        n: number of items, ``>= 1``.
        batch_size: items per batch, ``>= 1``.
        seed: the shuffling's seed (a private generator: global RNG state is untouched).

    Yields:
        Tensor[<= batch_size] int64.
    """
    check_int("n", n, 1)
    check_int("batch_size", batch_size, 1)
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=generator).split(batch_size)


def fit(
    model: torch.nn.Module,
    batches: Iterable,
    loss_fn: Callable[[torch.nn.Module, object], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    max_seconds: float,
    max_steps: int | None = None,
    schedule: str = "cosine",
    progress: bool | None = None,
    desc: str = "training",
) -> History:
    """Train ``model`` until a time budget (or a step budget, or the data) runs out.

    Each step: ``loss = loss_fn(model, batch)``, backward, ``optimizer.step()``. Budgets
    in seconds make a notebook take the same time on every machine; a faster machine
    simply takes more steps.

    Args:
        model: put in training mode for the duration (and left in it).
        batches: any iterable of batches (e.g. a DataLoader, or an endless generator).
        loss_fn: maps (model, batch) to a scalar loss; it moves the batch to the device.
        optimizer: over the model's parameters.
        max_seconds: stop after the first step that ends past this many seconds.
        max_steps: stop after this many steps (default: no step limit).
        schedule: ``"cosine"`` lowers each parameter group's learning rate from its
            initial value to 0 along a half cosine of the budget used so far (the larger
            of the time and step fractions); ``"constant"`` leaves it alone. Annealing
            ends a short run at a settled model instead of wherever the last big step left it.
        progress: show a tqdm bar (default: yes, except while autograding).
        desc: the bar's label.

    Returns:
        History: per-step losses and times, and why training stopped.

    Raises:
        ValueError: a budget is not positive, or an unknown schedule.
        FloatingPointError: the loss became NaN or infinite (the step is named).
    """
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds!r}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    history = History()
    bar = tqdm(total=max_steps, desc=desc, disable=autograding() if progress is None else not progress)
    model.train()
    start = time.perf_counter()
    history.stopped = "data"
    for batch in batches:
        if schedule == "cosine":
            used = (time.perf_counter() - start) / max_seconds
            if max_steps is not None:
                used = max(used, history.steps / max_steps)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * 0.5 * (1 + math.cos(math.pi * min(used, 1.0)))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss.detach()).all():
            bar.close()
            raise FloatingPointError(
                f"{desc}: the loss is {loss.item()} at step {history.steps + 1}; lower the learning rate or check the data"
            )
        loss.backward()
        optimizer.step()
        history.losses.append(loss.item())
        history.seconds.append(time.perf_counter() - start)
        bar.update(1)
        bar.set_postfix(loss=f"{history.losses[-1]:.4f}", refresh=False)
        if max_steps is not None and history.steps >= max_steps:
            history.stopped = "steps"
            break
        if history.seconds[-1] >= max_seconds:
            history.stopped = "time"
            break
    bar.close()
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base  # a second fit() with the same optimizer starts afresh
    return history
