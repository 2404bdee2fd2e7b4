"""One vocabulary for checking arguments, so every error message in the package reads the same.

Each function raises ``ValueError`` naming the argument, what it must be and what it was;
:func:`describe` is how a value is shown in those messages (and in the grading checks)::

    >>> describe(torch.zeros(2, 4))
    'Tensor[2, 4] torch.float32 on cpu'
    >>> check_int("batch_size", 0, low=1)
    Traceback (most recent call last):
    ValueError: batch_size must be an int >= 1, got 0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
from torch import Tensor


def describe(x: object) -> str:
    """A short description of a value for an error message: shape, dtype and device of a
    plain tensor; otherwise the type's name, qualified by its module unless it is a builtin
    (so a tensor subclass or a NumPy array is named for what it is)."""
    if type(x) is Tensor:
        return f"Tensor{list(x.shape)} {x.dtype} on {x.device}"
    kind = type(x)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def check_tensor(
    x: object,
    name: str,
    *,
    shape: str | None = None,
    ndim: int | None = None,
    last: int | None = None,
    floating: bool = False,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Raise ``ValueError`` unless ``x`` is a tensor of the given rank, last size and kind.

    Args:
        x: the argument.
        name: its name in the message.
        shape: how the expected shape is written in the message (``"[N, 4]"``); defaults to
            one built from ``ndim`` and ``last``.
        ndim: the required number of dimensions, if any.
        last: the required size of the last dimension, if any.
        floating: require a floating dtype.
        dtype: require exactly this dtype.

    Returns:
        Tensor: ``x`` itself, for chaining.
    """
    if shape is None:
        dims = ["..."] if ndim is None else ["*"] * ndim
        if last is not None:
            dims[-1] = str(last)
        shape = "[" + ", ".join(dims) + "]"
    kind = f"{dtype} " if dtype is not None else "floating " if floating else ""
    wanted = f"{name} must be a {kind}tensor of shape {shape}"
    if not isinstance(x, Tensor):
        raise ValueError(f"{wanted}, got {describe(x)}")
    if (ndim is not None and x.dim() != ndim) or (last is not None and (x.dim() == 0 or x.shape[-1] != last)):
        raise ValueError(f"{wanted}, got {describe(x)}")
    if (floating and not x.is_floating_point()) or (dtype is not None and x.dtype != dtype):
        raise ValueError(f"{wanted}, got {describe(x)}")
    return x


def check_same_length(name: str, x: Tensor, length: int, of: str) -> None:
    """Raise ``ValueError`` unless the 1-d tensor ``x`` has ``length`` entries (one per ``of``)."""
    check_tensor(x, name, ndim=1, shape=f"[{length}] (one entry per {of})")
    if x.shape[0] != length:
        raise ValueError(f"{name} must be a tensor of shape [{length}] (one entry per {of}), got {describe(x)}")


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) in ``[low, high]``."""
    bounds = _bounds(low, high)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not _inside(value, low, high):
        raise ValueError(f"{name} must be an int{bounds}, got {value!r}")
    return int(value)


def check_real(name: str, value: object, low: float | None = None, high: float | None = None, *, open_low: bool = False) -> float:
    """Raise ``ValueError`` unless ``value`` is a finite real number (not a bool) in ``[low, high]``
    (``(low, high]`` with ``open_low``)."""
    bounds = _bounds(low, high, open_low)
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value) and _inside(value, low, high)
    if not ok or (open_low and low is not None and value <= low):
        raise ValueError(f"{name} must be a number{bounds}, got {value!r}")
    return float(value)


#: A size given as one int for both axes or as ``(h, w)``, as PyTorch's layers take it.
Pair = int | tuple[int, int]


def check_pair(value: Pair, name: str, minimum: int) -> tuple[int, int]:
    """``value`` as an ``(h, w)`` pair of ints, each ``>= minimum``, or ``ValueError``."""
    pair = (value, value) if isinstance(value, int) else value
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
    ):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_positive_numbers(name: str, values: Sequence[float]) -> tuple[float, ...]:
    """Raise ``ValueError`` unless ``values`` is a non-empty sequence of positive numbers."""
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, Real) or not v > 0 for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    return values


def check_choice(name: str, value: object, choices: Sequence) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _inside(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _bounds(low: float | None, high: float | None, open_low: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if open_low else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if open_low else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""
