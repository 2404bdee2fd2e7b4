"""The nbgrader settings of the course, in one place.

``nbgrader_config.py`` at the repository root calls :func:`configure`, and so does every
temporary course folder the autograder builds, so ``nbgrader`` used directly and
``cs-dense`` grade the same way.
"""

from __future__ import annotations

#: Seconds one cell may run before nbgrader interrupts it (the cell then scores 0 and the
#: rest of the notebook still runs). Training cells use small budgets under autograding.
CELL_TIMEOUT = 120
#: Bytes of output one cell may produce under autograding; the rest is cut with a note.
MAX_OUTPUT_BYTES = 4 << 20
#: What a solution region becomes in the student's notebook.
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
#: Traceback lines kept in autograded notebooks (a long traceback buries the message).
MAX_TRACEBACK = 40


def configure(c) -> None:
    """Apply the course's nbgrader settings to a traitlets config object ``c``."""
    c.CourseDirectory.source_directory = "solutions"
    c.CourseDirectory.release_directory = "notebooks"
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".DS_Store"]
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    c.Execute.timeout = CELL_TIMEOUT
    c.Execute.interrupt_on_timeout = True
    c.LimitOutput.max_traceback = MAX_TRACEBACK
    # A student who deletes a graded test cell gets it back, run against their code.
    c.OverwriteCells.add_missing_cells = True
    # Library warnings print to stderr, and nbgrader zeroes a grade cell with any stderr
    # output; relabel stderr before grades are saved so a correct answer keeps its points.
    # Hidden tests run after the whole notebook, and only a pass/fail line of theirs is kept
    # (see cs_dense.course.preprocessors); each cell's output is capped. Before them the
    # grader's cross-check calls the student's functions again and judges the answers
    # outside the kernel (cs_dense.grading.crosscheck).
    c.Autograde.autograde_preprocessors = [
        "cs_dense.course.preprocessors.MoveHiddenTestsLast",
        "cs_dense.course.preprocessors.AddCrossCheck",
        "cs_dense.course.preprocessors.Execute",
        "cs_dense.course.preprocessors.HiddenVerdicts",
        "cs_dense.course.preprocessors.CrossCheckVerdicts",
        "cs_dense.course.preprocessors.StderrAsStdout",
        "nbconvert.preprocessors.ClearMetadataPreprocessor",
        "nbgrader.preprocessors.LimitOutput",
        "nbgrader.preprocessors.SaveAutoGrades",
        "nbgrader.preprocessors.AssignLatePenalties",
        "nbgrader.preprocessors.CheckCellMetadata",
    ]
    # nbgrader's feedback shows the whole autograded notebook; remove the hidden tests
    # and the traceback context that would quote them.
    c.GenerateFeedback.preprocessors = [
        "nbgrader.preprocessors.GetGrades",
        "cs_dense.course.preprocessors.HideHiddenTests",
        "cs_dense.course.preprocessors.SafeFeedback",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]
