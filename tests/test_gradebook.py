"""The course's own nbgrader gradebook after ``cs-dense autograde``: export, hand grades, feedback.

The toy course gets a written answer worth 2 points, graded by hand; nbgrader's own
``export`` and ``generate_feedback``, run in the course folder, are the oracle.
"""

from __future__ import annotations

import pytest
from nbgrader.api import Gradebook

from cs_dense.course.autograde import autograde
from cs_dense.course.layout import run_nbgrader
from cs_dense.course.release import release
from cs_dense.course.samples import write_samples
from toy_course import ASSIGNMENT, HIDDEN_MARKER, WRITTEN, make_toy_course, nbgrader_export, require_sandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_grades_land_in_the_course_gradebook_and_hand_grades_survive(tmp_path):
    require_sandbox()
    course = make_toy_course(tmp_path / "course", written=True)
    release(course)
    write_samples(course)

    def grade(**kwargs):
        return autograde(course, course.data / "samples", tmp_path / "out", workers=2, gradebook=True,
                         progress=lambda line: None, **kwargs)

    rows = grade()
    # 2 + 3 points of tests and 2 of the written answer, not graded yet (the toy's `partial` is complete)
    assert {r.student_id: (r.score, r.max_score) for r in rows} == {"blank": (0, 7), "complete": (5, 7), "partial": (5, 7)}
    assert nbgrader_export(course) == {"blank": (0, 7), "complete": (5, 7), "partial": (5, 7)}
    cells = (tmp_path / "out" / "cells.csv").read_text()
    assert WRITTEN not in cells and "test_scale" in cells  # hand-graded answers score in the gradebook
    for kind in ("submitted", "autograded"):
        assert (course.root / kind / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()

    # what formgrader does when the instructor scores the written answer
    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}") as gradebook:
        written = gradebook.find_grade(WRITTEN, ASSIGNMENT, ASSIGNMENT, "complete")
        assert written.needs_manual_grade and written.auto_score is None
        written.manual_score = 1.5
        gradebook.db.commit()
    assert nbgrader_export(course)["complete"] == (6.5, 7)

    # grading again (say, after a fix to the tests) keeps the hand grade
    rows = grade(force=True)
    assert {r.student_id: r.score for r in rows} == {"blank": 0, "complete": 5, "partial": 5}
    assert nbgrader_export(course) == {"blank": (0, 7), "complete": (6.5, 7), "partial": (5, 7)}

    # nbgrader's feedback, made in the course folder, shows the hand grade and no hidden test
    result = run_nbgrader(["generate_feedback", ASSIGNMENT, "--student", "complete", "--force"], cwd=course.root)
    assert result.returncode == 0, result.stdout + result.stderr
    page = (course.root / "feedback" / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "6.5 / 7" in page and "1.5 / 2" in page
    assert HIDDEN_MARKER not in page
