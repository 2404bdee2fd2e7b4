"""End to end: release, sample submissions, hostile submissions and feedback on the toy course.

One autograde run (two workers) grades a dozen submissions, each breaking something in
its own way; every row is checked against the score a hand reading of the toy gives.
"""

from __future__ import annotations

import csv
import json

import nbformat
import pytest

from cs_dense.course.autograde import autograde, kernel_threads
from cs_dense.course.check import check
from cs_dense.course.release import release
from cs_dense.course.samples import write_samples
from toy_course import ASSIGNMENT, HIDDEN_MARKER, make_toy_course

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _set_source(nb, grade_id: str, source: str) -> None:
    cell = next(c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] == grade_id)
    cell.source = source


def _variants(complete: nbformat.NotebookNode) -> dict[str, tuple[object, float, str]]:
    """student id -> (notebook or raw text or None, expected score, expected status)."""

    def edit(**sources):
        nb = nbformat.from_dict(json.loads(json.dumps(complete)))
        for grade_id, source in sources.items():
            _set_source(nb, grade_id, source)
        return nb

    wrong_add = "def add(a, b):\n    return a - b"
    deleted = edit(scale="def scale(x, k):\n    return x")
    deleted.cells = [c for c in deleted.cells if c.metadata["nbgrader"]["grade_id"] != "test_scale"]
    greedy = edit()
    next(c for c in greedy.cells if c.metadata["nbgrader"]["grade_id"] == "test_add").metadata["nbgrader"]["points"] = 100
    tamper_course = (
        "import os, pathlib\n"
        "target = pathlib.Path(os.environ['CS_DENSE_DATA']).parent / 'solutions' / '99_toy' / '99_toy.ipynb'\n"
        "target.write_text('{}')\n"
        "def add(a, b):\n    return a + b"
    )
    return {
        "complete": (edit(), 5, "graded"),
        "forbidden": (edit(scale="import torch\ndef scale(x, k):\n    return torch.mul(x, k)"), 2, "graded"),
        "loops_in_function": (edit(scale="def scale(x, k):\n    while True:\n        pass"), 2, "graded"),
        "loops_at_top_level": (edit(scale="def scale(x, k):\n    return x * k\nwhile True:\n    pass"), 5, "graded"),
        "kills_kernel": (edit(scale="import os\ndef scale(x, k):\n    os._exit(1)"), 0, "crashed"),
        "tampers_tests": (edit(add=wrong_add, test_add="print('ok: add')", test_scale="pass"), 3, "graded"),
        "deletes_test": (deleted, 2, "graded"),
        "claims_equal": (
            edit(add="class Anything:\n    def __eq__(self, other):\n        return True\n"
                     "def add(a, b):\n    return Anything()"),
            3,
            "graded",
        ),
        "warns": (
            edit(add="import sys, warnings\ndef add(a, b):\n    warnings.warn('deprecated')\n"
                     "    print('progress', file=sys.stderr)\n    return a + b"),
            5,
            "graded",
        ),
        "raises_points": (greedy, 5, "graded"),
        "tampers_course": (edit(add=tamper_course), 0, "tampered"),
        "unreadable": ("this is not a notebook {", 0, "invalid"),
        "absent": (None, 0, "missing"),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    course = make_toy_course(root / "course")
    release(course)
    write_samples(course)
    complete = nbformat.read(course.data / "samples" / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    submissions = root / "submissions"
    variants = _variants(complete)
    for student, (content, _, _) in variants.items():
        folder = submissions / student / ASSIGNMENT
        folder.mkdir(parents=True)
        path = folder / f"{ASSIGNMENT}.ipynb"
        if isinstance(content, str):
            path.write_text(content)
        elif content is not None:
            nbformat.write(content, path)
    solution_before = (course.solutions / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    out = root / "out"
    rows = autograde(course, submissions, out, workers=2, cell_timeout=20, progress=lambda line: None)
    return course, variants, rows, out, solution_before


def test_every_submission_gets_the_expected_grade(graded):
    _, variants, rows, _, _ = graded
    got = {r.student_id: (r.score, r.status) for r in rows}
    expected = {student: (float(score), status) for student, (_, score, status) in variants.items()}
    assert got == expected
    assert all(r.max_score == 5 for r in rows)


def test_grades_csv_has_one_row_per_submission(graded):
    _, variants, _, out, _ = graded
    with open(out / "grades.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["student_id", "assignment_id", "score", "max_score", "status", "detail"]
    assert sorted(r["student_id"] for r in table) == sorted(variants)
    crashed = next(r for r in table if r["student_id"] == "kills_kernel")
    assert "kernel died" in crashed["detail"]


def test_tampered_course_files_are_restored(graded):
    course, _, _, _, solution_before = graded
    assert (course.solutions / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes() == solution_before


def test_feedback_exists_for_everyone_and_hides_hidden_tests(graded):
    _, variants, _, out, _ = graded
    for student in variants:
        page = out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
        assert page.is_file(), student
        text = page.read_text()
        assert HIDDEN_MARKER not in text, student
        assert "HIDDEN TESTS" not in text, student
    forbidden_page = (out / "feedback" / "forbidden" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "torch.mul, which is disabled" in forbidden_page
    assert "frames of the test cell, which holds hidden tests" in forbidden_page
    assert "guards.py" not in forbidden_page


def test_release_has_no_solutions_or_hidden_tests(graded):
    course = graded[0]
    text = (course.notebooks / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    assert HIDDEN_MARKER not in text
    assert "return a + b" not in text
    assert "raise NotImplementedError()" in text


def test_check_scores_visible_tests(graded):
    course = graded[0]
    complete = check(course.data / "samples" / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    blank = check(course.notebooks / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    assert [(r.grade_id, r.score) for r in complete] == [("test_add", 2), ("test_scale", 3)]
    assert [(r.grade_id, r.score) for r in blank] == [("test_add", 0), ("test_scale", 0)]
    assert "NotImplementedError" in blank[0].message and "not written yet" in blank[0].message


def test_autograde_rejects_bad_arguments(tmp_path):
    course = make_toy_course(tmp_path / "course")
    with pytest.raises(ValueError, match="does not exist"):
        autograde(course, tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "subs" / "alice" / "not_an_assignment").mkdir(parents=True)
    with pytest.raises(ValueError, match="known assignment"):
        autograde(course, tmp_path / "subs", tmp_path / "out")
    with pytest.raises(ValueError, match="workers"):
        autograde(course, tmp_path / "subs", tmp_path / "out", workers=0)


def test_kernels_share_the_cores_among_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [kernel_threads(w) for w in (1, 2, 3, 8, 16)] == ["8", "4", "2", "1", "1"]
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert kernel_threads(1) == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert kernel_threads(2) == "3"
