"""nbgrader preprocessors the course adds to the autograde and feedback steps."""

from __future__ import annotations

import re
from pathlib import Path

from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor

import cs_dense.grading

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Where the grading library lives; its frames in a traceback are noise to a student.
GRADING_PACKAGE = str(Path(cs_dense.grading.__file__).parent)


class StderrAsStdout(NbGraderPreprocessor):
    """Relabel stderr stream output as stdout, prefixing it with ``[stderr]``.

    nbgrader gives a grade cell zero points if it printed anything to stderr, so a library
    warning (a deprecation notice, a progress bar) would zero a correct answer. Errors are
    separate ``error`` outputs and still fail the cell.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    output["name"] = "stdout"
                    output["text"] = "".join(f"[stderr] {line}" for line in output["text"].splitlines(True))
        return cell, resources


class HideHiddenTests(ClearHiddenTests):
    """Remove hidden tests from feedback, including the traceback lines that quote them.

    The error message a check raised is kept (it explains what was wrong). Traceback
    frames of the test cell itself (they may quote hidden lines) and of the grading
    library are dropped; frames inside the student's own code stay, so they can find the
    line that failed.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        had_hidden = cell.cell_type == "code" and self.begin_test_delimeter in cell.source
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if not had_hidden:
            return cell, resources
        hidden = (f"Cell In[{cell.get('execution_count')}]", GRADING_PACKAGE)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                frames = [f for f in output.get("traceback", []) if not any(h in _ANSI.sub("", f) for h in hidden)]
                note = "(frames of the test cell, which holds hidden tests, and of the grader are not shown)"
                output["traceback"] = [*frames[:-1], note, *frames[-1:]]
        return cell, resources
