"""``cs-dense bundle``: no answer reaches students, the stubs say where to write them, and the
bundle installs and runs the notebooks in a fresh virtual environment.

The oracles here do not use the bundle's own machinery: solution lines are read from the
solution notebooks and from the package's source (found through the live objects the
registry names), and the bundle is judged by importing it in another process or
installing it into a new venv.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import nbformat
import pytest

from cs_dense.course.bundle import PACKAGE, dependency_map, find_stubs, notebook_uses, write_bundle
from cs_dense.course.cli import main
from cs_dense.course.layout import BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, find_course
from cs_dense.course.sourcecode import Package, reachable, read_package, stub_out
from cs_dense.data import load_split
from cs_dense.grading.registry import EXERCISES, resolve

COURSE = find_course(Path(__file__).parent)
ASSIGNMENTS = COURSE.assignments()
FIRST = ASSIGNMENTS[0]
#: Shorter lines (``return x``, ``else:``) occur everywhere and prove nothing.
MIN_LINE = 12


def _is_code_line(line: str) -> bool:
    line = line.strip()
    return len(line) >= MIN_LINE and not line.startswith("#") and line != "pass"


# --------------------------------------------------------------------------------------
# What must not reach students


def _solution_region_lines(assignment: str) -> set[str]:
    lines = set()
    for path in (COURSE.solutions / assignment).glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            inside = False
            for line in cell.source.splitlines():
                if line.strip() == BEGIN_SOLUTION:
                    inside = True
                elif line.strip() == END_SOLUTION:
                    inside = False
                elif inside and _is_code_line(line) and not line.strip().startswith(('"""', "'''")):
                    lines.add(line.strip())
    return lines


def _definition(name: str) -> tuple[Path, ast.FunctionDef]:
    """The source file and ``def`` of a registry name, found from the live object."""
    thing = inspect.unwrap(resolve(name))
    path = Path(inspect.getsourcefile(thing))
    scope = ast.parse(path.read_text()).body
    for part in thing.__qualname__.split("."):
        node = next(n for n in scope if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == part)
        scope = node.body
    return path, node


def _body_span(node: ast.FunctionDef) -> tuple[int, int]:
    """Lines of a function's body after its docstring; a private worker's docstring included."""
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)
    if has_doc and not (node.name.startswith("_") and not node.name.startswith("__")):
        return body[0].end_lineno + 1, node.end_lineno
    return body[0].lineno, node.end_lineno


def _secret_spans(revealed: set[str]) -> dict[Path, list[tuple[int, int]]]:
    """Line spans of the package that belong to unrevealed exercises.

    Every ``cs_dense`` name an unrevealed exercise forbids (unless a revealed exercise
    forbids it too: it is released with those solutions), then every private module-level
    function all of whose uses lie inside such spans.
    """
    released = {n for entry in EXERCISES.values() if entry.notebook in revealed for n in entry.forbidden}
    spans: dict[Path, list[tuple[int, int]]] = {}
    for entry in EXERCISES.values():
        for name in entry.forbidden:
            if entry.notebook not in revealed and name.startswith("cs_dense.") and name not in released:
                path, node = _definition(name)
                spans.setdefault(path, []).append(_body_span(node))
    for path, found in spans.items():
        tree = ast.parse(path.read_text())
        helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("_")}
        grown = True
        while grown:
            grown = False
            for name, node in helpers.items():
                uses = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name]
                already = any(a <= node.end_lineno <= b for a, b in found)  # a forbidden worker, or done
                if uses and not already and all(any(a <= line <= b for a, b in found) for line in uses):
                    found.append((node.lineno, node.end_lineno))
                    grown = True
    return spans


def _package_lines(spans: dict[Path, list[tuple[int, int]]]) -> tuple[set[str], str]:
    """(secret lines of those spans, the text of the package outside them)."""
    secret, elsewhere = set(), []
    for path in sorted((COURSE.root / "cs_dense").rglob("*.py")):
        lines = path.read_text().splitlines()
        inside = [False] * (len(lines) + 1)
        for a, b in spans.get(path, []):
            for i in range(a, b + 1):
                inside[i] = True
        for number, line in enumerate(lines, start=1):
            if inside[number]:
                if _is_code_line(line):
                    secret.add(line.strip())
            else:
                elsewhere.append(line)
    return secret, "\n".join(elsewhere)


def _notebook_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    outputs = [json.dumps(c.get("outputs", [])) for c in nb.cells]
    return "\n".join([c.source for c in nb.cells] + outputs)


def _bundle_texts(out: Path) -> dict[Path, str]:
    texts = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        raw = path.read_bytes().decode("utf-8")  # a binary file in the bundle fails here, on purpose
        texts[path] = raw + ("\n" + _notebook_text(path) if path.suffix == ".ipynb" else "")
    return texts


def _leaks(out: Path, revealed: set[str]) -> tuple[set[str], dict[str, list[str]]]:
    """(the secret lines, {line: bundle files holding it}) for a bundle revealing ``revealed``."""
    spans = _secret_spans(revealed)
    package_secret, package_elsewhere = _package_lines(spans)
    notebooks = "\n".join(_notebook_text(p) for p in COURSE.notebooks.rglob("*.ipynb"))
    secret = package_secret | {line for a in ASSIGNMENTS if a not in revealed for line in _solution_region_lines(a)}
    # a line that also occurs in what students may have (released notebooks, the rest of the package) leaks nothing
    secret = {line for line in secret if line not in notebooks and line not in package_elsewhere}
    found: dict[str, list[str]] = {}
    for path, text in _bundle_texts(out).items():
        for line in secret:
            if line in text:
                found.setdefault(line, []).append(str(path.relative_to(out)))
    return secret, found


@pytest.mark.parametrize("revealed", [(), (FIRST,)], ids=["nothing-revealed", f"{FIRST}-revealed"])
def test_no_solution_line_reaches_the_bundle(revealed, tmp_path):
    out = tmp_path / "bundle"
    write_bundle(COURSE, out, revealed)
    secret, found = _leaks(out, set(revealed))
    assert len(secret) > 500, "the oracle found too few solution lines to mean anything"
    assert not found, f"{len(found)} solution lines in the bundle, e.g. {sorted(found.items())[:5]}"
    for path in out.rglob("*"):
        assert "solutions" not in path.parts and "samples" not in path.parts, path
    text = "\n".join(_bundle_texts(out).values())
    for marker in (BEGIN_SOLUTION, BEGIN_HIDDEN):
        assert marker not in text


DATA_PROBE = textwrap.dedent("""
    import json
    from cs_dense.data import CLASSES, load_split
    from cs_dense.data.coco import to_coco_gt
    images, targets = load_split("val", 40)
    coco = to_coco_gt(targets, [tuple(images.shape[-2:])] * len(targets), CLASSES)
    print(json.dumps({"boxes": [t["boxes"].tolist() for t in targets], "bbox": [a["bbox"] for a in coco["annotations"]]}))
""")


def test_the_data_tools_work_before_any_assignment_is_revealed(tmp_path):
    """The shapes data and its COCO form use no exercise (masks_to_boxes and box_convert are notebook 00's)."""
    out = tmp_path / "bundle"
    write_bundle(COURSE, out)
    env = {**os.environ, "PYTHONPATH": str(out)}
    done = subprocess.run([sys.executable, "-c", DATA_PROBE], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    _, targets = load_split("val", 40)  # the repository's package, whose boxes test_data checks against torchvision
    assert found["boxes"] == [t["boxes"].tolist() for t in targets]
    # COCO's [x, y, w, h], by hand from the repository's xyxy
    assert found["bbox"] == [[x1, y1, x2 - x1, y2 - y1] for t in targets for x1, y1, x2, y2 in t["boxes"].double().tolist()]


def test_the_readme_states_the_computed_dependency_map():
    readme = (COURSE.root / "README.md").read_text()
    section = readme.split("**Which notebook needs which.**", 1)[1].split("**What students meet", 1)[0]
    rows = dict(re.findall(r"^\| (\d\d) \| ([^|]*?) \|$", section, re.M))
    expected = {a[:2]: ", ".join(o[:2] for o in owners if o != a) or "-" for a, owners in dependency_map(COURSE).items()}
    assert rows == expected


STUBBABLE = textwrap.dedent('''\
    """A module."""
    import math


    def area(r):
        """The area."""
        return math.pi * r * r


    class Head:
        """A head."""

        def __init__(self, n):
            self.n = n

        def forward(self, x):
            return x * self.n
''')


def test_stub_out_decorates_a_stubbed_function_or_the_class_of_stubbed_methods():
    stubs = [("area", "area is an exercise"), ("Head.__init__", "Head is one too"), ("Head.forward", "Head is one too")]
    out = stub_out(STUBBABLE, stubs, {"area": "own('area')", "Head": "own('Head')"}, "from registry import own")
    tree = ast.parse(out)
    assert [ast.unparse(n) for n in tree.body[:3]] == ["'A module.'", "import math", "from registry import own"]
    area, head = tree.body[3], tree.body[4]
    assert [ast.unparse(d) for d in area.decorator_list] == ["own('area')"]
    assert [ast.unparse(d) for d in head.decorator_list] == ["own('Head')"]
    assert all(not method.decorator_list for method in head.body[1:])  # the class carries it, not its methods
    for function, message in ((area, "area is an exercise"), *((m, "Head is one too") for m in head.body[1:])):
        assert ast.unparse(function.body[-1]) == f"raise NotImplementedError({message!r})"
    with pytest.raises(ValueError, match="neither stubbed nor a class holding a stub: Head"):
        stub_out(STUBBABLE, stubs[:1], {"Head": "own('Head')"})
    with pytest.raises(ValueError, match="Head is a class: stub its methods"):
        stub_out(STUBBABLE, [("Head", "no")])


def test_no_notebook_waits_for_its_own_solutions():
    """Cells that run the package's version of their own notebook's exercise come after the
    student wrote it, and the bundle's stub then runs the student's; nothing needs a later notebook."""
    needs = dependency_map(COURSE)
    assert {a: owners[a] for a, owners in needs.items() if a in owners} == {}
    assert [(a, o) for a, owners in needs.items() for o in owners if o > a] == []


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_visible_test_compares_an_exercise_with_the_packages_version_of_itself(assignment):
    """In the bundle that version runs the student's own function: such a test could not fail there.

    The calls a visible test cell makes are followed through the whole package (stubs not
    cut short); none may reach a definition the registry forbids to an exercise the cell checks.
    """
    package = Package(read_package(COURSE.root, PACKAGE))
    graph, stubs = package.graph(), find_stubs(package)
    forbidden_to = {node: {name for name, e in EXERCISES.items() if stub.name in e.forbidden} for node, stub in stubs.items()}
    (name,) = COURSE.notebook_names(assignment)
    notebook = nbformat.read(COURSE.solutions / assignment / f"{name}.ipynb", as_version=4)
    checked = {}
    for cell in notebook.cells:
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("grade") and not grading.get("solution"):
            checked[grading["grade_id"]] = set(re.findall(r"""exercise=["'](\w+)["']""", cell.source))
    assert checked and all(checked.values()), checked
    for cell, (nodes, _) in notebook_uses(COURSE.solutions / assignment / f"{name}.ipynb", package, assignment).items():
        if cell in checked:
            own = {stubs[n].name for n in reachable(graph, nodes) & stubs.keys() if forbidden_to[n] & checked[cell]}
            assert not own, f"{cell} checks {sorted(checked[cell])} and runs {sorted(own)}"


def test_a_revealed_assignment_keeps_its_references(tmp_path):
    out = tmp_path / "bundle"
    write_bundle(COURSE, out, [FIRST])
    package = "\n".join(p.read_text() for p in (out / "cs_dense").rglob("*.py"))
    own, _ = _package_lines(_secret_spans(set(ASSIGNMENTS) - {FIRST}))
    assert own and all(line in package for line in own)


def test_instructor_modules_are_left_out(tmp_path):
    out = tmp_path / "bundle"
    write_bundle(COURSE, out)
    package = out / "cs_dense"
    for gone in ("course/autograde.py", "course/release.py", "course/report.py", "course/samples.py",
                 "course/sandbox.py", "course/layout.py", "course/bundle.py", "grading/crosscheck.py", "grading/probes"):
        assert not (package / gone).exists(), gone
    kept = {n.name for n in ast.parse((package / "course/preprocessors.py").read_text()).body if isinstance(n, ast.ClassDef)}
    assert kept == {"StderrAsStdout"}
    repo = tomllib.loads((COURSE.root / "pyproject.toml").read_text())["project"]
    bundled = tomllib.loads((out / "pyproject.toml").read_text())["project"]
    assert bundled["name"] == repo["name"] and bundled["scripts"] == repo["scripts"]
    assert set(repo["dependencies"]) - set(bundled["dependencies"]) == {p for p in repo["dependencies"] if p.startswith("psutil")}
    assert "optional-dependencies" not in bundled


STUB_PROBE = textwrap.dedent("""
    import importlib, inspect, json, pkgutil, sys
    import cs_dense
    from cs_dense.grading import registry
    if "--students-own" in sys.argv:  # a notebook where the student wrote every exercise
        def written(exercise):
            def own(*args, **kwargs):
                return "the student's " + exercise
            return own
        def written_class(exercise):
            def __init__(self, *args, **kwargs):
                self.said = "the student's " + exercise
            return type(exercise, (), {"__init__": __init__, "__module__": "__main__"})
        for exercise, entry in registry.EXERCISES.items():
            is_class = entry.reference is not None and inspect.isclass(registry.resolve(entry.reference))
            globals()[exercise] = (written_class if is_class else written)(exercise)
    modules = [m.name for m in pkgutil.walk_packages(cs_dense.__path__, "cs_dense.")]
    for name in modules:
        importlib.import_module(name)
    results = {}
    for entry in registry.EXERCISES.values():
        for name in entry.forbidden:
            function = registry.resolve(name)  # every forbidden name still resolves, for forbid()
            if not name.startswith("cs_dense."):
                continue
            required = [p for p in inspect.signature(function).parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            try:
                value = function(*[None] * len(required))
                results[name] = value if isinstance(value, str) else "returned"
            except NotImplementedError as error:
                results[name] = str(error)
            except Exception as error:
                results[name] = f"{type(error).__name__}: {error}"
        if entry.reference is not None and inspect.isclass(registry.resolve(entry.reference)):
            try:  # building the class, not calling its stubbed methods one by one
                results[entry.reference] = getattr(registry.resolve(entry.reference)(None, None), "said", "built")
            except NotImplementedError as error:
                results[entry.reference] = str(error)
            except Exception as error:
                results[entry.reference] = f"{type(error).__name__}: {error}"
    print(json.dumps({"file": cs_dense.__file__, "modules": modules, "stubs": results,
                      "unreleased": sorted(registry.UNRELEASED)}))
""")


def _probe(out: Path, *flags: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(out)}
    done = subprocess.run([sys.executable, "-c", STUB_PROBE, *flags], capture_output=True, text=True, env=env, cwd=out)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("revealed", [(), (FIRST,)], ids=["nothing-revealed", f"{FIRST}-revealed"])
def test_stubs_raise_naming_the_exercise_and_notebook(revealed, tmp_path):
    out = tmp_path / "bundle"
    write_bundle(COURSE, out, revealed)
    found = _probe(out)
    assert found["file"] == str(out / "cs_dense" / "__init__.py")
    assert not any(m.startswith(("cs_dense.grading.probes", "cs_dense.course.autograde")) for m in found["modules"])
    released = {n for e in EXERCISES.values() if e.notebook in revealed for n in e.forbidden}
    forbidding: dict[str, set[tuple[str, str]]] = {}
    for exercise, entry in EXERCISES.items():
        for name in (n for n in entry.forbidden if n.startswith("cs_dense.")):
            forbidding.setdefault(name, set()).add((exercise, entry.notebook))
    for name, owners in forbidding.items():
        said = found["stubs"][name]
        if name in released:
            assert not said.startswith("cs_dense."), f"{name} is revealed but still a stub: {said}"
        else:
            # the exercise and notebook of one of the exercises that forbid it
            assert name in said and any(f" {e} of notebook {n}:" in said for e, n in owners), f"{name}: {said}"
    assert found["unreleased"] == sorted(n for n, e in EXERCISES.items() if e.notebook not in revealed)


def test_a_stub_runs_the_students_own_function_where_the_reference_is_a_drop_in(tmp_path):
    """What a picture or a detector gets from the package once the student has written the exercise.

    A module-level function that is an exercise's drop-in reference (the registry says so)
    runs the student's function of that name from the running program's namespace; every
    other stub (methods, helpers, references with another signature) still raises.
    """
    out = tmp_path / "bundle"
    write_bundle(COURSE, out)
    found = _probe(out, "--students-own")["stubs"]
    drop_ins = {e.reference: name for name, e in EXERCISES.items() if e.reference and "." not in resolve(e.reference).__qualname__}
    assert len(drop_ins) >= 40 and "cs_dense.models.MaskHead" in drop_ins, sorted(drop_ins)
    assert set(drop_ins) <= set(found), sorted(set(drop_ins) - set(found))
    for name, said in found.items():
        if name in drop_ins:
            assert said == f"the student's {drop_ins[name]}", f"{name}: {said}"
        else:
            assert said.startswith(f"{name} ") and "write it there" in said, f"{name}: {said}"


def test_the_bundled_cli_offers_check_only(tmp_path):
    out = tmp_path / "bundle"
    write_bundle(COURSE, out)
    env = {**os.environ, "PYTHONPATH": str(out)}
    cli = [sys.executable, "-m", "cs_dense.course.cli"]
    # (from tmp_path: `python -m` puts the working folder first on sys.path)
    usage = subprocess.run([*cli, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert usage.returncode == 0 and "{check}" in usage.stdout, usage.stdout + usage.stderr
    missing = subprocess.run([*cli, "check", str(tmp_path / "nope.ipynb")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "cs-dense: error: no notebook at" in missing.stderr
    other = subprocess.run([*cli, "autograde", "x", "--out", "y"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert other.returncode == 2 and "invalid choice: 'autograde'" in other.stderr


# --------------------------------------------------------------------------------------
# The command line


def _bundle_command(capsys, *args: str) -> tuple[int, str]:
    """Run ``cs-dense bundle ARGS`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = main(["--root", str(COURSE.root), "bundle", *args])
    return code, capsys.readouterr().err


def test_cli_refuses_an_unknown_assignment(tmp_path, capsys):
    code, err = _bundle_command(capsys, str(tmp_path / "out"), "--reveal", FIRST, "--reveal", "99_nope")
    assert code == 2
    assert "cs-dense: error: unknown assignment '99_nope'; known: " + ", ".join(ASSIGNMENTS) in err
    assert not (tmp_path / "out").exists()
    code, err = _bundle_command(capsys, str(tmp_path / "out"), "--reveal-through", "99_nope")
    assert code == 2 and "unknown assignment '99_nope'" in err


def test_cli_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _bundle_command(capsys, str(tmp_path))
    assert code == 2 and err.startswith("cs-dense: error: ") and "is not empty" in err and "--force" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    for not_a_bundle in (tmp_path, COURSE.root, COURSE.notebooks):
        code, err = _bundle_command(capsys, str(not_a_bundle), "--force")
        assert code == 2 and "is not empty and is not an earlier bundle: not replacing it" in err
    assert (tmp_path / "notes.txt").read_text() == "mine" and COURSE.notebooks.is_dir()


def test_cli_warns_about_notebooks_whose_references_are_not_revealed(tmp_path, capsys):
    needs = dependency_map(COURSE)
    code, err = _bundle_command(capsys, str(tmp_path), "--force", "--reveal-through", ASSIGNMENTS[-1])
    assert code == 0 and not err, err
    code, err = _bundle_command(capsys, str(tmp_path), "--force", "--reveal", FIRST)
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("cs-dense: warning: notebook ")]
    expected = [a for a, owners in needs.items() if set(owners) - {FIRST}]
    assert [line.split()[3] for line in warned] == expected
    readme = (tmp_path / "README.md").read_text()
    for assignment, owners in needs.items():
        others = ", ".join(o for o in owners if o != assignment) or "-"
        assert f"| {assignment} | {others} |" in readme


# --------------------------------------------------------------------------------------
# A fresh virtual environment with only the bundle

HIDDEN_TESTS = re.compile(rf"^[ \t]*{re.escape(BEGIN_HIDDEN)}$.*?^[ \t]*{re.escape(END_HIDDEN)}[ \t]*$\n?", re.M | re.S)
RUNNER = textwrap.dedent("""
    import json, sys
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path, until, on_error, folder = sys.argv[1:]
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    if until == "first-exercise":
        first = next(i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("solution"))
        cells = cells[:first]
    nb.cells = [nbformat.v4.new_code_cell("import sys, cs_dense; print(sys.executable, cs_dense.__file__)"), *cells]
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}})
    errors = []
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as error:
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", str(index))
                errors.append({"cell": grade_id, "ename": error.ename, "evalue": error.evalue})
                if on_error == "stop":
                    break
    print(json.dumps({"errors": errors, "where": nb.cells[0].outputs[0]["text"].split()}))
""")


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A new venv holding the bundle's package (nothing revealed) and its pinned dependencies."""
    root = tmp_path_factory.mktemp("fresh")
    bundle = root / "bundle"
    write_bundle(COURSE, bundle)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(bundle)], check=True, env=env)
    print(f"\nfresh venv: created and `pip install` of the bundle in {time.perf_counter() - started:.0f} s")
    installed = subprocess.run([str(python), "-c", "import cs_dense; print(cs_dense.__file__)"],
                               capture_output=True, text=True, env=env, cwd=root, check=True).stdout.strip()
    assert installed.startswith(str(root / "venv")), installed
    return python, root


def _run(venv, notebook: Path, revealed: set[str], until: str = "end", on_error: str = "stop") -> list[dict]:
    """Run ``notebook`` in the fresh venv against a bundle revealing ``revealed``: the cells that failed.

    ``until="first-exercise"`` runs only the cells before the first exercise;
    ``on_error="continue"`` runs every cell whatever fails.
    """
    python, root = venv
    bundle = root / ("bundle-" + "-".join(sorted(a[:2] for a in revealed)))
    if not bundle.exists():
        write_bundle(COURSE, bundle, revealed)
    work = root / "work"
    work.mkdir(exist_ok=True)
    (root / "runner.py").write_text(RUNNER)
    # a student's notebook: hidden tests are only in the instructor's copy
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        cell.source = HIDDEN_TESTS.sub("", cell.source)
    nbformat.write(nb, work / notebook.name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # the bundle's package wins over the installed one; the graded budgets keep the run short
    env.update(PYTHONPATH=str(bundle), OMP_NUM_THREADS="1", NBGRADER_EXECUTION="autograde",
               JUPYTER_DATA_DIR=str(root / "jupyter"), MPLBACKEND="Agg")
    started = time.perf_counter()
    done = subprocess.run([str(python), str(root / "runner.py"), str(work / notebook.name), until, on_error, str(work)],
                          capture_output=True, text=True, env=env, cwd=work, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    executable, package = result["where"]
    assert executable.startswith(str(root / "venv")) and package == str(bundle / "cs_dense" / "__init__.py")
    failed = ", ".join(e["cell"] for e in result["errors"]) or "none"
    print(f"\n{notebook.parent.parent.name}/{notebook.name} to the {until}, revealing {', '.join(sorted(revealed)) or 'nothing'}: "
          f"{time.perf_counter() - started:.0f} s, failed: {failed}")
    return result["errors"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebooks_run_in_a_fresh_venv_with_only_the_bundle(assignment, venv):
    """For each notebook, against a bundle that reveals only what the dependency map names
    for it (earlier assignments; never its own), in a new venv:

    1. the solution notebook (a student with right answers) runs every cell: the cells
       after an exercise that run the package's version of it run the student's function;
    2. the released notebook runs every cell before its first exercise (pictures there use
       a library's version of what the student is about to write).
    """
    needs = set(dependency_map(COURSE)[assignment])
    (name,) = COURSE.notebook_names(assignment)
    assert needs <= {a for a in ASSIGNMENTS if a < assignment}
    errors = _run(venv, COURSE.solutions / assignment / f"{name}.ipynb", needs, on_error="continue")
    assert not errors, f"with {sorted(needs)} revealed: {errors}"
    errors = _run(venv, COURSE.notebooks / assignment / f"{name}.ipynb", needs, "first-exercise")
    assert not errors, f"the released notebook before its first exercise, with {sorted(needs)} revealed: {errors}"
