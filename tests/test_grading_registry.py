"""The exercise registry: every entry resolves, and the notebooks use it instead of dotted paths."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
from pathlib import Path

import nbformat
import pytest

from cs_dense.course.layout import find_course
from cs_dense.grading import forbid
from cs_dense.grading.registry import EXERCISES, exercise, forbidden, references, resolve, students_own

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
        reference = resolve(entry.reference)
        assert callable(reference)
        # a class's constructor is what would solve the exercise
        watched = entry.reference + ".__init__" if inspect.isclass(reference) else entry.reference
        assert watched in entry.forbidden, f"{name}: its own reference must be forbidden while it is checked"


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



def _solution_defs(assignment: str) -> dict[str, ast.FunctionDef | ast.ClassDef]:
    """The top-level functions and classes the solution notebook of ``assignment`` defines, by name."""
    found = {}
    for path in sorted((COURSE.solutions / assignment).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
                found.update({n.name: n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef | ast.ClassDef)})
    return found


@pytest.mark.parametrize("name", sorted(n for n, e in EXERCISES.items() if e.reference is not None))
def test_a_drop_in_reference_takes_the_students_parameters(name):
    """Stand-ins and the bundle's stubs call the reference as the student's function is called, and back.

    The student's parameters come first in the reference, in order and of the same kind (one
    the reference takes by keyword only may be positional for the student too); whatever
    else the reference takes has a default.
    """
    entry = exercise(name)
    student = _solution_defs(entry.notebook).get(name)
    assert student is not None, f"notebook {entry.notebook} defines no function or class {name}"
    reference = resolve(entry.reference)
    assert isinstance(student, ast.ClassDef) == inspect.isclass(reference), f"{name}: a class for a function, or back"
    if isinstance(student, ast.ClassDef):  # its constructor, after self
        (init,) = [n for n in student.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        arguments = init.args
        arguments.args = arguments.args[1:]
    else:
        arguments = student.args
    theirs = ([(a.arg, "POSITIONAL_ONLY") for a in arguments.posonlyargs]
              + [(a.arg, "POSITIONAL_OR_KEYWORD") for a in arguments.args]
              + [(a.arg, "KEYWORD_ONLY") for a in arguments.kwonlyargs])
    assert not (arguments.vararg or arguments.kwarg), f"{name}: the notebook's signature takes *args or **kwargs"
    signature = inspect.signature(reference)
    ours = list(signature.parameters.values())
    said = f"{entry.reference}{signature} against the notebook's {ast.unparse(arguments)}"
    assert [p.name for p in ours[: len(theirs)]] == [n for n, _ in theirs], said
    for parameter, (_, kind) in zip(ours, theirs):
        assert parameter.kind.name == kind or (parameter.kind.name, kind) == ("KEYWORD_ONLY", "POSITIONAL_OR_KEYWORD"), said
    assert all(p.default is not inspect.Parameter.empty for p in ours[len(theirs):]), said


STUB_MESSAGE = "cs_dense.ops.nms is the exercise nms of notebook 03_iou_nms_map: write it there"


@students_own("nms")
def _stub(boxes, scores, iou_threshold):
    """A stub as the bundle writes it."""
    raise NotImplementedError(STUB_MESSAGE)


@pytest.fixture
def notebook(monkeypatch):
    """A stand-in for the running notebook's namespace (``__main__``)."""
    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    return main


def _define(notebook, source: str) -> None:
    exec(source, notebook.__dict__)


def test_a_bundle_stub_runs_the_students_function_with_the_arguments_given(notebook):
    _define(notebook, "def nms(b, s, iou_threshold):\n    return ('mine', b, s, iou_threshold)")
    assert _stub(1, 2, iou_threshold=0.5) == ("mine", 1, 2, 0.5)
    assert _stub(3, 4, 0.7) == ("mine", 3, 4, 0.7)
    assert inspect.signature(_stub) == inspect.signature(_stub.__wrapped__)
    assert _stub.__doc__ == "A stub as the bundle writes it."


def test_a_call_the_students_function_cannot_take_is_refused_naming_the_arguments(notebook):
    _define(notebook, "def nms(boxes, scores):\n    return 'never'")
    with pytest.raises(NotImplementedError, match=r"the package calls nms with argument 1, argument 2, iou_threshold, "
                                                  r"and your nms does not take them \(got an unexpected keyword"):
        _stub(1, 2, iou_threshold=0.5)


@pytest.mark.parametrize("binding", ["", "nms = 3", "from math import hypot as nms", "nms = lambda: 0\nnms.__module__ = 'os'"],
                         ids=["nothing", "not-a-function", "imported", "from-elsewhere"])
def test_a_bundle_stub_raises_without_a_function_of_the_notebooks_own(notebook, binding):
    _define(notebook, binding)
    with pytest.raises(NotImplementedError, match=re.escape(STUB_MESSAGE) + "$"):
        _stub(1, 2, 0.5)


def test_a_student_function_that_calls_the_stub_is_not_run_again(notebook):
    _define(notebook, "calls = []\ndef nms(b, s, t):\n    calls.append(b)\n    return STUB(b, s, t)")
    notebook.STUB = _stub
    with pytest.raises(NotImplementedError, match="Your nms calls the package's nms, which in this bundle is your nms again"):
        _stub(1, 2, 0.5)
    assert notebook.calls == [1]
    _define(notebook, "def nms(b, s, t):\n    return 'fixed'")  # afterwards, the guard is down again
    assert _stub(1, 2, 0.5) == "fixed"


CLASS_MESSAGE = "cs_dense.models.MaskHead.__init__ belongs to the exercise MaskHead of notebook 08_mask_rcnn: write it there"


@students_own("MaskHead")
class _StubClass:
    """A class as the bundle writes it: its methods stubbed."""

    def __init__(self, in_channels, num_classes, layers=(4,)):
        raise NotImplementedError(CLASS_MESSAGE)


def test_building_a_bundle_stub_class_builds_the_students_class_with_the_arguments_given(notebook):
    _define(notebook, "class MaskHead:\n    def __init__(self, c, num_classes, layers=(8,)):\n"
                      "        self.got = (c, num_classes, layers)")
    head = _StubClass(3, num_classes=4)
    assert type(head) is notebook.MaskHead and head.got == (3, 4, (8,))
    assert _StubClass(1, 2, (5, 6)).got == (1, 2, (5, 6))
    assert _StubClass.__doc__ == "A class as the bundle writes it: its methods stubbed."


@pytest.mark.parametrize("binding", ["", "MaskHead = 3", "def MaskHead(c, k):\n    return 'a function'",
                                     "from fractions import Fraction as MaskHead",
                                     "class MaskHead(STUB):\n    def __init__(self, c, k):\n        super().__init__(c, k)"],
                         ids=["nothing", "not-a-class", "a-function", "imported", "a-subclass-of-the-stub"])
def test_a_bundle_stub_class_raises_without_a_class_of_the_notebooks_own(notebook, binding):
    notebook.STUB = _StubClass
    _define(notebook, binding)
    with pytest.raises(NotImplementedError, match=re.escape(CLASS_MESSAGE) + "$"):
        _StubClass(1, 2)


def test_a_bundle_stub_class_refuses_arguments_the_students_class_cannot_take(notebook):
    _define(notebook, "class MaskHead:\n    def __init__(self, c):\n        pass")
    with pytest.raises(NotImplementedError, match=r"the package calls MaskHead with argument 1, argument 2, and your "
                                                  r"MaskHead does not take them \(too many positional"):
        _StubClass(1, 2)


def test_a_students_class_that_builds_the_stub_class_is_not_built_again(notebook):
    _define(notebook, "class MaskHead:\n    def __init__(self, c, k):\n        self.inner = STUB(c, k)")
    notebook.STUB = _StubClass
    with pytest.raises(NotImplementedError, match="Your MaskHead builds the package's MaskHead, which in this bundle is "
                                                  "your MaskHead again"):
        _StubClass(1, 2)
    _define(notebook, "class MaskHead:\n    def __init__(self, c, k):\n        self.inner = None")
    assert _StubClass(1, 2).inner is None  # afterwards, the guard is down again
