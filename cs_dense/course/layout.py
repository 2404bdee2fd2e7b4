"""Where the course's folders are, and how nbgrader is run against a course folder."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

#: The nbgrader cell delimiters the course uses (nbgrader's defaults).
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


@dataclass(frozen=True)
class Course:
    """A course repository: ``solutions/`` (nbgrader source) and ``notebooks/`` (release)."""

    root: Path

    @property
    def solutions(self) -> Path:
        return self.root / "solutions"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def assignments(self) -> list[str]:
        """Assignment ids: the folders of ``solutions/`` that hold a notebook, sorted."""
        if not self.solutions.is_dir():
            return []
        return sorted(d.name for d in self.solutions.iterdir() if d.is_dir() and any(d.glob("*.ipynb")))

    def notebook_names(self, assignment: str) -> list[str]:
        """Notebook stems of one assignment (usually one, named like the assignment)."""
        return sorted(p.stem for p in (self.solutions / assignment).glob("*.ipynb"))

    def check_assignment(self, assignment: str) -> None:
        """Raise ``ValueError`` naming the known assignments if ``assignment`` is not one."""
        known = self.assignments()
        if assignment not in known:
            raise ValueError(f"unknown assignment {assignment!r}; known: {', '.join(known) or 'none'}")


def find_course(start: str | Path | None = None) -> Course:
    """The course repository containing ``start`` (default: the working directory).

    Walks up looking for a folder with ``nbgrader_config.py`` and ``solutions/``; falls back
    to the repository this package is installed from.

    Raises:
        FileNotFoundError: neither is a course repository.
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file() and (folder / "solutions").is_dir():
            return Course(folder)
    installed = Path(__file__).resolve().parents[2]
    if (installed / "nbgrader_config.py").is_file() and (installed / "solutions").is_dir():
        return Course(installed)
    raise FileNotFoundError(
        f"no course repository (a folder with nbgrader_config.py and solutions/) at or above {here}; "
        "run this inside the cs_dense repository or pass --root"
    )


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for nbgrader subprocesses: this interpreter's ``bin`` first on PATH.

    nbgrader runs ``alembic`` as a command, so the virtual environment's ``bin`` must be on
    PATH even when ``cs-dense`` was started by its full path.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def write_course_config(folder: Path, *, cell_timeout: int | None = None, kernel: str | None = None,
                        db: Path | None = None) -> None:
    """Write an ``nbgrader_config.py`` for a temporary course folder using the course settings.

    The folder gets nbgrader's default layout (``source/``, ``release/``, ``submitted/``,
    ``autograded/``, ``feedback/``) and its own ``gradebook.db`` (or the gradebook ``db``). ``kernel`` names the
    kernelspec notebooks run with (the sandbox's); it talks over Unix sockets, since TCP
    does not cross the sandbox's network namespace.
    """
    lines = [
        "from cs_dense.course.settings import configure",
        "c = get_config()",
        "configure(c)",
        f"c.CourseDirectory.root = {str(folder)!r}",
        'c.CourseDirectory.source_directory = "source"',
        'c.CourseDirectory.release_directory = "release"',
        f"c.CourseDirectory.db_url = {'sqlite:///' + str(db or folder / 'gradebook.db')!r}",
    ]
    if cell_timeout is not None:
        lines.append(f"c.Execute.timeout = {int(cell_timeout)}")
    if kernel is not None:
        lines += [f"c.Execute.kernel_name = {kernel!r}", 'c.Execute.transport = "ipc"']
    (folder / "nbgrader_config.py").write_text("\n".join(lines) + "\n")


def run_nbgrader(args: list[str], cwd: Path, *, timeout: float | None = None, env: dict | None = None, started=None):
    """Run ``nbgrader ARGS`` in ``cwd``; return the CompletedProcess (output captured, not raised).

    ``started``, if given, is called with nbgrader's pid once it runs.

    Raises:
        subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds. nbgrader and
            every process it started (the kernel runs in a session of its own) are killed.
    """
    command = [sys.executable, "-m", "nbgrader", *args]
    # Temporary files of nbgrader and the kernel stay in (and are removed with) the course folder.
    scratch = cwd / "tmp"
    scratch.mkdir(exist_ok=True)
    with subprocess.Popen(
        command,
        cwd=cwd,
        env={**(env or tool_env()), "TMPDIR": str(scratch)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        if started is not None:
            started(process.pid)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def kill_tree(pid: int) -> None:
    """Kill a process and all its descendants."""
    try:
        parent = psutil.Process(pid)
        family = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(family, timeout=10)
