"""Guards around a student's function while it runs: a time limit, forbidden oracles.

``call_student`` is what a test cell uses: it runs the student's function on copies of the
inputs, inside a time limit, with the library functions that would solve the exercise
disabled, and checks that the inputs were not modified in place.

Forbidding works with a profile hook (``sys.setprofile``) that sees every call of a Python
function and of a C builtin made from Python, so it catches a forbidden function however it
was imported or renamed, builtins such as ``torch.conv_transpose2d``, and PyTorch operators
(``torch.ops.torchvision.nms``) through their Python call wrappers. The hook only records
a violation and lets the call finish; the error is raised when the guarded block ends, so
a student's ``try/except`` around the forbidden call cannot hide it.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import torch

from cs_dense.grading import registry
from cs_dense.grading.checks import CheckFailure
from cs_dense.grading.registry import resolve

_OP_CALL_CODES = {
    torch._ops.OpOverloadPacket.__call__.__code__,
    torch._ops.OpOverload.__call__.__code__,
}


class ForbiddenCallError(CheckFailure):
    """The student's code called a function the exercise asks them to write themselves."""


class TimeLimitExceeded(CheckFailure):
    """The student's code ran longer than the check allows."""


def devices() -> list[torch.device]:
    """Devices the checks run on: the CPU, and CUDA when present."""
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    return found


def _resolve(target: str | Callable) -> tuple[str, object]:
    """Turn ``"torchvision.ops.nms"`` or a callable into (display name, thing to watch)."""
    if not isinstance(target, str):
        return getattr(target, "__qualname__", repr(target)), target
    try:
        return target, resolve(target)
    except ValueError as error:
        raise ValueError(f"cannot forbid {target!r}: {error}") from None


class forbid(contextlib.ContextDecorator):
    """Disallow calls to the given functions inside the ``with`` block.

    Args:
        *targets: dotted names (``"torchvision.ops.nms"``, ``"torch.ops.torchvision.nms"``,
            ``"cs_dense.ops.nms"``) or the function objects themselves.
        exercise: what the student is writing, used in the message.

    Raises:
        ForbiddenCallError: on leaving the block if any forbidden function was called, or
            if the profile hook was removed or replaced while the block ran.
        ValueError: a dotted name does not resolve.
    """

    def __init__(self, *targets: str | Callable, exercise: str = "this function") -> None:
        self.exercise = exercise
        self._codes: dict = {}
        self._ops: dict = {}
        self._builtins: dict = {}
        for target in targets:
            name, thing = _resolve(target)
            if isinstance(thing, torch._ops.OpOverloadPacket):
                self._ops.setdefault(thing._qualified_op_name, name)
            elif isinstance(thing, torch._ops.OpOverload):
                self._ops.setdefault(thing.name(), name)
            elif hasattr(inspect.unwrap(thing), "__code__"):
                self._codes.setdefault(inspect.unwrap(thing).__code__, name)
            elif callable(thing):
                self._builtins.setdefault(id(thing), name)
            else:
                raise ValueError(f"cannot forbid {name}: it is not callable")
        self.called: list[str] = []

    def _profile(self, frame, event, arg):
        if event == "c_call":
            if id(arg) in self._builtins:
                self.called.append(self._builtins[id(arg)])
        elif event == "call":
            code = frame.f_code
            if code in self._codes:
                self.called.append(self._codes[code])
            elif code in _OP_CALL_CODES:
                op = frame.f_locals.get("self")
                name = getattr(op, "_qualified_op_name", None) or getattr(op, "_name", None)
                if name in self._ops:
                    self.called.append(self._ops[name])

    def __enter__(self) -> forbid:
        self.called = []
        self._previous = sys.getprofile()
        self._previous_threads = threading.getprofile()
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        hook_intact = sys.getprofile() == self._profile
        sys.setprofile(self._previous)
        threading.setprofile(self._previous_threads)
        if not hook_intact and exc_type is not None and issubclass(exc_type, TimeLimitExceeded):
            # The time limit's signal can fire inside the profile hook itself, and CPython
            # switches off a profile hook that raises: that is a slow student, not a tamperer.
            return False
        if not hook_intact:
            raise ForbiddenCallError(
                f"{self.exercise} removed or replaced the grader's profile hook (sys.setprofile); this is not allowed"
            )
        if self.called:
            names = ", ".join(dict.fromkeys(self.called))
            raise ForbiddenCallError(
                f"{self.exercise} called {names}, which is disabled in this check: "
                f"the exercise is to write it yourself"
            )
        return False


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "the code") -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` if the block runs longer than ``seconds``.

    Uses ``SIGALRM``, so the limit applies in the main thread on POSIX systems; elsewhere
    the block runs without a limit (nbgrader's per-cell timeout still applies).
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _expired(signum, frame):  # noqa: ARG001
        raise TimeLimitExceeded(
            f"{what} did not finish within {seconds:g} s: is there an infinite loop, "
            f"or a Python loop where a vectorised tensor operation would do?"
        )

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _same(a: object, b: object) -> bool:
    """Structural equality of a call argument and its pristine copy."""
    if type(a) is torch.Tensor and type(b) is torch.Tensor:
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.detach().cpu(), b.detach().cpu())
    if isinstance(a, (list, tuple)) and type(a) is type(b):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and type(a) is type(b):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return True  # other objects (numbers, strings, modules) are not inspected


@contextlib.contextmanager
def stand_ins(fn: Callable, functions: dict[str, Callable]) -> Iterator[None]:
    """Inside the block, names in ``fn``'s module namespace refer to the given functions.

    A notebook's functions look up other notebook functions by name when they run, so
    replacing, say, ``box_iou`` with the reference while the student's ``nms`` is checked
    means a mistake in ``box_iou`` costs points in the ``box_iou`` test only.
    """
    namespace = getattr(fn, "__globals__", None)
    if namespace is None:
        raise ValueError(f"stand-ins need a Python function, got {type(fn).__name__}")
    missing = object()
    saved = {name: namespace.get(name, missing) for name in functions}
    namespace.update(functions)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


def call_student(
    fn: Callable,
    *args,
    case: str = "",
    exercise: str | None = None,
    forbidden: tuple[str | Callable, ...] = (),
    stand_in: dict[str, Callable] | Sequence[str] | None = None,
    timeout: float = 10.0,
    **kwargs,
):
    """Run a student's function safely and return what it returns.

    The function receives deep copies of the arguments, so a function that modifies its
    inputs cannot corrupt the expected values; afterwards the copies are compared with the
    originals and a modified argument is reported as a failure.

    Args:
        fn: the student's function.
        *args, **kwargs: its arguments.
        case: the case name used in messages.
        exercise: the exercise's name in :mod:`cs_dense.grading.registry`; what it forbids
            is disabled while ``fn`` runs.
        forbidden: further functions disabled while ``fn`` runs (see :class:`forbid`).
        stand_in: the student's other functions to replace while ``fn`` runs (see
            :func:`stand_ins`): exercise names, replaced by their registry references,
            or a dict of names to functions.
        timeout: seconds allowed.

    Raises:
        CheckFailure: ``fn`` is not callable, modified an input, called a forbidden
            function or ran too long. Exceptions raised by ``fn`` itself propagate with a
            note naming the case.
    """
    __tracebackhide__ = True  # IPython leaves the grader's frames out of tracebacks
    name = getattr(fn, "__name__", "your function")
    where = f"[{case}] " if case else ""
    if not callable(fn):
        raise CheckFailure(f"{where}expected a function, got {type(fn).__name__}")
    if exercise is not None:
        forbidden = (*registry.forbidden(exercise), *forbidden)
    if stand_in is not None and not isinstance(stand_in, dict):
        stand_in = registry.references(stand_in)
    call_args, call_kwargs = copy.deepcopy(args), copy.deepcopy(kwargs)
    guard = forbid(*forbidden, exercise=f"{where}{name}")
    swap = stand_ins(fn, stand_in) if stand_in else contextlib.nullcontext()
    try:
        with swap, time_limit(timeout, f"{where}{name}"), guard:
            result = fn(*call_args, **call_kwargs)
    except CheckFailure:
        raise
    except Exception as error:
        error.add_note(f"(raised by {name} in test case {case!r})" if case else f"(raised by {name})")
        raise
    try:
        names = list(inspect.signature(fn).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        names = [f"argument {i}" for i in range(len(args))] + list(kwargs)
    for arg_name, before, after in zip(names, (*args, *kwargs.values()), (*call_args, *call_kwargs.values())):
        if not _same(before, after):
            raise CheckFailure(
                f"{where}{name} modified its input `{arg_name}` in place; leave inputs unchanged "
                f"(work on a copy, e.g. `.clone()`)"
            )
    return result
