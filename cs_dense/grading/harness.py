"""The one checking helper test cells use: call the student's function, compare, report.

A visible test reads as a list of cases::

    check(box_iou, a, b, expected=torch.tensor([[1 / 7]]), case="the worked example",
          exercise="box_iou")
    check_raises(box_convert, boxes, "xyxy", "yolo", mentions="out_fmt",
                 case="an unknown format", exercise="box_convert")

Each passing case prints ``ok: <case>``; a failing one raises :class:`CheckFailure`
with the case, the expected and received shape, dtype and values, and the largest error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from cs_dense.grading.checks import (
    CheckFailure,
    assert_dict_close,
    assert_int_equal,
    assert_scalar_close,
    assert_tensor_close,
)
from cs_dense.grading.guards import call_student

#: ``expected=NOTHING`` (the default) calls and returns without comparing, for checks
#: that look at the result in their own way.
NOTHING = object()


def compare(
    actual: object,
    expected: object,
    *,
    case: str = "",
    rtol: float | None = None,
    atol: float | None = None,
    check_dtype: bool = True,
) -> None:
    """Compare by the type of ``expected``: tensors, floats, ints, bools, dicts, tuples.

    Tuples and lists compare element by element (the student's result must be a tuple or
    list of the same length); the tolerances apply to every floating element.

    Raises:
        CheckFailure: the first difference, named by ``case`` (and the element's index).
        TypeError: ``expected`` is of a type this cannot compare.
    """
    __tracebackhide__ = True  # IPython leaves the grader's frames out of tracebacks
    where = f"[{case}] " if case else ""
    if type(expected) is torch.Tensor:
        assert_tensor_close(actual, expected, case=case, rtol=rtol, atol=atol, check_dtype=check_dtype)
    elif type(expected) is bool:
        if type(actual) is not bool or actual is not expected:
            raise CheckFailure(f"{where}expected {expected!r} (a bool), got {actual!r}")
    elif isinstance(expected, int):
        assert_int_equal(actual, expected, case=case)
    elif isinstance(expected, float):
        scalar_tolerance = {} if rtol is None else {"rtol": rtol, "atol": atol}
        assert_scalar_close(actual, expected, case=case, **scalar_tolerance)
    elif isinstance(expected, Mapping):
        dict_tolerance = {} if rtol is None else {"rtol": rtol, "atol": atol}
        assert_dict_close(actual, expected, case=case, **dict_tolerance)
    elif isinstance(expected, tuple | list):
        if type(actual) not in (tuple, list) or len(actual) != len(expected):
            got = f"a {type(actual).__name__} of length {len(actual)}" if type(actual) in (tuple, list) else type(actual).__name__
            raise CheckFailure(f"{where}expected a tuple of {len(expected)} results, got {got}")
        for i, (got_i, want_i) in enumerate(zip(actual, expected)):
            compare(got_i, want_i, case=f"{case}, result {i}", rtol=rtol, atol=atol, check_dtype=check_dtype)
    else:
        raise TypeError(f"cannot compare an expected value of type {type(expected).__name__}")


def check(
    fn: Callable,
    *args,
    expected: object = NOTHING,
    case: str,
    exercise: str | None = None,
    forbidden: tuple = (),
    stand_in: dict[str, Callable] | Sequence[str] | None = None,
    timeout: float = 10.0,
    rtol: float | None = None,
    atol: float | None = None,
    check_dtype: bool = True,
    show: bool = True,
    **kwargs,
):
    """Call ``fn(*args, **kwargs)`` under :func:`call_student`, compare with ``expected``.

    Args:
        fn: the student's function.
        *args, **kwargs: its arguments.
        expected: the right result (see :func:`compare`), or ``NOTHING`` to skip comparing.
        case: what is being checked, in words; shown as ``ok: <case>`` and in failures.
        exercise, forbidden, stand_in, timeout: as for :func:`call_student`.
        rtol, atol: tolerances (both or neither); per-dtype defaults otherwise.
        check_dtype: require the expected dtype of tensors.
        show: print ``ok: <case>`` on success (hidden tests pass ``False``).

    Returns:
        what ``fn`` returned, for further checks.
    """
    __tracebackhide__ = True  # IPython leaves the grader's frames out of tracebacks
    got = call_student(
        fn, *args, case=case, exercise=exercise, forbidden=forbidden, stand_in=stand_in, timeout=timeout, **kwargs
    )
    if expected is not NOTHING:
        compare(got, expected, case=case, rtol=rtol, atol=atol, check_dtype=check_dtype)
    if show:
        print("ok:", case)
    return got


def check_raises(
    fn: Callable,
    *args,
    error: type[Exception] = ValueError,
    mentions: str | Sequence[str] = (),
    case: str,
    exercise: str | None = None,
    show: bool = True,
    **kwargs,
) -> None:
    """Check that ``fn(*args, **kwargs)`` raises ``error`` whose message names ``mentions``.

    Raises:
        CheckFailure: nothing was raised, another exception was, or the message does not
            mention every string in ``mentions`` (say, the name of the bad argument).
    """
    __tracebackhide__ = True  # IPython leaves the grader's frames out of tracebacks
    where = f"[{case}] " if case else ""
    wanted = [mentions] if isinstance(mentions, str) else list(mentions)
    try:
        call_student(fn, *args, case=case, exercise=exercise, **kwargs)
    except error as raised:
        missing = [text for text in wanted if text not in str(raised)]
        if missing:
            raise CheckFailure(
                f"{where}the {error.__name__} should say {' and '.join(map(repr, missing))}; its message was: {raised}"
            ) from None
        if show:
            print(f"ok: {case} -> {error.__name__}: {raised}")
        return
    except CheckFailure:
        raise
    except Exception as raised:  # noqa: BLE001 - reported as the wrong kind of error
        raise CheckFailure(f"{where}expected a {error.__name__}, got {type(raised).__name__}: {raised}") from None
    raise CheckFailure(f"{where}expected a {error.__name__}, but nothing was raised")
