"""Generate student notebooks (``notebooks/``) from the instructor's (``solutions/``) with nbgrader."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from cs_dense.course.layout import Course, run_nbgrader, write_course_config


class NbgraderError(RuntimeError):
    """An nbgrader step failed; the message carries its log."""


def generate(course: Course, assignment: str, work: Path, *, with_db: bool, db: Path | None = None) -> Path:
    """Run ``nbgrader generate_assignment`` on a copy of one assignment in ``work``.

    Args:
        course: the course repository.
        assignment: the assignment id (a folder of ``solutions/``).
        work: an empty folder to use as a temporary nbgrader course.
        with_db: also record the assignment in ``work/gradebook.db`` (needed to autograde).
        db: record it in this gradebook instead (the course's own, for instance).

    Returns:
        The folder holding the generated student version of the assignment.

    Raises:
        ValueError: unknown assignment.
        NbgraderError: nbgrader failed (e.g. malformed cell metadata); its log is in the message.
    """
    course.check_assignment(assignment)
    shutil.copytree(course.solutions / assignment, work / "source" / assignment)
    write_course_config(work, db=db)
    args = ["generate_assignment", assignment, "--force"] + ([] if with_db else ["--no-db"])
    result = run_nbgrader(args, cwd=work)
    if result.returncode != 0:
        raise NbgraderError(f"nbgrader generate_assignment {assignment} failed:\n{result.stdout}{result.stderr}")
    return work / "release" / assignment


def release(course: Course, assignments: list[str] | None = None) -> list[Path]:
    """Regenerate ``notebooks/<assignment>/`` for each assignment (all by default).

    The old release folder is replaced as a whole, so files removed from ``solutions/``
    disappear from ``notebooks/`` too.

    Returns:
        The release folders written.
    """
    written = []
    for assignment in assignments or course.assignments():
        with tempfile.TemporaryDirectory(prefix="cs_dense_release_") as work:
            generated = generate(course, assignment, Path(work), with_db=False)
            target = course.notebooks / assignment
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(generated, target)
        written.append(target)
    return written
