"""``cs-dense check``: run a notebook's visible tests and show which pass, with points.

It scores each graded test cell by nbgrader's rule (an error in the cell's output means
zero), after the same stderr relabelling the autograder applies, so what a student sees
here is what the visible part of grading will give. Hidden tests run only when graded.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbgrader.utils import determine_grade

from cs_dense.course.preprocessors import StderrAsStdout
from cs_dense.course.settings import CELL_TIMEOUT


@dataclass
class CellResult:
    """The outcome of one graded test cell."""

    grade_id: str
    score: float
    max_score: float
    message: str


def _error_line(cell) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            if output.get("ename") == "NotImplementedError" and not output.get("evalue"):
                return "not written yet (the exercise still raises NotImplementedError)"
            return f"{output.get('ename')}: {output.get('evalue')}".strip()
    return ""


def check(path: str | Path, *, timeout: int = CELL_TIMEOUT) -> list[CellResult]:
    """Execute the notebook at ``path`` (in its folder) and score its graded test cells.

    Raises:
        FileNotFoundError: no such notebook.
        ValueError: the file is not a notebook or has no graded test cells.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:
        raise ValueError(f"{path} is not a readable notebook: {error}") from None
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
    if not graded:
        raise ValueError(f"{path} has no graded test cells: is it a course notebook?")
    client = NotebookClient(
        nb,
        timeout=timeout,
        interrupt_on_timeout=True,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    # The kernel process's own log (e.g. a warning about its local TCP transport) is noise
    # here; what the notebook's code prints to stderr still reaches the cell outputs.
    client.execute(stderr=subprocess.DEVNULL)
    relabel = StderrAsStdout()
    results = []
    for index, cell in enumerate(nb.cells):
        if cell in graded:
            relabel.preprocess_cell(cell, {}, index)
            score, max_score = determine_grade(cell)
            results.append(CellResult(cell.metadata["nbgrader"]["grade_id"], float(score), max_score, _error_line(cell)))
    return results


def format_results(path: str | Path, results: list[CellResult]) -> str:
    """The report printed by ``cs-dense check``."""
    width = max(len(r.grade_id) for r in results)
    lines = [f"{Path(path).name}: visible tests (hidden tests also run when your notebook is graded)"]
    for r in results:
        verdict = "pass" if r.score == r.max_score else "FAIL"
        line = f"  {r.grade_id:<{width}}  {r.score:g}/{r.max_score:g}  {verdict}"
        if r.message:
            line += f"  {r.message.splitlines()[0][:200]}"
        lines.append(line)
    total, best = sum(r.score for r in results), sum(r.max_score for r in results)
    lines.append(f"visible total: {total:g} / {best:g}")
    return "\n".join(lines)
