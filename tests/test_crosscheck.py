"""The grader's cross-check: its protocol, and every notebook's probes against real code.

The probes are judged on the code of the sample submissions, loaded without a kernel:
the solutions must pass every probe, and each planted bug of the ``partial`` samples must
fail the probes of its own grade cell and no other.

The grader draws a secret seed for each submission, so that must hold whatever the seed.
The suite stays deterministic with fixed seeds: a few in the fast tier, a hundred in the
slow one, enough to find a probe that misses its bug for one seed in thirty or more.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest
import torch

from cs_dense.course.layout import Course
from cs_dense.course.samples import BUGS
from cs_dense.grading import CheckFailure
from cs_dense.grading.crosscheck import Case, Probe, answer, judge, plan, read_answers, write_request
from cs_dense.grading.probes import BY_NOTEBOOK, probes_for

COURSE = Course(Path(__file__).resolve().parents[1])
NOTEBOOKS = list(BY_NOTEBOOK)
FEW_SEEDS, MANY_SEEDS = range(3), range(1000, 1100)


def _defines(node: ast.stmt) -> bool:
    """Imports, functions, classes, constants (from torch, math or numpy) and prints: no training, no plots."""
    if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef):
        return True
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "print"
    calls = [n.func for n in ast.walk(node) if isinstance(n, ast.Call)]
    return isinstance(node, ast.Assign) and all(
        isinstance(f, ast.Attribute) and getattr(f.value, "id", None) in ("torch", "math", "np") for f in calls
    )


def notebook_namespace(path) -> dict:
    """What a notebook defines, without its heavy cells: its set-up cell, its solution cells,
    and every cell made only of imports, functions, classes, constants and prints."""
    namespace: dict = {"__name__": "__main__"}
    for cell in nbformat.read(path, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("grade") and not meta.get("solution")):
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        definitions = all(_defines(node) for node in ast.parse(source).body)
        if meta.get("solution") or meta.get("grade_id") == "setup" or definitions:
            exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - the course's own samples
    return namespace


def cross_check(probes, namespace, folder, seed=0) -> dict[str, list[str]]:
    """The whole round trip, kernel side and grader side in this process."""
    planned = plan(probes, seed)
    write_request(planned, folder / "request.pt")
    answer(str(folder / "request.pt"), str(folder / "answers.pt"), namespace)
    return judge(planned, read_answers(folder / "answers.pt", len(planned)))


def _sample(student: str, notebook: str):
    return COURSE.data / "samples" / student / notebook / f"{notebook}.ipynb"


def _grade_ids(notebook: str) -> list[str]:
    cells = nbformat.read(COURSE.solutions / notebook / f"{notebook}.ipynb", as_version=4).cells
    meta = [c.metadata.get("nbgrader", {}) for c in cells if c.cell_type == "code"]
    return [m["grade_id"] for m in meta if m.get("grade") and not m.get("solution")]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_grade_cell_has_probes(notebook):
    assert list(BY_NOTEBOOK[notebook]) == _grade_ids(notebook)
    for grade_id, probes in BY_NOTEBOOK[notebook].items():
        assert probes, grade_id


def _misjudged(notebook: str, seeds, folder) -> dict[int, str]:
    """The seeds for which a solution fails a probe, or the planted bugs fail other cells than their own."""
    probes, planted = BY_NOTEBOOK[notebook], sorted(f"test_{bug.cell}" for bug in BUGS[notebook])
    complete, partial = (notebook_namespace(_sample(who, notebook)) for who in ("complete", "partial"))
    wrong = {}
    for seed in seeds:
        solutions = cross_check(probes, complete, folder, seed)
        assert solutions.keys() == probes.keys()
        failed = {g: f for g, f in solutions.items() if f}
        bugs = sorted(g for g, f in cross_check(probes, partial, folder, seed).items() if f)
        if failed or bugs != planted:
            wrong[seed] = f"solutions fail {failed}" if failed else f"planted bugs fail {bugs}, not {planted}"
    return wrong


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_probes_pass_solutions_and_fail_planted_bugs(notebook, tmp_path):
    assert _misjudged(notebook, FEW_SEEDS, tmp_path) == {}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_probes_judge_alike_whatever_the_seed(notebook, tmp_path):
    assert _misjudged(notebook, MANY_SEEDS, tmp_path) == {}


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_unanswered_probes_fail(notebook, tmp_path):
    """A blank notebook raises NotImplementedError everywhere: every grade cell fails."""
    failures = cross_check(BY_NOTEBOOK[notebook], notebook_namespace(_sample("blank", notebook)), tmp_path)
    assert all(failures.values()), [g for g, f in failures.items() if not f]


# ------------------------------------------------------------------------ the protocol


def _double(gen):
    x = torch.randn(3, generator=gen)
    return [Case("a vector", (x,), expected=2 * x), Case("a string", ("ab",), raises="TypeError")]


PROBES = {"test_double": (Probe("double", "box_iou", _double),)}


def test_right_answers_pass(tmp_path):
    def double(x):
        if not isinstance(x, torch.Tensor):
            raise TypeError("x must be a tensor")
        return 2 * x

    assert cross_check(PROBES, {"double": double}, tmp_path) == {"test_double": []}


def test_wrong_answers_and_missing_functions_fail(tmp_path):
    (wrong,) = cross_check(PROBES, {"double": lambda x: 3 * x}, tmp_path, seed=7)["test_double"][:1]
    assert wrong.startswith("double [a vector] values differ") and wrong.endswith("(seed 7)")
    missing = cross_check(PROBES, {}, tmp_path)["test_double"]
    assert len(missing) == 2 and "the notebook defines no 'double'" in missing[0]


def test_an_answer_that_is_not_data_fails(tmp_path):
    failures = cross_check(PROBES, {"double": lambda x: torch.nn.Linear(1, 1)}, tmp_path)["test_double"]
    assert "returned a Linear, not tensors" in failures[0]


def test_patched_checks_in_the_kernel_change_nothing(tmp_path):
    """The kernel's copy of the grading module is patched; the judge's is not."""
    import cs_dense.grading.harness as harness

    kernel_compare = harness.compare
    harness.compare = lambda *args, **kwargs: None  # what a tampering notebook would do...
    try:
        planned = plan(PROBES, 3)
        write_request(planned, tmp_path / "request.pt")
        answer(str(tmp_path / "request.pt"), str(tmp_path / "answers.pt"), {"double": lambda x: 3 * x})
    finally:
        harness.compare = kernel_compare  # ...in its own process, not in the grader's
    assert judge(planned, read_answers(tmp_path / "answers.pt", len(planned)))["test_double"]


def test_forged_answer_files_are_not_read(tmp_path):
    planned = plan(PROBES, 1)
    path = tmp_path / "answers.pt"
    assert "wrote no answers" in read_answers(path, 2)
    path.symlink_to(tmp_path / "elsewhere.pt")
    torch.save([{"value": 0}] * 2, tmp_path / "elsewhere.pt")
    assert "wrote no answers" in read_answers(path, 2)  # a symbolic link is not followed
    path.unlink()
    os.mkfifo(path)
    assert "regular file" in read_answers(path, 2)  # a pipe would block the grader
    path.unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("code ran in the grader",))

    torch.save([{"value": Payload()}] * 2, path)
    assert "could not be read" in read_answers(path, 2)  # weights_only: no code runs
    torch.save([{"value": 1}], path)
    assert "one per question" in read_answers(path, 2)
    torch.save([{"value": 1, "error": "x"}, {"value": 1}], path)
    assert "one per question" in read_answers(path, 2)
    failures = judge(planned, "the kernel wrote no answers")
    assert len(failures["test_double"]) == 2


def test_raises_cases_need_the_named_error(tmp_path):
    (silent,) = cross_check(PROBES, {"double": lambda x: 2 * x if isinstance(x, torch.Tensor) else None}, tmp_path)[
        "test_double"
    ]
    assert "should raise a TypeError" in silent and "it raised nothing" in silent
    (other,) = cross_check(PROBES, {"double": lambda x: 2 * x if isinstance(x, torch.Tensor) else 1 / 0}, tmp_path)[
        "test_double"
    ]
    assert "it raised ZeroDivisionError: division by zero" in other


def test_a_case_needs_one_way_to_judge():
    with pytest.raises(ValueError, match="exactly one"):
        Case("nothing to compare with", (1,))
    with pytest.raises(ValueError, match="exactly one"):
        Case("two ways", (1,), expected=1, raises="ValueError")


def test_judges_that_raise_fail_the_case(tmp_path):
    def bad_judge(value):
        raise CheckFailure("not a permutation")

    probes = {"t": (Probe("f", "box_iou", lambda gen: [Case("c", (1,), judge=bad_judge)]),)}
    assert "not a permutation" in cross_check(probes, {"f": lambda x: x}, tmp_path)["t"][0]


def test_probes_for_keeps_the_notebook_order():
    assert list(probes_for(["test_masks_to_boxes", "unknown", "test_box_convert"])) == [
        "test_masks_to_boxes",
        "test_box_convert",
    ]
