"""The grader's cross-check: fresh inputs, answers as data, judged outside the kernel.

Test cells run in the student's kernel, so code the student wrote can patch whatever they
use (``check``, ``torch.equal``, IPython itself) and make a wrong answer pass. The
cross-check does not trust the kernel with anything but running the student's code:

1. After the notebook's own cells, and before any hidden test has entered the kernel, the
   grader draws fresh inputs for every graded function from a secret seed, computes the
   expected results with the reference implementations, in its own process, and writes
   only the inputs to a file the kernel can read.
2. One cell in the kernel (:func:`answer`) calls each student function on those inputs
   and writes what it returned: tensors, numbers, strings, and tuples, lists and dicts
   of them.
3. The grader reads that file as data only (``torch.load(weights_only=True)``: nothing
   in it can run code) and compares, in its own process (:func:`judge`).

Whatever the kernel patched, all it can change is the answers it returns, so a wrong
answer fails the cross-check, and a grade cell scores only if its tests and its
cross-check both pass. What it cannot see, because it exists only inside the kernel, is
listed in the README (hooks left on a model, inputs modified in place, forbidden calls).

Each notebook's probes live in :mod:`cs_dense.grading.probes`, keyed by grade cell.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from cs_dense.grading.checks import CheckFailure
from cs_dense.grading.guards import call_student, stand_ins
from cs_dense.grading.harness import NOTHING, compare
from cs_dense.grading.registry import references, resolve

#: Largest answers file the grader reads; a larger one counts as no answer.
MAX_ANSWER_BYTES = 256 << 20
#: Characters of a student's error message kept in the report.
_MAX_MESSAGE = 500


@dataclass(frozen=True)
class Case:
    """One call the grader makes, and how it judges the answer.

    Args:
        what: the case in words, shown when it fails.
        args, kwargs: the inputs (anything ``torch.save`` can write; modules included).
        expected: the right answer, compared with :func:`~cs_dense.grading.compare`;
            computed by the grader, never by the kernel.
        judge: instead of ``expected``, a function of the answer that raises
            :class:`~cs_dense.grading.CheckFailure` when it is wrong (for answers with
            more than one right value, such as a random sample or one of several optimal
            assignments). It runs in the grader.
        raises, mentions: instead, the name of the exception the call must raise, and
            strings its message must contain (as :func:`~cs_dense.grading.check_raises`).
        rtol, atol, check_dtype: as for :func:`~cs_dense.grading.compare`.
    """

    what: str
    args: tuple = ()
    kwargs: Mapping = field(default_factory=dict)
    expected: object = NOTHING
    judge: Callable[[object], None] | None = None
    raises: str | None = None
    mentions: tuple[str, ...] = ()
    rtol: float | None = None
    atol: float | None = None
    check_dtype: bool = True

    def __post_init__(self) -> None:
        if sum((self.expected is not NOTHING, self.judge is not None, self.raises is not None)) != 1:
            raise ValueError(f"case {self.what!r}: give exactly one of expected, judge and raises")


@dataclass(frozen=True)
class Probe:
    """What the grader calls for one graded function or class.

    Args:
        name: the notebook's name for it (``"nms"``, ``"UNet"``).
        exercise: its entry in :mod:`cs_dense.grading.registry` (forbidden calls).
        cases: ``cases(generator) -> list[Case]``, drawing inputs from ``generator``.
        recipe: for a class, the dotted name of a package function the kernel runs as
            ``recipe(student_class, *args, **kwargs)`` to turn it into data (build it,
            load given weights, run it). The recipe runs in the kernel, so what it
            returns is only as trustworthy as the kernel; the README says which
            exercises rely on one.
        stand_in: exercises whose reference replaces the student's function while this
            one runs, as in test cells.
        timeout: seconds each call may take.
    """

    name: str
    exercise: str
    cases: Callable[[torch.Generator], list[Case]]
    recipe: str | None = None
    stand_in: tuple[str, ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True)
class Planned:
    """One case as the grader keeps it: the grade cell, the probe, the case and the seed it came from."""

    grade_id: str
    probe: Probe
    case: Case
    seed: int


def randint(gen: torch.Generator, low: int, high: int) -> int:
    """An int drawn uniformly from ``low`` .. ``high - 1`` by ``gen``: what probes draw sizes with."""
    return int(torch.randint(low, high, (), generator=gen))


def plan(probes: Mapping[str, Sequence[Probe]], seed: int) -> list[Planned]:
    """Draw every case of every probe, in a fixed order, from one seed."""
    generator = torch.Generator().manual_seed(seed)
    planned = []
    for grade_id, group in probes.items():
        for probe in group:
            for case in probe.cases(generator):
                planned.append(Planned(grade_id, probe, case, seed))
    return planned


def request(planned: Sequence[Planned]) -> list[dict]:
    """What the kernel receives: names and inputs, never the expected answers."""
    return [
        {
            "name": p.probe.name,
            "exercise": p.probe.exercise,
            "recipe": p.probe.recipe,
            "stand_in": list(p.probe.stand_in),
            "timeout": p.probe.timeout,
            "what": p.case.what,
            "args": p.case.args,
            "kwargs": dict(p.case.kwargs),
        }
        for p in planned
    ]


def write_request(planned: Sequence[Planned], path: str | os.PathLike) -> None:
    """Write the kernel's inputs to ``path``."""
    torch.save(request(planned), path)


# ----------------------------------------------------------------- in the student's kernel


def _as_data(value: object) -> object:
    """``value`` as plain data ``torch.load(weights_only=True)`` reads; ValueError otherwise."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) in (list, tuple):
        return type(value)(_as_data(v) for v in value)
    if type(value) is dict and all(type(k) in (str, int) for k in value):
        return {k: _as_data(v) for k, v in value.items()}
    raise ValueError(f"returned a {type(value).__name__}, not tensors, numbers or strings")


def answer(request_path: str, answers_path: str, namespace: Mapping[str, object]) -> None:
    """Call each requested function of ``namespace`` and write what it returned.

    Runs in the student's kernel (the cross-check cell calls it with ``globals()``). Each
    answer is ``{"value": data}`` or ``{"error": message}``.
    """
    answers = []
    for item in torch.load(request_path, weights_only=False):
        name, what = item["name"], item["what"]
        try:
            if name not in namespace:
                raise NameError(f"the notebook defines no {name!r}")
            fn, stand_in, swap = namespace[name], item["stand_in"] or None, contextlib.nullcontext()
            if item["recipe"] is not None:
                recipe = resolve(item["recipe"])
                if stand_in:  # swapped in the student's namespace, which the recipe's partial has not
                    swap, stand_in = stand_ins(fn, references(stand_in)), None
                fn = functools.update_wrapper(functools.partial(recipe, fn), recipe)
            with swap:
                got = call_student(fn, *item["args"], case=what, exercise=item["exercise"], stand_in=stand_in,
                                   timeout=item["timeout"], **item["kwargs"])
            answers.append({"value": _as_data(got)})
        except Exception as error:  # noqa: BLE001 - every failure becomes that case's answer
            answers.append({"error": f"{type(error).__name__}: {error}"[:_MAX_MESSAGE]})
    torch.save(answers, answers_path)


# ----------------------------------------------------------------------------- in the grader


def read_answers(path: str | os.PathLike, count: int) -> list[dict] | str:
    """The kernel's answers as data, or why there are none.

    The file is opened without following a symbolic link, must be a regular file of at
    most :data:`MAX_ANSWER_BYTES`, and is read with ``weights_only=True``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "the kernel wrote no answers (the cross-check cell did not run to its end)"
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ANSWER_BYTES:
            return "the kernel's answers were not a regular file of a readable size"
        data = file.read(MAX_ANSWER_BYTES + 1)
    try:
        answers = torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # noqa: BLE001 - anything unreadable is no answer
        return "the kernel's answers could not be read as tensors and numbers"
    well_formed = (
        type(answers) is list
        and len(answers) == count
        and all(type(a) is dict and len(a) == 1 and ("value" in a or type(a.get("error")) is str) for a in answers)
    )
    return answers if well_formed else "the kernel's answers were not one per question"


def _verdict(p: Planned, got: dict) -> str | None:
    """Why one answer is wrong, or None."""
    where = f"{p.probe.name} [{p.case.what}]"
    if p.case.raises is not None:
        error = got.get("error", "")
        if error.startswith(f"{p.case.raises}:") and all(text in error for text in p.case.mentions):
            return None
        naming = ", ".join(map(repr, p.case.mentions)) or "the problem"
        said = f"raised {error}" if error else "raised nothing"
        return f"{where} should raise a {p.case.raises} naming {naming}; it {said}"
    if "error" in got:
        return f"{where} raised {got['error']}"
    try:
        if p.case.judge is not None:
            p.case.judge(got["value"])
        else:
            compare(got["value"], p.case.expected, case=p.case.what, rtol=p.case.rtol, atol=p.case.atol,
                    check_dtype=p.case.check_dtype)
    except CheckFailure as failure:  # its message names the case
        return f"{p.probe.name} {failure}"
    except Exception as error:  # noqa: BLE001 - an answer of the wrong form fails its case
        return f"{where}: the answer could not be judged ({type(error).__name__}: {error})"
    return None


def judge(planned: Sequence[Planned], answers: list[dict] | str) -> dict[str, list[str]]:
    """``{grade_id: [failure messages]}`` over every grade cell with probes (empty list: passed).

    ``answers`` is what :func:`read_answers` returned: one answer per planned case, or why
    there are none (then every case fails with that reason).
    """
    failures: dict[str, list[str]] = {p.grade_id: [] for p in planned}
    for i, p in enumerate(planned):
        if isinstance(answers, str):
            why = f"{p.probe.name} [{p.case.what}]: {answers}"
        else:
            why = _verdict(p, answers[i])
        if why is not None:
            failures[p.grade_id].append(f"{why[: 4 * _MAX_MESSAGE]} (seed {p.seed})")
    return failures
