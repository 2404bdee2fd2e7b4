"""nbgrader preprocessors the course adds to the autograde and feedback steps."""

from __future__ import annotations

import re

from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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

    The error message a check raised is kept (it explains what was wrong); the traceback
    frame of the test cell itself is dropped, while frames inside the student's own code
    stay so they can find the line that failed.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        had_hidden = cell.cell_type == "code" and self.begin_test_delimeter in cell.source
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if not had_hidden:
            return cell, resources
        own_frame = f"Cell In[{cell.get('execution_count')}]"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                frames = [f for f in output.get("traceback", []) if own_frame not in _ANSI.sub("", f)]
                output["traceback"] = [*frames[:-1], "(the test code is hidden)", *frames[-1:]]
        return cell, resources
