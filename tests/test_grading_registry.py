"""The exercise registry: every entry resolves, and the notebooks use it instead of dotted paths."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from cs_dense.course.layout import find_course
from cs_dense.grading import forbid
from cs_dense.grading.registry import EXERCISES, exercise, forbidden, references, resolve

COURSE = find_course(Path(__file__).parent)
EXERCISE_ARGUMENT = re.compile(r"""exercise=["'](\w+)["']""")
STAND_IN_NAMES = re.compile(r"stand_in=\[([^\]]*)\]")


def _test_cells(assignment: str) -> list[str]:
    """Sources of the graded test cells of one solution notebook."""
    sources = []
    for path in sorted((COURSE.solutions / assignment).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            grading = cell.metadata.get("nbgrader", {})
            if grading.get("grade") and not grading.get("solution"):
                sources.append(cell.source)
    return sources


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_every_entry_resolves_to_something_forbid_can_watch(name):
    entry = exercise(name)
    assert entry.notebook in COURSE.assignments(), f"{name}: no assignment {entry.notebook}"
    forbid(*entry.forbidden, exercise=name)  # raises ValueError for a name that does not resolve
    if entry.reference is not None:
        assert callable(resolve(entry.reference))
        assert entry.reference in entry.forbidden, f"{name}: its own reference must be forbidden while it is checked"


def test_unknown_names_are_explained():
    with pytest.raises(ValueError, match=r"no graded exercise named 'nmss'; known: .*\bnms\b"):
        forbidden("nmss")
    with pytest.raises(ValueError, match="cannot resolve 'cs_dense.ops.no_such_op'"):
        resolve("cs_dense.ops.no_such_op")
    with pytest.raises(ValueError, match="no importable module"):
        resolve("no_such_package.thing")
    with pytest.raises(ValueError, match="no drop-in reference"):
        references(["encode_boxes"])


@pytest.mark.parametrize("assignment", COURSE.assignments())
def test_notebooks_name_exercises_instead_of_dotted_paths(assignment):
    cells = _test_cells(assignment)
    text = "\n".join(cells)
    assert "FORBIDDEN" not in text, f"{assignment}: test cells must use exercise=..., not FORBIDDEN tuples"
    assert not re.search(r"forbidden=\(", text), f"{assignment}: test cells must use exercise=..., not forbidden=(...)"
    assert not re.search(r"cs_dense(\.\w+)*\._\w+", text), f"{assignment}: a test cell names a private cs_dense path"
    used = set(EXERCISE_ARGUMENT.findall(text))
    for group in STAND_IN_NAMES.findall(text):
        for name in re.findall(r"[\"'](\w+)[\"']", group):
            assert exercise(name).reference is not None, f"{assignment}: stand-in {name!r} has no drop-in reference"
    for name in used:
        assert exercise(name).notebook == assignment, f"{assignment} checks {name!r}, registered for {exercise(name).notebook}"
    own = {name for name, entry in EXERCISES.items() if entry.notebook == assignment}
    assert own <= used, f"{assignment}: registered exercises never checked: {sorted(own - used)}"
