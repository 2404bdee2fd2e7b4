"""The course's nbgrader preprocessors on hand-made notebooks (no kernel): hidden tests
moved out and reduced to a verdict line, the cross-check's cell placed and its verdicts
given, feedback reduced to text and images."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from cs_dense.course.preprocessors import (
    CROSSCHECK_FAILED,
    HIDDEN_FAILED,
    AddCrossCheck,
    CrossCheckVerdicts,
    HiddenVerdicts,
    MoveHiddenTestsLast,
    SafeFeedback,
)


def _grade_cell(source: str, grade_id: str):
    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True, "points": 1,
                                 "schema_version": 3, "solution": False, "task": False}
    return cell


def _notebook():
    nb = new_notebook()
    nb.cells = [
        new_code_cell("x = 1"),
        _grade_cell("check(a)\n### BEGIN HIDDEN TESTS\nsecret_a()\n### END HIDDEN TESTS", "test_a"),
        _grade_cell("check(b)", "test_b"),
        _grade_cell("check(c)\n### BEGIN HIDDEN TESTS\nsecret_c()\n### END HIDDEN TESTS", "test_c"),
    ]
    return nb


def test_hidden_parts_move_to_the_end_in_order():
    nb, _ = MoveHiddenTestsLast().preprocess(_notebook(), {})
    assert [c.source for c in nb.cells] == ["x = 1", "check(a)", "check(b)", "check(c)", "secret_a()", "secret_c()"]
    assert [c.metadata.get("cs_dense_hidden_tests_of") for c in nb.cells[4:]] == ["test_a", "test_c"]


def test_a_student_cannot_mark_a_cell_as_hidden():
    nb = _notebook()
    nb.cells[0].metadata["cs_dense_hidden_tests_of"] = "test_b"
    nb, _ = MoveHiddenTestsLast().preprocess(nb, {})
    assert "cs_dense_hidden_tests_of" not in nb.cells[0].metadata


def test_verdicts_replace_hidden_cells_and_carry_no_kernel_text():
    nb, _ = MoveHiddenTestsLast().preprocess(_notebook(), {})
    nb.cells[4].outputs = [new_output("stream", name="stdout", text="secret_a printed this")]
    nb.cells[5].outputs = [new_output("error", ename="ValueError", evalue="secret_c() leaked", traceback=["secret_c()"])]
    nb, _ = HiddenVerdicts().preprocess(nb, {})
    assert len(nb.cells) == 4
    text = nbformat.writes(nb)
    assert "secret" not in text
    assert nb.cells[1].outputs[-1].text == "hidden tests: passed\n"
    assert nb.cells[3].outputs[-1].ename == HIDDEN_FAILED
    assert nb.cells[2].outputs == []


def _course_notebook():
    """Two grade cells of notebook 00 (which have probes) and one made-up cell (which has none)."""
    nb = new_notebook()
    nb.cells = [
        new_code_cell("x = 1"),
        _grade_cell("check(a)\n### BEGIN HIDDEN TESTS\nsecret_a()\n### END HIDDEN TESTS", "test_box_convert"),
        _grade_cell("check(b)", "test_made_up"),
        _grade_cell("check(c)", "test_masks_to_boxes"),
    ]
    return nb


def test_the_cross_check_runs_after_the_notebook_and_before_hidden_tests():
    nb, _ = MoveHiddenTestsLast().preprocess(_course_notebook(), {})
    nb, _ = AddCrossCheck().preprocess(nb, {})
    assert [("cs_dense_crosscheck" in c.metadata, c.metadata.get("cs_dense_hidden_tests_of")) for c in nb.cells[4:]] == [
        (True, None),
        (False, "test_box_convert"),
    ]


def test_no_cross_check_without_probes_and_none_from_the_student():
    nb = _notebook()
    nb.cells[0].metadata["cs_dense_crosscheck"] = {"failures": {"test_a": []}}  # a student's forged verdict
    nb, _ = AddCrossCheck().preprocess(nb, {})
    assert len(nb.cells) == 4
    assert not any("cs_dense_crosscheck" in c.metadata for c in nb.cells)


def test_cross_check_verdicts_zero_failed_cells():
    nb, _ = AddCrossCheck().preprocess(_course_notebook(), {})
    nb.cells[-1].metadata["cs_dense_crosscheck"] = {"seed": 1, "failures": {
        "test_box_convert": ["box_convert [a case] values differ", "another"], "test_masks_to_boxes": []}}
    nb, _ = CrossCheckVerdicts().preprocess(nb, {})
    assert len(nb.cells) == 4
    failed = nb.cells[1].outputs[-1]
    assert failed.ename == CROSSCHECK_FAILED
    assert "box_convert [a case] values differ (and 1 more failed)" in failed.evalue
    assert nb.cells[3].outputs[-1].text == "grader's cross-check: passed\n"
    assert nb.cells[2].outputs == []


def test_a_cross_check_that_never_ran_scores_nothing():
    nb, _ = AddCrossCheck().preprocess(_course_notebook(), {})
    with pytest.raises(RuntimeError, match="never run"):
        CrossCheckVerdicts().preprocess(nb, {})


def test_feedback_keeps_text_and_images_only():
    nb = new_notebook()
    rich = new_output("display_data", data={"text/html": "<script>x</script>", "text/plain": "<HTML object>",
                                            "image/png": "iVBOR", "image/svg+xml": "<svg/>", "application/javascript": "x"})
    code = new_code_cell("show()")
    code.outputs = [rich]
    student = new_markdown_cell("<script>alert(1)</script> **mine**")
    instructor = new_markdown_cell("# Title <b>bold</b>")
    instructor.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False, "grade_id": "t", "schema_version": 3}
    pretender = new_markdown_cell("<b>Score: 100</b>")  # claims to be locked; nbgrader removed its unknown grade id
    pretender.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False, "schema_version": 3}
    nb.cells = [code, student, instructor, pretender]
    preprocessor = SafeFeedback()
    for i, cell in enumerate(nb.cells):
        preprocessor.preprocess_cell(cell, {}, i)
    assert set(code.outputs[0].data) == {"text/plain", "image/png"}
    assert student.source == "<pre>&lt;script&gt;alert(1)&lt;/script&gt; **mine**</pre>"
    assert instructor.source == "# Title <b>bold</b>"
    assert pretender.source == "<pre>&lt;b&gt;Score: 100&lt;/b&gt;</pre>"
