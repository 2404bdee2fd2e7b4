"""A two-exercise toy course for testing the grading pipeline quickly.

Exercise ``add`` (2 points) and exercise ``scale`` (3 points, with a hidden test and
``torch.mul`` forbidden). The tests use ``cs_dense.grading``, so the toy also exercises the
checks and guards inside a real kernel.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from cs_dense.course.layout import Course, run_nbgrader
from cs_dense.course.sandbox import SandboxUnavailable, find_bwrap

ASSIGNMENT = "99_toy"
REPO = Path(__file__).resolve().parents[1]
HIDDEN_MARKER = "hidden-case-7f3a"
#: grade id of the written answer (``written=True``)
WRITTEN = "explain_scale"


def _cell(kind: str, source: str, grade_id: str, *, solution=False, grade=False, points=0):
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = make(source)
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    cell.metadata["nbgrader"] = meta
    return cell


def toy_notebook(written: bool = False) -> nbformat.NotebookNode:
    """The toy; ``written`` adds a question answered in words and graded by hand (2 points)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        _cell("markdown", "# Toy assignment", "intro"),
        _cell("code", "import torch\nfrom cs_dense.grading import assert_int_equal, assert_tensor_close, call_student", "setup"),
        _cell("code", "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION", "add", solution=True),
        _cell("code", "assert_int_equal(call_student(add, 2, 3, case='2 + 3'), 5, case='2 + 3')\nprint('ok: add')",
              "test_add", grade=True, points=2),
        _cell("code", "def scale(x, k):\n    ### BEGIN SOLUTION\n    return x * k\n    ### END SOLUTION",
              "scale", solution=True),
        _cell(
            "code",
            "x = torch.arange(4.0)\n"
            "assert_tensor_close(call_student(scale, x, 2.0, case='visible', forbidden=('torch.mul',)), x * 2, case='visible')\n"
            "### BEGIN HIDDEN TESTS\n"
            f"case = '{HIDDEN_MARKER}'\n"
            "y = torch.randn(5)\n"
            "assert_tensor_close(call_student(scale, y, -3.0, case=case), y * -3.0, case=case)\n"
            "### END HIDDEN TESTS",
            "test_scale",
            grade=True,
            points=3,
        ),
    ]
    if written:
        nb.cells += [
            _cell("markdown", "Why may `scale` not call `torch.mul`?", "ask_why"),
            _cell("markdown", "Because the exercise is to write the product yourself.", WRITTEN, solution=True,
                  grade=True, points=2),
        ]
    return nb


def make_toy_course(root: Path, written: bool = False) -> Course:
    """A course repository in ``root`` with the toy assignment and the real nbgrader settings."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "data").mkdir(exist_ok=True)
    folder = root / "solutions" / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(toy_notebook(written), folder / f"{ASSIGNMENT}.ipynb")
    return Course(root)


def require_sandbox() -> None:
    """Skip without bubblewrap, except where the sandbox must be tested (CI sets CS_DENSE_REQUIRE_SANDBOX)."""
    try:
        find_bwrap()
    except SandboxUnavailable as error:
        if os.environ.get("CS_DENSE_REQUIRE_SANDBOX"):
            raise
        pytest.skip(str(error))


def nbgrader_export(course: Course) -> dict[str, tuple[float, float]]:
    """``nbgrader export`` run in the course folder: student -> (score, max score)."""
    result = run_nbgrader(["export", "--to", "export.csv"], cwd=course.root)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(course.root / "export.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["assignment"] == ASSIGNMENT]
    return {r["student_id"]: (float(r["score"]), float(r["max_score"])) for r in rows}
