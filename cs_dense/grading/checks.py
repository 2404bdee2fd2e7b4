"""Strict comparisons that explain what is wrong.

Every check raises :class:`CheckFailure` (an ``AssertionError``) whose message names the
case, what was expected and what was received. The checks never call ``==`` on the
student's object and require exact types, so an object that claims to equal everything,
or a tensor subclass that fakes comparisons, fails with a message saying what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import torch

from cs_dense.validation import describe

# Default tolerances by dtype, the same as torch.testing.assert_close uses.
_TOLERANCES = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}
#: Exact scalar types accepted where a function should return a real number.
_REAL_TYPES = (float, int, np.float16, np.float32, np.float64, np.int32, np.int64)


class CheckFailure(AssertionError):
    """A student's result differs from the expected one; the message says how."""


def _where(case: str) -> str:
    return f"[{case}] " if case else ""


def assert_tensor_close(
    actual: object,
    expected: torch.Tensor,
    *,
    case: str = "",
    rtol: float | None = None,
    atol: float | None = None,
    check_dtype: bool = True,
    check_device: bool = True,
    equal_nan: bool = False,
) -> None:
    """Check that ``actual`` is a plain tensor equal to ``expected`` within tolerance.

    Integer and boolean tensors must match exactly; floating tensors within
    ``atol + rtol * |expected|`` (defaults per dtype as in ``torch.testing``).

    Args:
        actual: what the student's code returned.
        expected (Tensor): the reference result.
        case: a short name of the test case, shown in the message.
        rtol, atol: tolerances; both or neither.
        check_dtype: require the same dtype.
        check_device: require the same device type (``cuda:0`` and ``cuda`` agree).
        equal_nan: treat NaN as equal to NaN.

    Raises:
        CheckFailure: with the case, shapes, dtypes, devices, the number of wrong
            elements, the largest error and the first wrong index.
    """
    __tracebackhide__ = True  # IPython leaves the grader's frames out of tracebacks
    where = _where(case)
    if type(expected) is not torch.Tensor:
        raise TypeError(f"expected must be a torch.Tensor, got {describe(expected)}")
    if (rtol is None) != (atol is None):
        raise ValueError("give both rtol and atol, or neither")
    if type(actual) is not torch.Tensor:
        raise CheckFailure(f"{where}expected a torch.Tensor like {describe(expected)}, got {describe(actual)}")
    if actual.layout != torch.strided:
        raise CheckFailure(f"{where}expected a dense (strided) tensor, got layout {actual.layout}")
    if actual.shape != expected.shape:
        raise CheckFailure(
            f"{where}wrong shape: expected {tuple(expected.shape)}, got {tuple(actual.shape)}"
            f" (expected {describe(expected)})"
        )
    if check_dtype and actual.dtype != expected.dtype:
        raise CheckFailure(f"{where}wrong dtype: expected {expected.dtype}, got {actual.dtype}")
    if check_device and actual.device.type != expected.device.type:
        raise CheckFailure(f"{where}wrong device: expected a tensor on {expected.device}, got one on {actual.device}")

    got = actual.detach().to("cpu")
    want = expected.detach().to("cpu")
    if want.is_floating_point() or want.is_complex() or got.is_floating_point():
        wide = torch.promote_types(got.dtype, want.dtype)
        if not wide.is_floating_point:
            wide = torch.float64
        if rtol is None:
            rtol, atol = _TOLERANCES.get(want.dtype, _TOLERANCES[torch.float32])
        got_w, want_w = got.to(wide), want.to(wide)
        error = (got_w - want_w).abs()
        ok = error <= atol + rtol * want_w.abs()
        nan_got, nan_want = got_w.isnan(), want_w.isnan()
        ok = ok & ~nan_got & ~nan_want
        if equal_nan:
            ok = ok | (nan_got & nan_want)
        finite_error = torch.where(ok | ~(nan_got | nan_want), error, torch.full_like(error, math.inf))
        tolerance = f" (rtol={rtol:g}, atol={atol:g})"
    else:
        ok = got == want
        finite_error = (got.to(torch.float64) - want.to(torch.float64)).abs()
        tolerance = " (exact comparison)"
    if bool(ok.all()):
        return
    bad = (~ok).nonzero()
    first = tuple(int(i) for i in bad[0])
    n_bad, n_all = bad.shape[0], ok.numel()
    largest = float(finite_error[~ok].max())
    raise CheckFailure(
        f"{where}values differ{tolerance}: {n_bad} of {n_all} elements wrong, largest error {largest:.6g}; "
        f"first wrong at index {first}: expected {want[first].item()!r}, got {got[first].item()!r}"
    )


def assert_scalar_close(
    actual: object, expected: float, *, case: str = "", rtol: float = 1e-6, atol: float = 1e-9
) -> None:
    """Check that ``actual`` is a real number (not a tensor, not a bool) close to ``expected``.

    NaN matches NaN (undefined results such as AP without ground truth are NaN or -1 by
    convention, and the convention is part of what is checked).

    Raises:
        CheckFailure: naming the case, the type or the two values and their difference.
    """
    __tracebackhide__ = True  # IPython leaves the grader's frames out of tracebacks
    where = _where(case)
    if type(actual) not in _REAL_TYPES:
        hint = " (use .item() to turn a one-element tensor into a Python number)" if type(actual) is torch.Tensor else ""
        raise CheckFailure(f"{where}expected a Python float, got {describe(actual)}{hint}")
    got, want = float(actual), float(expected)
    if math.isnan(want) and math.isnan(got):
        return
    if math.isnan(got) or math.isnan(want) or abs(got - want) > atol + rtol * abs(want):
        raise CheckFailure(f"{where}expected {want!r}, got {got!r} (difference {abs(got - want):.3g})")


def assert_int_equal(actual: object, expected: int, *, case: str = "") -> None:
    """Check that ``actual`` is an integer (Python or NumPy, not bool) equal to ``expected``."""
    __tracebackhide__ = True  # IPython leaves the grader's frames out of tracebacks
    where = _where(case)
    if isinstance(actual, bool) or not isinstance(actual, Integral) or type(actual) not in (int, np.int32, np.int64):
        raise CheckFailure(f"{where}expected an int, got {describe(actual)}")
    if int(actual) != expected:
        raise CheckFailure(f"{where}expected {expected}, got {int(actual)}")


def assert_dict_close(
    actual: object,
    expected: Mapping,
    *,
    case: str = "",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    keys: list | None = None,
) -> None:
    """Check a dict of numbers (or of dicts of numbers, or tensors) key by key.

    Args:
        actual: what the student's code returned; must be a plain ``dict``.
        expected: the reference dict.
        keys: only these keys are compared (all of ``expected``'s by default); extra
            keys in ``actual`` are allowed.

    Raises:
        CheckFailure: naming the first missing key or the first wrong value.
    """
    __tracebackhide__ = True  # IPython leaves the grader's frames out of tracebacks
    where = _where(case)
    if type(actual) is not dict:
        raise CheckFailure(f"{where}expected a dict, got {describe(actual)}")
    for key in expected.keys() if keys is None else keys:
        if key not in actual:
            raise CheckFailure(f"{where}missing key {key!r} (expected keys: {sorted(map(str, expected))})")
        sub = f"{case}: {key!r}" if case else repr(key)
        want = expected[key]
        if isinstance(want, Mapping):
            assert_dict_close(actual[key], want, case=sub, rtol=rtol, atol=atol)
        elif type(want) is torch.Tensor:
            assert_tensor_close(actual[key], want, case=sub)
        elif isinstance(want, Real):
            assert_scalar_close(actual[key], want, case=sub, rtol=rtol, atol=atol)
        else:
            raise TypeError(f"cannot compare expected value of type {type(want).__name__} at key {key!r}")
