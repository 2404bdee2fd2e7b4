"""The course's own nbgrader gradebook, where autograded submissions land for nbgrader's tools.

``cs-dense autograde`` grades each submission in a throw-away nbgrader course (see
:mod:`cs_dense.course.autograde`). Afterwards the coordinator, and only it, records each
graded submission in the course repository as ``nbgrader autograde`` run there would have:

* ``gradebook.db`` (the database ``nbgrader_config.py`` names): the assignment, the
  student, the submission and its automatic scores, saved by nbgrader's own
  ``SaveAutoGrades`` from the autograded notebook;
* ``submitted/<student>/<assignment>/`` and ``autograded/<student>/<assignment>/``: the
  notebook as handed in, and as graded (with outputs).

So formgrader (grading written answers, overriding a score), ``nbgrader export`` and
``nbgrader generate_feedback`` work in the repository afterwards. A manual score survives
grading the submission again: ``SaveAutoGrades`` writes only the automatic one.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import SaveAutoGrades
from sqlalchemy.exc import SAWarning

from cs_dense.course.autograde import Grade
from cs_dense.course.layout import Course
from cs_dense.course.release import generate


class CourseGradebook:
    """Writes graded submissions into the course's gradebook and folders."""

    def __init__(self, course: Course, assignments: list[str]) -> None:
        """Add (or update) the assignments in the gradebook from ``solutions/``.

        Raises:
            NbgraderError: nbgrader refused, e.g. a grade cell that has submissions was removed
                from the solutions.
        """
        self.course = course
        self.path = course.root / "gradebook.db"
        self.url = f"sqlite:///{self.path}"
        for assignment in assignments:
            with tempfile.TemporaryDirectory(prefix="cs_dense_gradebook_") as work:
                generate(course, assignment, Path(work), with_db=True, db=self.path)

    def record(self, grade: Grade, submitted: list[Path], autograded: dict[str, str]) -> None:
        """Record one submission: its notebooks and automatic scores, or remove it if it was not graded.

        A submission that crashed, timed out, broke a limit or was refused has no autograded
        notebook; an earlier version of it (and any manual score of it) is removed, so the
        gradebook never shows a grade the CSV does not.
        """
        student, assignment = grade.student_id, grade.assignment_id
        with Gradebook(self.url) as gradebook:
            if grade.status != "graded" or not autograded:
                try:
                    gradebook.remove_submission(assignment, student)
                except MissingEntry:
                    pass
                return
            gradebook.update_or_create_student(student)
            with warnings.catch_warnings():  # nbgrader's own session warnings, as in `nbgrader autograde`
                warnings.simplefilter("ignore", SAWarning)
                gradebook.update_or_create_submission(assignment, student)
        for kind, notebooks in (("submitted", {p.stem: p.read_text() for p in submitted}), ("autograded", autograded)):
            folder = self.course.root / kind / student / assignment
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in notebooks.items():
                (folder / f"{name}.ipynb").write_text(text)
        for name, text in autograded.items():
            resources = {"nbgrader": {"db_url": self.url, "assignment": assignment, "notebook": name, "student": student}}
            SaveAutoGrades().preprocess(nbformat.reads(text, as_version=4), resources)
