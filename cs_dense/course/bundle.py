"""``cs-dense bundle``: the course as students install it.

A bundle holds the released notebooks and an installable ``cs_dense`` built from this
repository's files: the modules the released notebooks and ``cs-dense check`` import, with
the exercises stubbed. Nothing in it is written by hand; every step is a transformation of
the repository's sources:

* **Which modules.** The package modules the released notebooks import, and the command
  line, with everything those import. Modules of ``cs_dense.course`` other than the
  student's tools (``check``, ``cli``) keep only the names the student modules import from
  them; the command line keeps only the ``check`` command. The autograder, release,
  report, samples, sandbox, the grader's cross-check and its probes are left out because
  nothing a student runs imports them.
* **Stubs.** Every ``cs_dense`` function or method that the exercise registry
  (:data:`cs_dense.grading.registry.EXERCISES`) forbids to an exercise of an assignment not
  revealed keeps its decorators, signature and docstring, and its body becomes a
  ``raise NotImplementedError`` naming the exercise and the notebook. A module-level
  function that is its exercise's drop-in reference is also decorated with
  :func:`cs_dense.grading.registry.students_own`: it runs the student's own function of that
  name from the running notebook, so pictures and detectors built from the package use the
  student's code; a class that is (its methods stubbed) builds the student's class. A
  private worker the registry names (``_shortest_augmenting_path``) loses its docstring
  too: it explains the algorithm. A private helper that nothing left in the
  package uses any more goes, and so do imports nothing uses.
* **Dependencies.** Which assignments' references each notebook runs, found statically:
  the names a solution notebook uses (imports, attributes such as
  ``cs_dense.models.TwoStageDetector``, and the exercise names its test cells pass as
  ``stand_in``), followed through the package's call graph
  (:meth:`cs_dense.course.sourcecode.Package.graph`, conservative) to the stubbed
  functions they reach; a stub that runs the student's function, reached after the
  notebook has defined it, needs nothing. The slow tests run every notebook against
  bundles made from this map. In the bundle, :data:`cs_dense.grading.registry.UNRELEASED`
  names the stubbed exercises, so a test cell's stand-in for one of them leaves the
  student's own function in place.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import shutil
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat

from cs_dense.course.layout import BEGIN_HIDDEN, END_HIDDEN, Course
from cs_dense.course.sourcecode import (
    Edit,
    Node,
    Package,
    apply_edits,
    binds,
    bound_imports,
    docstring,
    dotted_name,
    imported_modules,
    module_path,
    narrow_cli,
    parse,
    reachable,
    read_package,
    references,
    shake,
    stub_out,
)
from cs_dense.data.paths import normalise_project_name
from cs_dense.grading.registry import EXERCISES

PACKAGE = "cs_dense"
#: The instructor's tooling; of it, students get only their own tools, whole.
TOOLING = "cs_dense.course"
STUDENT_CLI = "cs_dense.course.cli"
STUDENT_TOOLS = ("cs_dense.course.check", STUDENT_CLI)
#: The commands of the bundle's ``cs-dense``.
STUDENT_COMMANDS = ("check",)
#: Where :data:`cs_dense.grading.registry.UNRELEASED` is set, and the decorator of the
#: stubs that run the student's own function.
REGISTRY = "cs_dense.grading.registry"
OWN = "students_own"

# --------------------------------------------------------------------------------------
# Exercises: what is stubbed, and whose it is


@dataclass(frozen=True)
class Stub:
    """A definition the bundle replaces with ``raise NotImplementedError``, and the exercise it belongs to."""

    node: Node
    name: str  # as the registry spells it, which is how students reach it
    exercise: str
    notebook: str

    @property
    def runs_the_students(self) -> bool:
        """Whether the stub runs the student's own function of the exercise's name, when there is one.

        So it does for a module-level function that is the exercise's drop-in reference
        (the student's signature), and for a method of a module-level class that is (the
        student's constructor): see :func:`cs_dense.grading.registry.students_own`.
        """
        reference, qualname = EXERCISES[self.exercise].reference, self.node[1]
        if "." not in qualname:
            return reference == self.name
        return qualname.count(".") == 1 and reference == self.name.rsplit(".", 1)[0]

    @property
    def decorated(self) -> str:
        """The qualified name that carries the decorator when the stub runs the student's: the function, or its class."""
        return self.node[1].split(".")[0]

    def message(self) -> str:
        relation = "is the exercise" if self.name.rsplit(".", 1)[-1] == self.exercise else "belongs to the exercise"
        where = (f"write it there and run its cell (the package then runs your {self.exercise})"
                 if self.runs_the_students else "write it there")
        return (
            f"{self.name} {relation} {self.exercise} of notebook {self.notebook}: {where}; "
            f"the reference is released with the solutions of {self.notebook}"
        )


def find_stubs(package: Package) -> dict[Node, Stub]:
    """Every ``cs_dense`` definition some exercise forbids, with the exercise that owns it.

    A definition forbidden by several exercises belongs to the earliest notebook's: it is
    released with those solutions. Within a notebook, the exercise it is the reference of,
    or the one named like it, owns it; otherwise the first that lists it.

    Raises:
        ValueError: a forbidden ``cs_dense`` name names nothing in the package's sources.
    """
    claims: dict[Node, list[tuple[str, bool, int, str, str]]] = {}
    for order, (exercise, entry) in enumerate(EXERCISES.items()):
        for name in entry.forbidden:
            if not name.startswith(PACKAGE + "."):
                continue
            node = package.resolve(name)
            if node is None:
                raise ValueError(f"the registry forbids {name!r} to {exercise!r}, but the package defines no such thing")
            is_own = entry.reference == name or name.rsplit(".", 1)[-1] == exercise
            claims.setdefault(node, []).append((entry.notebook, not is_own, order, exercise, name))
    stubs = {}
    for node, owners in claims.items():
        notebook, _, _, exercise, name = min(owners)
        stubs[node] = Stub(node, name, exercise, notebook)
    return stubs


# --------------------------------------------------------------------------------------
# Notebooks: what they use


def code_cells(path: Path) -> Iterator[tuple[str, str]]:
    """``(grade_id or index, Python source)`` of each code cell: magics and hidden tests removed."""
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        lines, hidden = [], False
        for line in cell.source.splitlines():
            if line.strip() == BEGIN_HIDDEN:
                hidden = True
            elif line.strip() == END_HIDDEN:
                hidden = False
            elif not hidden and not line.lstrip().startswith(("%", "!")):
                lines.append(line)
        yield cell.metadata.get("nbgrader", {}).get("grade_id", str(index)), "\n".join(lines)


def notebook_uses(path: Path, package: Package, notebook: str) -> dict[str, tuple[set[Node], frozenset[str]]]:
    """``{cell: (definitions of the package the cell uses, names the notebook has defined by then)}``.

    A name counts from the import that binds it until a cell rebinds it (say, the student's
    own ``roi_align``). A string equal to another notebook's exercise name is a stand-in
    (``check(..., stand_in=["box_iou"])``): the test cell runs that exercise's reference.
    The names defined are the functions and classes of this cell and the cells above it.
    """
    defined: set[str] = set()
    bound: dict[str, tuple[str, ...]] = {}

    def resolve(parts: list[str]) -> Node | None:
        if parts[0] not in bound:
            return None
        module, *attributes = bound[parts[0]]
        return package.lookup(module, [*attributes, *parts[1:]])

    uses = {}
    for cell, source in code_cells(path):
        tree = parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                bound.update(bound_imports(node))
        found = references(tree, resolve)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in EXERCISES:
                entry = EXERCISES[node.value]
                if entry.notebook != notebook and entry.reference is not None:
                    found.add(package.resolve(entry.reference))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                bound.pop(node.name, None)
                defined.add(node.name)
        uses[cell] = found, frozenset(defined)
    return uses


# --------------------------------------------------------------------------------------
# The bundle's package


@functools.lru_cache(maxsize=1024)
def _imports_from(source: str) -> tuple[tuple[str, str], ...]:
    """``(module, name)`` for every ``from module import name`` in ``source``."""
    return tuple((node.module, alias.name) for node in ast.walk(parse(source))
                 if isinstance(node, ast.ImportFrom) and node.module for alias in node.names)


def _outside_names(sources: Iterable[str], modules: Iterable[str]) -> dict[str, set[str]]:
    """``{module: names that code elsewhere imports from it}`` (``from module import name``)."""
    modules = set(modules)
    found: dict[str, set[str]] = {}
    for source in sources:
        for module, name in _imports_from(source):
            if module in modules:
                found.setdefault(module, set()).add(name)
    return found


def _keep_in_api_module(tree: ast.Module, also: set[str]) -> set[str]:
    """What a module of the package keeps when shaken: its public and dunder names, and ``also``."""
    names = {n for s in tree.body if not isinstance(s, ast.Import | ast.ImportFrom) for n in binds(s)}
    return {n for n in names if not n.startswith("_") or n.startswith("__")} | also


def _set_unreleased(source: str, exercises: Iterable[str]) -> str:
    """The registry with :data:`UNRELEASED` naming ``exercises``."""
    tree = parse(source)
    node = next(s for s in tree.body if isinstance(s, ast.AnnAssign) and dotted_name(s.target) == "UNRELEASED")
    value = f"frozenset({{{', '.join(map(repr, sorted(exercises)))}}})" if exercises else "frozenset()"
    line = source.splitlines()[node.lineno - 1]
    return apply_edits(source, [Edit(node.lineno, node.end_lineno, (line[: node.value.col_offset] + value,))])


@dataclass(frozen=True)
class StudentPackage:
    """The modules of the bundle's ``cs_dense`` (transformed sources) and those it leaves out."""

    sources: dict[str, str]
    left_out: tuple[str, ...]


def student_package(course: Course, revealed: Iterable[str]) -> StudentPackage:
    """Build the bundle's ``cs_dense`` from the repository's: see the module docstring."""
    original = read_package(course.root, PACKAGE)
    package = Package(original)
    revealed = set(revealed)
    stubs: dict[str, list[Stub]] = {}
    for stub in find_stubs(package).values():
        if stub.notebook not in revealed:
            stubs.setdefault(stub.node[0], []).append(stub)
    unreleased = {name for name, entry in EXERCISES.items() if entry.notebook not in revealed}
    notebooks = [source for a in course.assignments() for n in course.notebook_names(a)
                 for _, source in code_cells(course.solutions / a / f"{n}.ipynb")]

    # what each module becomes on its own
    base = dict(original)
    base[STUDENT_CLI] = narrow_cli(original[STUDENT_CLI], STUDENT_COMMANDS, {m for m in original if _is_tooling(m)})
    base[REGISTRY] = _set_unreleased(original[REGISTRY], unreleased)
    for module, here in stubs.items():
        decorators = {stub.decorated: f"{OWN}({stub.exercise!r})" for stub in here if stub.runs_the_students}
        base[module] = stub_out(base[module], [(stub.node[1], stub.message()) for stub in here], decorators,
                                f"from {REGISTRY} import {OWN}")

    def shaken(module: str, wanted: set[str]) -> str:
        """A stubbed module without what nothing uses any more; a tooling module cut to ``wanted``."""
        if module in stubs:
            also = wanted | {s.node[1].split(".")[0] for s in stubs[module]}
            return shake(base[module], _keep_in_api_module(package.trees[module], also))
        if not _is_tooling(module):
            return base[module]
        source = shake(original[module], wanted)
        if source == original[module] or not wanted:
            return source
        doc = docstring(parse(source))
        summary = ast.get_docstring(parse(source)).split("\n\n")[0].replace("\n", " ")
        note = f"The student bundle keeps only what ``cs-dense check`` uses: {', '.join(sorted(wanted))}."
        return apply_edits(source, [Edit(doc.lineno, doc.end_lineno, ('"""' + summary, "", note + '"""'))])

    roots = {PACKAGE, *STUDENT_TOOLS}.union(*(imported_modules(parse(s), original) for s in notebooks))
    # the modules the notebooks and the student's tools import, each keeping what the
    # others still import from it, until that stops changing (it only ever shrinks)
    sources: dict[str, str] = {}
    while True:
        reached, todo = {}, list(roots)
        while todo:
            module = todo.pop()
            if module not in reached:
                reached[module] = sources.get(module, base[module])
                todo.extend(imported_modules(parse(reached[module]), original))
        outside = _outside_names([*reached.values(), *notebooks], original)
        narrower = {m: shaken(m, outside.get(m, set())) for m in reached}
        if narrower == sources:
            break
        sources = narrower
    return StudentPackage(dict(sorted(sources.items())), tuple(sorted(original.keys() - sources.keys())))


def _is_tooling(module: str) -> bool:
    """The instructor's course tooling, except the student's tools."""
    return (module == TOOLING or module.startswith(TOOLING + ".")) and module not in STUDENT_TOOLS


# --------------------------------------------------------------------------------------
# Which notebook runs which assignment's references


def dependency_map(course: Course) -> dict[str, dict[str, tuple[str, ...]]]:
    """``{assignment: {assignment whose references it runs: cells that run them}}``.

    Computed from the solution notebooks (a student's correct answers) as described in the
    module docstring. An assignment can name itself: cells outside its exercises (a
    picture, a trained model) that run the package's versions of its own exercises before
    the student has written them, or versions that do not run the student's own
    (:attr:`Stub.runs_the_students`), fail until it is revealed. A stub that runs the
    student's function, once the notebook has defined it, leads nowhere else in the package.
    """
    package = Package(read_package(course.root, PACKAGE))
    graph, stubs = package.graph(), find_stubs(package)
    needs: dict[str, dict[str, tuple[str, ...]]] = {}
    pruned: dict[frozenset[Node], dict[Node, set[Node]]] = {}  # the graph without the stubs that run the student's
    for assignment in course.assignments():
        cells: dict[str, list[str]] = {}
        for name in course.notebook_names(assignment):
            uses = notebook_uses(course.solutions / assignment / f"{name}.ipynb", package, assignment)
            for cell, (nodes, defined) in uses.items():
                theirs = frozenset(node for node, stub in stubs.items()
                                   if stub.notebook == assignment and stub.runs_the_students and stub.exercise in defined)
                if theirs not in pruned:
                    pruned[theirs] = {node: (set() if node in theirs else edges) for node, edges in graph.items()}
                failing = (reachable(pruned[theirs], nodes) & stubs.keys()) - theirs
                for owner in sorted({stubs[n].notebook for n in failing}):
                    cells.setdefault(owner, []).append(cell)
        needs[assignment] = {owner: tuple(cells[owner]) for owner in sorted(cells)}
    return needs


def _missing(needs: dict[str, tuple[str, ...]], revealed: set[str]) -> dict[str, tuple[str, ...]]:
    return {owner: cells for owner, cells in needs.items() if owner not in revealed}


def dependency_warnings(needs: dict[str, dict[str, tuple[str, ...]]], revealed: Iterable[str]) -> list[str]:
    """One line per notebook that runs references a bundle revealing ``revealed`` stubs."""
    revealed = set(revealed)
    lines = []
    for assignment, owners in needs.items():
        missing = _missing(owners, revealed)
        if missing:
            cells = sorted({cell for found in missing.values() for cell in found})
            lines.append(f"notebook {assignment} runs references of {', '.join(missing)}, not revealed in this bundle "
                         f"(cells: {', '.join(cells)})")
    return lines


# --------------------------------------------------------------------------------------
# Writing the bundle


def _top_level_imports(trees: Iterable[ast.AST]) -> set[str]:
    found = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def student_dependencies(pins: Iterable[str], instructor: Iterable[ast.AST], student: Iterable[ast.AST]) -> tuple[list[str], list[str]]:
    """Split the repository's pinned dependencies into (the students', the instructor's only).

    A dependency is the instructor's only when the repository's package imports it but
    neither the bundle's package nor any notebook does (psutil: the sandbox and nbgrader's
    process handling). Those nothing imports stay: they are the students' environment
    (JupyterLab, the kernel). Import names come from the installed distributions' metadata.
    """
    provides: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            provides.setdefault(normalise_project_name(distribution), set()).add(module)
    instructor, student = _top_level_imports(instructor), _top_level_imports(student)
    kept, dropped = [], []
    for pin in pins:
        distribution = normalise_project_name(re.split(r"[=<>!~\[; ]", pin, maxsplit=1)[0])
        modules = provides.get(distribution, {distribution.replace("-", "_")})
        (dropped if modules & instructor and not modules & student else kept).append(pin)
    return kept, dropped


def _pyproject(project: dict, dependencies: list[str], readme: str) -> str:
    quoted = "".join(f'    "{pin}",\n' for pin in dependencies)
    scripts = "".join(f'{name} = "{target}"\n' for name, target in project.get("scripts", {}).items())
    return (
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{project["name"]}"\nversion = "{project["version"]}"\n'
        'description = "A notebook course on dense prediction in computer vision: the student edition."\n'
        f'readme = "{readme}"\nrequires-python = "{project["requires-python"]}"\n'
        f'license = {{ text = "{project["license"]["text"]}" }}\ndependencies = [\n{quoted}]\n\n'
        f"[project.scripts]\n{scripts}\n"
        f'[tool.setuptools.packages.find]\ninclude = ["{PACKAGE}*"]\n'
    )


def _readme(course: Course, revealed: set[str], needs: dict[str, dict[str, tuple[str, ...]]], example: Stub | None) -> str:
    assignments = course.assignments()
    first = f"notebooks/{assignments[0]}/{course.notebook_names(assignments[0])[0]}.ipynb"
    rows = []
    for assignment, owners in needs.items():
        others = [owner for owner in owners if owner != assignment]
        own = ", ".join(owners.get(assignment, ())) or "-"
        waits = ", ".join(_missing(owners, revealed)) or "-"
        rows.append(f"| {assignment} | {', '.join(others) or '-'} | {own} | {waits} |")
    status = ", ".join(sorted(revealed)) or "none yet"
    stubs = "" if example is None else f"""Every other exercise is a stub that says
where to write it, for example:

```
NotImplementedError: {example.message()}
```
"""
    return f"""# cs_dense: dense prediction in computer vision (student edition)

The notebooks of the course are in `notebooks/`; `cs_dense` is the package they import:
the shapes data, plotting, training loops and the checks that the test cells run.

## Setting up

With Python 3.11, in this folder:

```bash
python3.11 -m venv .venv
.venv/bin/pip install .
.venv/bin/jupyter lab notebooks
```

## Working on a notebook

Write your code in each cell that says `# YOUR CODE HERE`, then run the test cell below
it: a failing test names the case, what was expected and what your code returned.

```bash
.venv/bin/cs-dense check {first}
```

runs a whole notebook in a fresh kernel and prints each graded test with its points.
Grading also runs hidden tests, with fresh random cases.

## The package's own versions of the exercises

The package has its own version of every exercise, released with each assignment's
solutions. Released in this copy: {status}. {stubs}
When a picture, a detector or a later exercise of a notebook calls the package's version of
one of that notebook's exercises (`cs_dense.ops.nms` in notebook 03, say), the package runs
yours: the function of that name you defined in the notebook, once its cell has run. So the
pictures show what your code does. (When the course grades your notebook, it uses its
own versions there.) Other cells run the package's versions of exercises of earlier
notebooks, or a few of their own before you have written them. Such a cell works once
those solutions are released (in a new copy of this folder); until then it stops with the
message above. Computed from the notebooks:

| notebook | needs the solutions of | cells that need its own exercises' package versions | waits in this copy for |
|---|---|---|---|
{chr(10).join(rows)}
"""


@dataclass(frozen=True)
class Bundle:
    """What :func:`write_bundle` wrote."""

    out: Path
    revealed: tuple[str, ...]
    stubs: int
    left_out: tuple[str, ...]
    dropped_dependencies: tuple[str, ...]
    warnings: tuple[str, ...]

    def summary(self) -> str:
        # a package left out stands for its modules
        left_out = [m for m in self.left_out if m.rpartition(".")[0] not in self.left_out]
        return "\n".join([
            f"wrote {self.out}: notebooks/, the cs_dense package with {self.stubs} stubs, pyproject.toml, README.md",
            f"revealed: {', '.join(self.revealed) or 'nothing'}",
            f"modules left out: {', '.join(left_out)}",
            f"dependencies left out (instructor only): {', '.join(self.dropped_dependencies) or 'none'}",
            f"which notebook needs which assignment revealed: {self.out / 'README.md'}",
        ])


def _is_bundle(folder: Path) -> bool:
    """Whether ``folder`` looks like an earlier bundle, which ``--force`` may replace: a
    ``pyproject.toml`` of this project, and neither solutions nor nbgrader settings (as the
    course repository has)."""
    try:
        name = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return False
    course_markers = (folder / "solutions").exists() or (folder / "nbgrader_config.py").exists()
    return normalise_project_name(str(name)) == normalise_project_name(PACKAGE) and not course_markers


def write_bundle(
    course: Course, out: Path, reveal: Iterable[str] = (), *, reveal_through: str | None = None, force: bool = False
) -> Bundle:
    """Write the student bundle to ``out``, with the references of the revealed assignments intact.

    Args:
        reveal: assignments to reveal.
        reveal_through: reveal this assignment and every one before it, too.
        force: replace ``out`` if it is not empty.

    Raises:
        ValueError: an unknown assignment; ``out`` exists and is not empty (unless
            ``force``, and it is an earlier bundle).
    """
    reveal = list(reveal)
    if reveal_through is not None:
        course.check_assignment(reveal_through)
        reveal += [a for a in course.assignments() if a <= reveal_through]
    revealed = tuple(sorted(set(reveal)))
    for assignment in revealed:
        course.check_assignment(assignment)
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ValueError(f"{out} exists and is not empty; choose another folder, or pass --force to replace an earlier bundle")
        if not _is_bundle(out):
            raise ValueError(f"{out} is not empty and is not an earlier bundle: not replacing it")
        shutil.rmtree(out)

    package = student_package(course, revealed)
    original = Package(read_package(course.root, PACKAGE))
    stubs = [s for s in find_stubs(original).values() if s.notebook not in revealed]
    needs = dependency_map(course)
    notebooks = [parse(source) for a in course.assignments() for n in course.notebook_names(a)
                 for _, source in code_cells(course.notebooks / a / f"{n}.ipynb")]
    project = tomllib.loads((course.root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    kept, dropped = student_dependencies(
        project["dependencies"], original.trees.values(), [*map(parse, package.sources.values()), *notebooks]
    )

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(course.notebooks, out / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for module, source in package.sources.items():
        path = out / module_path(module, package.sources)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    (out / "pyproject.toml").write_text(_pyproject(project, kept, "README.md"), encoding="utf-8")
    example = min(stubs, key=lambda s: s.notebook, default=None)
    (out / "README.md").write_text(_readme(course, set(revealed), needs, example), encoding="utf-8")
    return Bundle(out, revealed, len(stubs), package.left_out, tuple(dropped), tuple(dependency_warnings(needs, revealed)))
