"""The repository's generated files match their sources, and the CLI behaves."""

from __future__ import annotations

import filecmp
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from cs_dense.course.layout import BEGIN_HIDDEN, BEGIN_SOLUTION, find_course
from cs_dense.course.release import release
from cs_dense.course.samples import BUGS, SAMPLE_STUDENTS, write_samples

COURSE = find_course(Path(__file__).parent)
ASSIGNMENTS = COURSE.assignments()


def _same_tree(left: Path, right: Path) -> list[str]:
    """Relative paths that differ between two folders (missing on either side, or different bytes)."""
    comparison = filecmp.dircmp(left, right, ignore=["__pycache__", ".ipynb_checkpoints"])
    differ = [*comparison.left_only, *comparison.right_only, *comparison.diff_files, *comparison.funny_files]
    for name, sub in comparison.subdirs.items():
        differ += [f"{name}/{d}" for d in _same_tree(left / name, right / name)]
    # dircmp compares shallowly (size and time); compare bytes of the common files too.
    differ += [f for f in comparison.same_files if (left / f).read_bytes() != (right / f).read_bytes()]
    return differ


def test_the_course_has_assignments():
    assert "03_iou_nms_map" in ASSIGNMENTS


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebooks_match_a_fresh_release(assignment, tmp_path):
    copy = type(COURSE)(tmp_path)
    (tmp_path / "solutions").symlink_to(COURSE.solutions)
    (tmp_path / "nbgrader_config.py").symlink_to(COURSE.root / "nbgrader_config.py")
    release(copy, [assignment])
    drift = _same_tree(COURSE.notebooks / assignment, copy.notebooks / assignment)
    assert not drift, f"notebooks/{assignment} differs from `cs-dense release` output in {drift}; run `make release`"


@pytest.mark.slow
def test_samples_match_a_fresh_generation(tmp_path):
    write_samples(COURSE, tmp_path)
    drift = _same_tree(COURSE.data / "samples", tmp_path)
    assert not drift, f"data/samples differs from `cs-dense samples` output in {drift}; run `make samples`"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_holds_no_solution_and_no_hidden_test(assignment):
    for path in (COURSE.notebooks / assignment).glob("*.ipynb"):
        text = path.read_text()
        assert BEGIN_SOLUTION not in text and BEGIN_HIDDEN not in text, path
        source = nbformat.read(COURSE.solutions / assignment / path.name, as_version=4)
        released = nbformat.read(path, as_version=4)
        solutions = {c.metadata["nbgrader"]["grade_id"]: c for c in source.cells if c.metadata["nbgrader"].get("solution")}
        for cell in released.cells:
            answer = solutions.get(cell.metadata["nbgrader"]["grade_id"])
            if answer is None:
                continue
            if cell.cell_type == "code":
                assert "raise NotImplementedError()" in cell.source, cell.metadata["nbgrader"]["grade_id"]
            else:  # a written answer: nbgrader's stub, and not a word of the model answer
                assert cell.source == "YOUR ANSWER HERE", cell.metadata["nbgrader"]["grade_id"]
                assert not any(line.strip() in text for line in answer.source.splitlines() if len(line.strip()) > 15)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebooks_are_committed_without_outputs(assignment):
    for path in (COURSE.solutions / assignment).glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        with_output = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.cell_type == "code" and c.outputs]
        assert not with_output, f"{path.name}: clear the outputs of {with_output}"
        ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade_ids"


def test_every_assignment_has_partial_bugs():
    assert set(BUGS) == set(ASSIGNMENTS)
    assert SAMPLE_STUDENTS == ("complete", "partial", "blank")


def test_environment_yml_mirrors_pyproject_pins():
    project = tomllib.loads((COURSE.root / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | {p for extra in project["optional-dependencies"].values() for p in extra}
    listed = set(re.findall(r"^\s+- ([A-Za-z0-9_.\[\]-]+==[^\s]+)$", (COURSE.root / "environment.yml").read_text(), re.M))
    assert pins == listed


def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    cli = [sys.executable, "-m", "cs_dense.course.cli"]
    missing = subprocess.run([*cli, "check", str(tmp_path / "nope.ipynb")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no notebook at" in missing.stderr
    (tmp_path / "bad.ipynb").write_text("{")
    bad = subprocess.run([*cli, "check", str(tmp_path / "bad.ipynb")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a readable notebook" in bad.stderr
    unknown = subprocess.run([*cli, "--root", str(COURSE.root), "release", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown assignment 'nope'" in unknown.stderr
