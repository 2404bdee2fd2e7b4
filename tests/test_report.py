"""The class report on a hand-made results folder whose numbers are worked out by hand."""

from __future__ import annotations

import csv
import re

import pytest
from matplotlib.image import imread

from cs_dense.course.autograde import CELL_COLUMNS, CSV_COLUMNS
from cs_dense.course.cli import main
from cs_dense.course.report import summarise, write_report

# assignment A: cells a1 (2 points) and a2 (3 points); assignment B: cell b1 (4 points);
# assignment C: cell c1 (5 points) of 6, the sixth graded by hand
GRADES = [
    ("alice", "A", 5, 5, "graded", "", 12.5),
    ("bob", "A", 2, 5, "graded", "", 30.0),
    ("carol", "A", 0, 5, "crashed", "the Python kernel died", 4.0),
    ("alice", "B", 4, 4, "graded", "", 8.0),
    ("bob", "B", 0, 4, "missing", "no B/B.ipynb submitted", 0.0),
    ("<b>eve</b>", "B", 0, 4, "timeout", "grading took longer than 1800 s", 1800.0),
    ("alice", "C", 5, 6, "graded", "", 2.0),  # C: 5 autograded points and a written answer worth 1
]
CELLS = {("alice", "A"): (2, 3), ("bob", "A"): (2, 0), ("carol", "A"): (0, 0),
         ("alice", "B"): (4,), ("bob", "B"): (0,), ("<b>eve</b>", "B"): (0,), ("alice", "C"): (5,)}
POINTS = {"A": (("a1", 2), ("a2", 3)), "B": (("b1", 4),), "C": (("c1", 5),)}


@pytest.fixture
def out(tmp_path):
    with open(tmp_path / "grades.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(GRADES)
    with open(tmp_path / "cells.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CELL_COLUMNS)
        for (student, assignment), scores in CELLS.items():
            for (grade_id, points), score in zip(POINTS[assignment], scores):
                writer.writerow([student, assignment, grade_id, score, points])
    return tmp_path


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_summary_by_hand(out):
    summary = summarise(_rows(out / "grades.csv"), _rows(out / "cells.csv"))
    a, b = summary["A"], summary["B"]
    # A: three submissions scoring 5, 2 and 0 (the crash counts as 0)
    assert (a["students"], a["submitted"], a["graded"], a["full_marks"]) == (3, 3, 2, 1)
    assert a["mean"] == pytest.approx(7 / 3) and a["median"] == 2
    assert a["cells"]["a1"]["pass_rate"] == pytest.approx(2 / 3) and a["cells"]["a2"]["pass_rate"] == pytest.approx(1 / 3)
    assert a["cells"]["a2"]["mean"] == pytest.approx(1.0)
    # B: bob's missing notebook is not a submission
    assert (b["students"], b["submitted"], b["graded"]) == (3, 2, 1)
    assert b["mean"] == 2 and b["cells"]["b1"]["pass_rate"] == 0.5
    # C: every autograded point is full marks until the written answer is graded
    assert (summary["C"]["autograded_max"], summary["C"]["full_marks"], summary["C"]["max_score"]) == (5, 1, 6)


def test_the_page_lists_what_needs_a_look_and_the_slowest(out):
    page = write_report(out).read_text()
    look = page.split("Needs a look (2)")[1].split("<h2>")[0]
    assert "carol" in look and "crashed" in look and "&lt;b&gt;eve&lt;/b&gt;" in look and "timeout" in look
    assert "bob" not in look  # missing is not a problem of grading
    assert "<b>eve</b>" not in page  # every value from the CSV is escaped
    slowest = page.split("slowest notebooks")[1].split("<h2>")[0]
    assert re.findall(r"<td>([\d.]+)</td>", slowest) == ["1800.0", "30.0", "12.5", "8.0", "4.0", "2.0"]
    assert "67%" in page and "33%" in page and "2.3 / 5" in page


def test_the_plots_are_real_images(out):
    write_report(out)
    for name in ("A_scores.png", "A_cells.png", "B_scores.png", "B_cells.png"):
        image = imread(out / "report" / name)
        assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] == 600, name
        assert image[..., :3].std() > 0.05, name  # not a blank canvas


def test_missing_or_foreign_results_are_refused(tmp_path, out, capsys):
    with pytest.raises(ValueError, match="cs-dense autograde"):
        write_report(tmp_path / "nowhere")
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (out / "cells.csv").write_text("student,score\n")
    with pytest.raises(ValueError, match="expected"):
        write_report(out)


def test_the_command_writes_the_page(out, capsys):
    assert main(["report", str(out)]) == 0
    assert str(out / "report" / "index.html") in capsys.readouterr().out
