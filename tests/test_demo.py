"""`make demo` on the real course: complete = every autograded point, partial strictly between, blank = 0."""

from __future__ import annotations

import html
import re

import nbformat
import pytest

from cs_dense.course.autograde import autograde
from cs_dense.course.layout import BEGIN_HIDDEN, END_HIDDEN, find_course

# grading 30 sample notebooks one after another takes about 20 minutes alone, longer beside another pytest worker
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

COURSE = find_course(__file__)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rows = autograde(COURSE, COURSE.data / "samples", out, progress=lambda line: None)
    return rows, out


def test_samples_grade_as_designed(demo):
    rows, _ = demo
    by_student = {}
    for row in rows:
        assert row.status == "graded", row
        by_student.setdefault(row.student_id, []).append(row)
    assert set(by_student) == {"complete", "partial", "blank"}
    for row in by_student["complete"]:  # every point but those of answers graded by hand
        assert row.score == row.max_score - _by_hand(row.assignment_id) > 0, row
    for row in by_student["blank"]:
        assert row.score == 0, row
    for row in by_student["partial"]:
        assert 0 < row.score < row.max_score, row


def _by_hand(assignment: str) -> float:
    """Points of the assignment's answers graded by hand (grade cells that are solution cells)."""
    meta = [cell.metadata.get("nbgrader", {}) for path in (COURSE.solutions / assignment).glob("*.ipynb")
            for cell in nbformat.read(path, as_version=4).cells]
    return sum(m["points"] for m in meta if m.get("grade") and m.get("solution"))


def test_one_written_answer_is_graded_by_hand():
    assert {a: _by_hand(a) for a in COURSE.assignments() if _by_hand(a)} == {"03_iou_nms_map": 2}


def _hidden_lines(assignment: str) -> set[str]:
    """Lines that occur only inside hidden-test regions of the assignment's solution notebooks."""
    hidden, visible = set(), set()
    for path in (COURSE.solutions / assignment).glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            inside = False
            for line in cell.source.splitlines():
                if BEGIN_HIDDEN in line or END_HIDDEN in line:
                    inside = BEGIN_HIDDEN in line
                    continue
                (hidden if inside else visible).add(line.strip())
    # a hidden line that is part of a visible one (a call broken over lines) is no secret
    return {line for line in hidden - visible if len(line) > 15 and not any(line in seen for seen in visible)}


def test_feedback_pages_hide_the_hidden_tests(demo):
    _, out = demo
    pages = list((out / "feedback").rglob("*.html"))
    assert len(pages) == 3 * len(COURSE.assignments())
    for page in pages:
        assignment = page.parent.name
        secret = _hidden_lines(assignment)
        assert secret, f"{assignment} has no hidden tests"
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        leaked = [line for line in secret if line in text]
        assert not leaked, f"{page} shows hidden test lines: {leaked[:3]}"
