"""nbgrader preprocessors the course adds to the autograde and feedback steps.

Hidden tests are kept out of everything a student sees, whatever their code prints:
:class:`MoveHiddenTestsLast` runs each grade cell's hidden part as a cell of its own after
the whole notebook, so no output the feedback shows was produced after hidden-test source
entered the kernel; :class:`Execute` puts back every earlier output as it was before the
first hidden cell ran (a later cell could otherwise rewrite one through a display id); and
:class:`HiddenVerdicts` turns each hidden cell into one fixed line in its grade cell,
"passed" or "failed", and removes it. The verdict's text is the grader's, never the
kernel's: a failure message written by code that could read the hidden tests could carry
them out.

Before the hidden tests, :class:`AddCrossCheck` adds one more cell: the grader's
cross-check (:mod:`cs_dense.grading.crosscheck`), which :class:`Execute` fills and judges
in this process, and :class:`CrossCheckVerdicts` turns into one line per grade cell. A
grade cell scores only if its tests and its cross-check pass.
"""

from __future__ import annotations

import contextlib
import copy
import html
import re
import secrets
import uuid
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from nbformat.v4 import new_code_cell, new_output
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from nbgrader.preprocessors import Execute as NbgraderExecute
from traitlets import Integer, Unicode

import cs_dense.grading
from cs_dense.course.layout import BEGIN_HIDDEN, END_HIDDEN
from cs_dense.course.settings import MAX_OUTPUT_BYTES
from cs_dense.grading import crosscheck

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
    """Remove hidden tests and the grader's traceback frames from feedback.

    Autograding already runs hidden tests apart (:class:`MoveHiddenTestsLast`); removing
    them here too covers notebooks autograded some other way. The error message a check
    raised is kept (it explains what was wrong), and so are the frames of the test cell
    and of the student's own code, so they can find the line that failed.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                traceback = output.get("traceback", [])
                frames = [f for f in traceback if GRADING_PACKAGE not in _ANSI.sub("", f)]
                if len(frames) < len(traceback):
                    output["traceback"] = [*frames[:-1], "(frames of the grader are not shown)", *frames[-1:]]
        return cell, resources


_HIDDEN_OF = "cs_dense_hidden_tests_of"
HIDDEN_FAILED = "HiddenTestsFailed"
_CROSSCHECK = "cs_dense_crosscheck"
CROSSCHECK_FAILED = "CrossCheckFailed"


def _grade_id(cell) -> str | None:
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    return nbgrader.get("grade_id") if nbgrader.get("grade") else None


class MoveHiddenTestsLast(NbGraderPreprocessor):
    """Split each grade cell's hidden tests into a cell of their own at the end of the notebook.

    The grade cell keeps its visible lines where it was; the hidden lines run after every
    other cell, in the order of their grade cells, in the same kernel.
    """

    def preprocess(self, nb, resources):
        hidden_cells = []
        for cell in nb.cells:
            cell.get("metadata", {}).pop(_HIDDEN_OF, None)  # only this preprocessor marks cells
            grade_id = _grade_id(cell)
            if cell.cell_type != "code" or grade_id is None or BEGIN_HIDDEN not in cell.source:
                continue
            visible, hidden, inside = [], [], False
            for line in cell.source.splitlines():
                if line.strip() == BEGIN_HIDDEN:
                    inside = True
                elif line.strip() == END_HIDDEN:
                    inside = False
                else:
                    (hidden if inside else visible).append(line)
            cell.source = "\n".join(visible)
            hidden_cell = new_code_cell("\n".join(hidden))
            hidden_cell.metadata[_HIDDEN_OF] = grade_id
            hidden_cells.append(hidden_cell)
        nb.cells.extend(hidden_cells)
        return nb, resources


def _probes(nb) -> dict:
    """The cross-check's probes of the notebook's grade cells."""
    from cs_dense.grading.probes import probes_for  # 1.5 s of imports that feedback pages do not need

    return probes_for([g for g in map(_grade_id, nb.cells) if g is not None])


class AddCrossCheck(NbGraderPreprocessor):
    """Add the cross-check cell after the notebook's own cells and before the hidden tests.

    Only grade cells the course knows have probes (a cell a student added with a made-up
    grade id has none). :class:`Execute` writes the cell's code when it runs it.
    """

    def preprocess(self, nb, resources):
        for cell in nb.cells:
            cell.get("metadata", {}).pop(_CROSSCHECK, None)  # only this preprocessor marks a cell
        if _probes(nb):
            first_hidden = next((i for i, c in enumerate(nb.cells) if _HIDDEN_OF in c.metadata), len(nb.cells))
            cell = new_code_cell("")
            cell.metadata[_CROSSCHECK] = {}
            nb.cells.insert(first_hidden, cell)
        return nb, resources


class Execute(NbgraderExecute):
    """nbgrader's Execute, with a cap on each cell's output and the visible outputs frozen.

    From the first hidden-test cell on, nothing the kernel sends can change the outputs
    of the cells before it: they are restored as they were when it started.
    """

    max_output_bytes = Integer(MAX_OUTPUT_BYTES, help="bytes of output one cell may produce").tag(config=True)
    transport = Unicode("tcp", help="the kernel's transport: tcp, or ipc (Unix sockets, for the sandbox)").tag(config=True)

    def create_kernel_manager(self):
        manager = super().create_kernel_manager()
        if self.transport == "ipc":  # sockets beside the connection file, in the runtime folder
            stem = Path(jupyter_runtime_dir(), f"kernel-{uuid.uuid4()}")
            manager.transport = "ipc"
            manager.connection_file = f"{stem}.json"
            manager.ip = f"{stem}-ipc"
        return manager

    def preprocess(self, nb, resources=None, km=None):
        self._frozen = None
        self._sizes: dict[int, int] = {}
        nb, resources = super().preprocess(nb, resources, km)
        if self._frozen is not None:
            outputs, metadata = self._frozen
            for cell, saved in zip(nb.cells, outputs):
                if saved is not None:
                    cell.outputs = saved
            nb.metadata = metadata
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        if self._frozen is None and _HIDDEN_OF in cell.metadata:
            self._frozen = (
                [copy.deepcopy(c.get("outputs")) if c.cell_type == "code" else None for c in self.nb.cells[:index]],
                copy.deepcopy(self.nb.metadata),
            )
        if _CROSSCHECK in cell.metadata:
            return self._cross_check(cell, resources, index)
        return super().preprocess_cell(cell, resources, index)

    def _cross_check(self, cell, resources, index):
        """Draw the inputs, let the kernel answer, judge here; the verdicts go in the cell's metadata.

        The answers are read as soon as the cell ends, before any hidden test is sent to
        the kernel, so nothing in them can come from a hidden test.
        """
        seed = secrets.randbits(32)
        planned = crosscheck.plan(_probes(self.nb), seed)
        stem = Path(jupyter_runtime_dir(), f"crosscheck-{uuid.uuid4()}")
        questions, answers = f"{stem}-request.pt", f"{stem}-answers.pt"
        try:
            crosscheck.write_request(planned, questions)
            cell.source = (f"import cs_dense.grading.crosscheck as _cs_dense_crosscheck\n"
                           f"_cs_dense_crosscheck.answer({questions!r}, {answers!r}, globals())")
            cell, resources = super().preprocess_cell(cell, resources, index)
            cell.metadata[_CROSSCHECK] = {"seed": seed, "failures": crosscheck.judge(
                planned, crosscheck.read_answers(answers, len(planned)))}
        finally:
            for path in (questions, answers):
                with contextlib.suppress(OSError):
                    Path(path).unlink()
        cell.outputs = []
        return cell, resources

    def output(self, outs, msg, display_id, cell_index):
        size = len(str(msg.get("content", "")))
        used = self._sizes.get(cell_index, 0)
        self._sizes[cell_index] = used + size
        if used + size > self.max_output_bytes:
            if used <= self.max_output_bytes:
                self._sizes[cell_index] = self.max_output_bytes + 1
                note = (f"[output cut: this cell printed more than {self.max_output_bytes >> 20} MiB; "
                        "the rest is not shown]\n")
                outs.append(new_output("stream", name="stdout", text=note))
            return None
        return super().output(outs, msg, display_id, cell_index)


class HiddenVerdicts(NbGraderPreprocessor):
    """Replace each hidden-test cell by one line in its grade cell, and remove it.

    A failed hidden cell adds an error output to the grade cell, so the cell scores zero.
    """

    def preprocess(self, nb, resources):
        by_id = {_grade_id(c): c for c in nb.cells if _grade_id(c) is not None}
        kept = []
        for cell in nb.cells:
            grade_id = cell.get("metadata", {}).get(_HIDDEN_OF)
            if grade_id is None:
                kept.append(cell)
                continue
            target = by_id[grade_id]
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                why = ("the hidden tests of this exercise failed (their messages are not shown: code that runs "
                       "after the hidden tests could copy them into a message). Check the cases the visible "
                       "tests do not cover: other shapes, devices, dtypes, empty inputs.")
                target.outputs.append(new_output("error", ename=HIDDEN_FAILED, evalue=why,
                                                 traceback=[f"{HIDDEN_FAILED}: {why}"]))
            else:
                target.outputs.append(new_output("stream", name="stdout", text="hidden tests: passed\n"))
        nb.cells = kept
        return nb, resources


class CrossCheckVerdicts(NbGraderPreprocessor):
    """Add the cross-check's verdict to each grade cell it probed, and remove its cell.

    A failure adds an error output to the grade cell, so the cell scores zero; the message
    is the grader's, from answers read before the hidden tests ran.
    """

    def preprocess(self, nb, resources):
        by_id = {_grade_id(c): c for c in nb.cells if _grade_id(c) is not None}
        for cell in [c for c in nb.cells if _CROSSCHECK in c.get("metadata", {})]:
            if "failures" not in cell.metadata[_CROSSCHECK]:  # fail closed: no verdict is not a pass
                raise RuntimeError("the grader's cross-check cell was never run, so no grade cell can be scored")
            for grade_id, failures in cell.metadata[_CROSSCHECK]["failures"].items():
                target = by_id[grade_id]
                if failures:
                    more = f" (and {len(failures) - 1} more failed)" if len(failures) > 1 else ""
                    why = (f"the grader called your code again after the notebook ran, on fresh inputs, and judged the "
                           f"answers outside your kernel: {failures[0]}{more}")
                    target.outputs.append(new_output("error", ename=CROSSCHECK_FAILED, evalue=why,
                                                     traceback=[f"{CROSSCHECK_FAILED}: {why}"]))
                else:
                    target.outputs.append(new_output("stream", name="stdout", text="grader's cross-check: passed\n"))
        nb.cells = [c for c in nb.cells if _CROSSCHECK not in c.get("metadata", {})]
        return nb, resources


def _from_the_source(cell) -> bool:
    """Whether nbgrader restored this cell from the source notebook (a locked cell it knows).

    nbgrader forces the locked flag of a known cell to the source's, overwrites its text,
    and deletes the grade id of a cell the gradebook does not have.
    """
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    return bool(nbgrader.get("locked") and nbgrader.get("grade_id"))


#: Output types feedback shows; others (HTML, JavaScript, SVG, widgets) become their text form.
_SAFE_MIME = ("text/plain", "image/png", "image/jpeg")


class SafeFeedback(NbGraderPreprocessor):
    """Feedback shows only text and raster images from a submission, and no markup of its own.

    Rich outputs keep their ``text/plain`` form; markdown cells not restored from the
    source are shown as escaped text, so neither can put HTML or script in the page. (The page also
    forbids every script through its Content-Security-Policy; see ``autograde``.)
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if "data" in output:
                    output["data"] = {k: v for k, v in output["data"].items() if k in _SAFE_MIME}
                    output["metadata"] = {}
        elif cell.cell_type in ("markdown", "raw") and not _from_the_source(cell):
            cell.cell_type = "markdown"
            cell.source = "<pre>" + html.escape(cell.source) + "</pre>"
            cell.pop("attachments", None)
        return cell, resources
