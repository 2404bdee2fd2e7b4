"""Autograde a folder of submissions with nbgrader, one isolated run per notebook.

Layout read: ``SUBMISSIONS/<student_id>/<assignment_id>/<notebook>.ipynb``.
Written: ``OUT/grades.csv`` (a row per student and assignment), ``OUT/cells.csv`` (a row per
student and grade cell: what ``cs-dense report`` reads) and
``OUT/feedback/<student_id>/<assignment_id>/<notebook>.html``.

What this adds to ``nbgrader autograde``:

* Each submission is graded in a temporary nbgrader course folder of its own, holding a
  copy of the gradebook with only that assignment and only that student's files, in a
  process tree that is killed when it runs past the time limit. A kernel death, a
  timeout or an unreadable file costs only that submission; the run completes.
* Every submission's grade is read from its own gradebook by this process, and the CSV
  and feedback are written by this process after grading, so a student's code cannot
  write another student's grade.
* Without the sandbox (in it they are read-only to student code), after each submission
  the course files (``cs_dense/``, ``solutions/``, ``data/``, nbgrader settings) and the
  Python environment (installed modules, Jupyter settings and kernels) are compared with a
  snapshot taken before grading. Course files that changed are restored and the
  submission that changed them scores zero with status ``tampered``; a changed
  environment cannot be restored, so grading stops with an error.
* Each kernel runs in a bubblewrap sandbox (:mod:`cs_dense.course.sandbox`) with memory
  and process limits; a job stopped by a limit gets status ``limit``. Without the sandbox
  (``sandbox=False``) student code runs as the grading user, which is only safe for code
  the grader trusts.
* Hidden tests run after the whole notebook and feedback shows only a pass/fail line for
  them (:mod:`cs_dense.course.preprocessors`); feedback pages show no markup from the
  submission and forbid every script.
* A submitted file or folder that is a symbolic link is ``invalid``: it is not followed.
* Rows are written as each submission finishes, so an interrupted run keeps what it
  graded; run again with the same ``--out`` and it grades only the rest, and again those
  whose grading machines were lost (``force=True`` grades everything again).
* With ``scheduler``, submissions are graded on the workers of a Dask cluster
  (:mod:`cs_dense.course.cluster`); rows and pages still are written here alone.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import html
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook

from cs_dense.course.layout import Course, run_nbgrader, tool_env, write_course_config
from cs_dense.course.release import generate
from cs_dense.course.sandbox import KERNEL_NAME, JobSandbox, Limits, describe_limit, find_bwrap

#: Statuses of a row of grades.csv.
STATUSES = ("graded", "crashed", "timeout", "limit", "invalid", "missing", "tampered")
#: Feedback pages forbid scripts and every resource but inline images and styles.
CONTENT_SECURITY_POLICY = (
    '<meta http-equiv="Content-Security-Policy" '
    "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:\">"
)
CSV_COLUMNS = ("student_id", "assignment_id", "score", "max_score", "status", "detail", "seconds")
CELL_COLUMNS = ("student_id", "assignment_id", "grade_id", "score", "max_score")
#: How a row begins whose grading machines all died (not the student's doing: graded again on resume).
MACHINE_LOST = "grading machine lost"
#: Default seconds one submission may take to grade, all cells together.
NOTEBOOK_TIMEOUT = 1800
#: Larger submitted notebooks are not read (outputs are cleared before grading anyway).
MAX_NOTEBOOK_BYTES = 64 << 20


@dataclass
class Grade:
    """One row of ``grades.csv``."""

    student_id: str
    assignment_id: str
    score: float
    max_score: float
    status: str
    detail: str = ""
    #: seconds grading took (0 for a submission that was not run)
    seconds: float = 0.0
    #: points of each grade cell, by grade id (empty unless graded)
    cells: dict[str, float] = field(default_factory=dict)


class EnvironmentTampered(RuntimeError):
    """A submission changed the installed environment; later grades could not be trusted."""


# --------------------------------------------------------------------------- integrity


class Snapshot:
    """What grading depends on, recorded before grading so changes can be found and undone.

    Course files are kept byte for byte (they are small) and restored on change; the
    environment is recorded by ``stat`` (size, times, inode), which is enough to notice a
    change: a file's ``ctime`` changes with any write and cannot be set back by the writer.
    """

    def __init__(self, course: Course) -> None:
        self.course_files = {p: p.read_bytes() for p in _course_files(course)}
        self.course = course
        self.environment = _stat_tree(_environment_files())

    def changes(self) -> tuple[list[Path], list[Path]]:
        """(changed course files, changed environment files), new and deleted ones included."""
        now = {p: p.read_bytes() for p in _course_files(self.course)}
        course = sorted(p for p in now.keys() | self.course_files.keys() if now.get(p) != self.course_files.get(p))
        env_now = _stat_tree(_environment_files())
        environment = sorted(
            p for p in env_now.keys() | self.environment.keys() if env_now.get(p) != self.environment.get(p)
        )
        return course, environment

    def restore(self) -> None:
        """Put the course files back as they were; remove files that were added."""
        for path in _course_files(self.course):
            if path not in self.course_files:
                path.unlink()
        for path, content in self.course_files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def _course_files(course: Course) -> list[Path]:
    files = [course.root / "nbgrader_config.py"]
    for folder in (course.root / "cs_dense", course.solutions, course.data):
        if folder.is_dir():
            files.extend(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [p for p in files if p.is_file()]


def _environment_files() -> list[Path]:
    """Python modules and start-up hooks, and Jupyter settings and kernels of this environment."""
    files: list[Path] = []
    purelib = Path(sysconfig.get_paths()["purelib"])
    for folder, _, names in os.walk(purelib):
        files.extend(Path(folder, n) for n in names if n.endswith((".py", ".pth")))
    for folder in (Path(sys.prefix, "etc"), Path(sys.prefix, "share", "jupyter"), Path("/etc/jupyter")):
        if folder.is_dir():
            files.extend(p for p in folder.rglob("*") if p.is_file())
    return files


def _stat_tree(paths: list[Path]) -> dict[Path, tuple]:
    stats = {}
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        stats[path] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return stats


# --------------------------------------------------------------------------- one submission


@dataclass
class _Job:
    student: str
    assignment: str
    notebooks: list[Path]
    started: float = 0.0
    finished: float = 0.0


def _read_problem(path: Path) -> str | None:
    """Why a submitted notebook cannot be graded, or None if it can."""
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        return f"{path.name} is {size / (1 << 20):.0f} MiB; a notebook may be at most {MAX_NOTEBOOK_BYTES >> 20} MiB (clear its outputs)"
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # unreadable JSON, wrong schema, bad encoding...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"{path.name} is not a readable notebook: {first[:300]}"
    return None


def _failure(log: str) -> tuple[str, str]:
    """Classify a failed ``nbgrader autograde`` from its log: (status, explanation)."""
    if "CellTimeoutError" in log:
        return "timeout", ("a cell went on running after it was interrupted at the cell time limit "
                           "(does your code catch KeyboardInterrupt, or ignore SIGINT?)")
    if "DeadKernelError" in log or "Kernel died" in log:
        return "crashed", "the Python kernel died while your notebook ran (e.g. os._exit, a segfault, running out of memory)"
    if "ValidationError" in log or "metadata" in log.lower():
        return "invalid", "the notebook's nbgrader cell metadata was changed or is inconsistent; start from the released notebook"
    last = [line for line in log.strip().splitlines() if "ERROR" in line or "Error" in line]
    return "crashed", f"grading failed: {(last[-1] if last else 'unknown error')[:300]}"


def kernel_threads(workers: int) -> str:
    """Threads each grading kernel may use: the cores shared among the workers (at least 1).

    An explicit ``OMP_NUM_THREADS`` in the environment wins. Without a cap, each kernel's
    PyTorch starts one thread per core, and two workers on two cores then run four busy
    threads whose synchronisation makes small training loops many times slower.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return os.environ["OMP_NUM_THREADS"]
    return str(max(1, (os.cpu_count() or 1) // workers))


#: What grading one submission yields: its row, its feedback pages and its autograded notebooks
#: (each by notebook name: HTML, and notebook JSON with outputs, for the course gradebook).
Graded = tuple[Grade, dict[str, str], dict[str, str]]


def _grade_one(job: _Job, master_db: Path, work: Path, course: Course, settings: dict) -> Graded:
    """Autograde one student's assignment in its own temporary nbgrader course, removed afterwards.

    Nothing is written outside that folder: the caller records the row and the pages.
    """
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="job_", dir=work))
    try:
        grade, pages, autograded = _grade_in(folder, job, master_db, course, settings)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    grade.seconds = round(time.monotonic() - started, 1)
    return grade, pages, autograded


def _grade_in(folder: Path, job: _Job, master_db: Path, course: Course, settings: dict) -> Graded:
    shutil.copy(master_db, folder / "gradebook.db")
    sandboxed = settings["bwrap"] is not None
    write_course_config(folder, cell_timeout=settings["cell_timeout"], kernel=KERNEL_NAME if sandboxed else None)
    (folder / "source" / job.assignment).mkdir(parents=True)
    submitted = folder / "submitted" / job.student / job.assignment
    submitted.mkdir(parents=True)
    for notebook in job.notebooks:
        shutil.copy(notebook, submitted / notebook.name)
    private = folder / "home"
    env = tool_env(
        CS_DENSE_DATA=str(course.data),
        IPYTHONDIR=str(private / "ipython"),
        JUPYTER_CONFIG_DIR=str(private / "jupyter"),
        MPLCONFIGDIR=str(private / "matplotlib"),
        HOME=str(private),
        OMP_NUM_THREADS=settings["threads"],
    )
    max_score = settings["max_scores"][job.assignment]
    args = ["autograde", job.assignment, "--student", job.student, "--force"]
    box = (JobSandbox(folder, course.root, settings["limits"], settings["bwrap"],
                      {"OMP_NUM_THREADS": settings["threads"], "CS_DENSE_DATA": str(course.data)})
           if sandboxed else contextlib.nullcontext())
    with box:
        try:
            result = run_nbgrader(args, cwd=folder, timeout=settings["notebook_timeout"],
                                  env={**env, **box.env()} if sandboxed else env,
                                  started=box.watch if sandboxed else None)
        except subprocess.TimeoutExpired:
            seconds = settings["notebook_timeout"]
            return Grade(job.student, job.assignment, 0.0, max_score, "timeout", f"grading took longer than {seconds} s"), {}, {}
        hit = box.limit_hit() if sandboxed else None
    if hit:
        return Grade(job.student, job.assignment, 0.0, max_score, "limit", describe_limit(hit, settings["limits"])), {}, {}
    if result.returncode != 0:
        status, detail = _failure(result.stdout + result.stderr)
        return Grade(job.student, job.assignment, 0.0, max_score, status, detail), {}, {}
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(job.assignment, job.student)
        score = float(submission.score)
        cells = {grade.name: float(grade.score) for notebook in submission.notebooks for grade in notebook.grades}
    feedback = run_nbgrader(["generate_feedback", job.assignment, "--student", job.student, "--force"], cwd=folder, env=env)
    detail = "" if feedback.returncode == 0 else "feedback could not be generated"
    generated = folder / "feedback" / job.student / job.assignment
    pages = {page.stem: _with_policy(page.read_text()) for page in generated.glob("*.html")} if generated.is_dir() else {}
    autograded = {path.stem: path.read_text() for path in (folder / "autograded" / job.student / job.assignment).glob("*.ipynb")}
    return Grade(job.student, job.assignment, score, max_score, "graded", detail, cells=cells), pages, autograded


def _with_policy(page: str) -> str:
    """The page with the Content-Security-Policy as the first element of its head."""
    head = re.search(r"<head(\s[^>]*)?>", page, re.IGNORECASE)
    if head is None:
        raise ValueError("a feedback page without <head>")
    return page[: head.end()] + CONTENT_SECURITY_POLICY + page[head.end():]


def _explain_page(grade: Grade, notebook_names: list[str], feedback_out: Path) -> None:
    """Feedback for a submission nbgrader could not grade: what happened and what to do."""
    target = feedback_out / grade.student_id / grade.assignment_id
    target.mkdir(parents=True, exist_ok=True)
    body = (
        f"<h1>{html.escape(grade.assignment_id)}: not graded ({html.escape(grade.status)})</h1>"
        f"<p>{html.escape(grade.detail)}</p>"
        f"<p>Score: {grade.score:g} / {grade.max_score:g}. Run <code>cs-dense check</code> on your notebook "
        "to see the visible tests before you submit.</p>"
    )
    for name in notebook_names:
        page = f"<!DOCTYPE html><html><head>{CONTENT_SECURITY_POLICY}</head><body>{body}</body></html>\n"
        (target / f"{name}.html").write_text(page)


# --------------------------------------------------------------------------- the run


def find_jobs(submissions: Path, course: Course, assignments: list[str] | None) -> tuple[list[_Job], list[Grade]]:
    """Submissions to grade, and rows for those that cannot be (missing or invalid)."""
    if not submissions.is_dir():
        raise ValueError(f"submissions folder {submissions} does not exist")
    students = sorted(d.name for d in submissions.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not students:
        raise ValueError(f"no student folders in {submissions} (expected <student_id>/<assignment_id>/<notebook>.ipynb)")
    if assignments:
        for assignment in assignments:
            course.check_assignment(assignment)
    else:
        present = {d.name for s in students for d in (submissions / s).iterdir() if d.is_dir()}
        assignments = [a for a in course.assignments() if a in present]
        if not assignments:
            raise ValueError(
                f"no folder under {submissions}/<student_id>/ is a known assignment ({', '.join(course.assignments())})"
            )
    jobs, rows = [], []
    for student in students:
        for assignment in assignments:
            names = course.notebook_names(assignment)
            links = _symlinks(submissions, student, assignment)
            if links:
                rows.append(Grade(student, assignment, 0.0, 0.0, "invalid",
                                  f"{', '.join(links)}: a symbolic link, which is not graded; submit the file itself"))
                continue
            found = [submissions / student / assignment / f"{n}.ipynb" for n in names]
            found = [p for p in found if p.is_file()]
            if not found:
                rows.append(Grade(student, assignment, 0.0, 0.0, "missing", f"no {assignment}/{names[0]}.ipynb submitted"))
                continue
            problems = [p for p in map(_read_problem, found) if p]
            if problems:
                rows.append(Grade(student, assignment, 0.0, 0.0, "invalid", "; ".join(problems)))
                continue
            jobs.append(_Job(student, assignment, found))
    return jobs, rows


def _symlinks(submissions: Path, student: str, assignment: str) -> list[str]:
    """Symbolic links among a submission's folders and files (relative paths)."""
    top = submissions / student / assignment
    candidates = [submissions / student, top]
    if top.is_dir() and not top.is_symlink() and not (submissions / student).is_symlink():
        for folder, dirs, files in os.walk(top):
            candidates += [Path(folder, n) for n in dirs + files]
    return [str(p.relative_to(submissions)) for p in candidates if p.is_symlink()]


def autograde(
    course: Course,
    submissions: Path,
    out: Path,
    *,
    workers: int = 1,
    assignments: list[str] | None = None,
    notebook_timeout: float = NOTEBOOK_TIMEOUT,
    cell_timeout: int | None = None,
    sandbox: bool = True,
    limits: Limits | None = None,
    force: bool = False,
    scheduler: str | None = None,
    gradebook: bool = False,
    progress=print,
) -> list[Grade]:
    """Grade every submission; write ``out/grades.csv`` and ``out/feedback/``; return the rows.

    Args:
        course: the course repository (its ``solutions/`` define the tests and points).
        submissions: ``<student_id>/<assignment_id>/<notebook>.ipynb`` folders.
        out: output folder (created; an existing ``feedback/`` in it is replaced).
        workers: submissions graded at once on this machine (not with ``scheduler``).
        assignments: only these assignments (default: every known one found in submissions).
        notebook_timeout: seconds one submission may take in all.
        cell_timeout: seconds one cell may take (default: the course setting).
        sandbox: run each kernel in the bubblewrap sandbox (``False`` only for trusted code).
        limits: memory, task and disk limits of each sandboxed job (default :class:`Limits`).
        force: grade every submission, even those ``out/grades.csv`` already has a row for
            (by default those rows, their cells and their feedback are kept).
        scheduler: address of a Dask scheduler (``tcp://HOST:8786``): grade on its workers
            (:mod:`cs_dense.course.cluster`) instead of on this machine. Needs the sandbox.
        gradebook: also record each graded submission in the course's own nbgrader gradebook
            and ``submitted/`` / ``autograded/`` folders (:mod:`cs_dense.course.gradebook`), for
            formgrader, ``nbgrader export`` and ``nbgrader generate_feedback``.
        progress: called with a line of text per graded submission: done / total, a bar,
            the time left at the pace so far, and the row.

    Raises:
        ValueError: bad arguments or an empty submissions folder.
        SandboxUnavailable: ``sandbox`` is true and bubblewrap is missing or cannot run.
        EnvironmentTampered: a submission changed installed files; the rows graded so far
            are written first.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if scheduler is not None and not sandbox:
        raise ValueError("grading on a Dask cluster needs the sandbox: grading machines run student code "
                         "only inside it")
    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    jobs, rows = find_jobs(submissions, course, assignments)
    # on a cluster, each grading machine finds its own bubblewrap (and is not used without)
    bwrap = find_bwrap() if sandbox and scheduler is None else None
    out.mkdir(parents=True, exist_ok=True)
    feedback_out = out / "feedback"
    kept = [] if force else previous_rows(out)
    done = {(r.student_id, r.assignment_id) for r in kept}
    jobs = [j for j in jobs if (j.student, j.assignment) not in done]
    rows = [r for r in rows if (r.student_id, r.assignment_id) not in done]
    if not kept and feedback_out.exists():
        shutil.rmtree(feedback_out)
    feedback_out.mkdir(exist_ok=True)
    for job in jobs:  # a half-graded submission's old page must not outlive it
        shutil.rmtree(feedback_out / job.student / job.assignment, ignore_errors=True)
    # In the sandbox the course and the environment are read-only to student code; without
    # it, a snapshot catches (and undoes) changes. Not both: the snapshot would undo an
    # instructor's own edits made during a long run.
    snapshot = Snapshot(course) if not sandbox else None
    with tempfile.TemporaryDirectory(prefix="cs_dense_autograde_") as tmp:
        work = Path(tmp)
        settings = {"notebook_timeout": notebook_timeout, "cell_timeout": cell_timeout, "max_scores": {},
                    "threads": kernel_threads(workers), "bwrap": bwrap, "limits": limits or Limits()}
        master_dbs = {}
        for assignment in sorted({j.assignment for j in jobs} | {r.assignment_id for r in rows}):
            master_dbs[assignment], settings["max_scores"][assignment] = master_gradebook(course, assignment, work)
        for row in rows:
            row.max_score = settings["max_scores"][row.assignment_id]
        cells = {a: grade_cells(course, a) for a in {r.assignment_id for r in kept} | set(settings["max_scores"])}
        results = Results(out, cells, kept + rows)
        book = None
        if gradebook:
            from cs_dense.course.gradebook import CourseGradebook  # nbgrader's preprocessors only when asked for

            book = CourseGradebook(course, sorted(settings["max_scores"]))
        submitted = {(j.student, j.assignment): j.notebooks for j in jobs}
        for row in rows:
            _explain_page(row, course.notebook_names(row.assignment_id), feedback_out)
            if book:
                book.record(row, [], {})

        def record(grade: Grade, pages: dict[str, str], autograded: dict[str, str]) -> None:
            if book:
                book.record(grade, submitted[grade.student_id, grade.assignment_id], autograded)
            if grade.status != "graded":
                _explain_page(grade, course.notebook_names(grade.assignment_id), feedback_out)
            elif pages:
                target = feedback_out / grade.student_id / grade.assignment_id
                target.mkdir(parents=True, exist_ok=True)
                for name, page in pages.items():
                    (target / f"{name}.html").write_text(page)
            results.add(grade)

        try:
            if scheduler is None:
                _run_jobs(jobs, master_dbs, work, course, settings, snapshot, workers, record, progress)
            else:
                from cs_dense.course.cluster import grade_on_cluster  # Dask only when asked for

                grade_on_cluster(jobs, scheduler, course, settings, record, progress)
        finally:
            results.write()
    return sorted(results.rows, key=lambda r: (r.student_id, r.assignment_id))


def master_gradebook(course: Course, assignment: str, work: Path) -> tuple[Path, float]:
    """The assignment's nbgrader gradebook, made in ``work`` from the solutions: (path, max score)."""
    master = Path(tempfile.mkdtemp(prefix=f"master_{assignment}_", dir=work))
    generate(course, assignment, master, with_db=True)
    with Gradebook(f"sqlite:///{master / 'gradebook.db'}") as gradebook:
        return master / "gradebook.db", float(gradebook.find_assignment(assignment).max_score)


def _run_jobs(jobs, master_dbs, work, course, settings, snapshot, workers, record, progress) -> None:
    """Grade the jobs, checking the snapshot after each; rerun alone any job that may have tampered.

    ``record`` receives each final row and its pages as soon as they are known.
    """
    pace = _Pace(len(jobs))

    def run(job: _Job) -> Graded:
        job.started = time.monotonic()
        graded = _grade_one(job, master_dbs[job.assignment], work, course, settings)
        job.finished = time.monotonic()
        return graded

    def audit(job: _Job) -> bool:
        """True if the snapshot still holds; otherwise restore and say which jobs may be at fault."""
        if snapshot is None:
            return True
        changed_course, changed_env = snapshot.changes()
        if changed_env:
            raise EnvironmentTampered(
                f"while {job.student}/{job.assignment} was graded, installed files changed: "
                f"{', '.join(map(str, changed_env[:5]))}. Reinstall the environment "
                "(pip install --force-reinstall) before grading again."
            )
        if changed_course:
            snapshot.restore()
            return False
        return True

    graded: dict[int, Graded] = {}
    suspects: set[int] = set()
    last_clean = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            graded[i] = future.result()
            now = time.monotonic()
            if not audit(jobs[i]):
                # Anyone running between the last clean check and now may be at fault.
                suspects |= {k for k, j in enumerate(jobs) if j.started < now and (j.finished == 0 or j.finished > last_clean)}
            last_clean = now
            if i not in suspects:
                record(*graded[i])
                progress(pace.step() + _line(graded[i][0]))
    for i in sorted(suspects):
        job = jobs[i]
        graded[i] = run(job)
        if not audit(job):
            first = graded[i][0]
            graded[i] = Grade(job.student, job.assignment, 0.0, first.max_score, "tampered",
                              "the notebook modified the course's grading files", first.seconds), {}, {}
        record(*graded[i])
        progress(pace.step() + _line(graded[i][0]) + "  (re-graded alone)")


class _Pace:
    """Done / total, a bar, and the time left at the pace so far."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()

    def step(self) -> str:
        self.done += 1
        left = (time.monotonic() - self.start) / self.done * (self.total - self.done)
        bar = "#" * round(20 * self.done / self.total)
        return f"[{self.done:>{len(str(self.total))}}/{self.total} {bar:<20} {_duration(left)} left] "


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _line(grade: Grade) -> str:
    return f"{grade.student_id:>16} {grade.assignment_id:<24} {grade.score:6.1f} / {grade.max_score:<6.1f} {grade.status}"


class Results:
    """The rows of a run, written to ``grades.csv`` and ``cells.csv`` as each one arrives."""

    def __init__(self, out: Path, cells: dict[str, list[tuple[str, float]]], rows: list[Grade]) -> None:
        self.out, self.cells, self.rows = out, cells, list(rows)
        self.write()

    def add(self, grade: Grade) -> None:
        self.rows.append(grade)
        self.write()

    def write(self) -> None:
        """Rewrite both files whole, through a temporary file each, so neither is ever half written."""
        cells = functools.partial(write_cells_csv, cells=self.cells)
        for name, writer in (("grades.csv", write_csv), ("cells.csv", cells)):
            partial = self.out / f".{name}.partial"
            writer(self.rows, path=partial)
            partial.replace(self.out / name)


def previous_rows(out: Path) -> list[Grade]:
    """The rows an earlier run wrote to ``out`` (none if it wrote none).

    Raises:
        ValueError: ``grades.csv`` or ``cells.csv`` is there but not as this version writes them.
    """
    paths = out / "grades.csv", out / "cells.csv"
    if not paths[0].is_file():
        return []
    tables = []
    for path, columns in zip(paths, (CSV_COLUMNS, CELL_COLUMNS)):
        with open(path, newline="") if path.is_file() else contextlib.nullcontext([]) as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != columns:
                raise ValueError(f"{path} is not a results file of this version of cs-dense; grade with --force "
                                 "to start again, or choose another --out")
            tables.append(list(reader))
    grades, cells = tables
    rows = []
    for g in grades:
        if g["status"] in ("missing", "invalid"):
            continue  # found again, in a moment, in case the student has submitted since
        if g["detail"].startswith(MACHINE_LOST):
            continue  # graded again
        mine = {c["grade_id"]: float(c["score"]) for c in cells
                if (c["student_id"], c["assignment_id"]) == (g["student_id"], g["assignment_id"])}
        rows.append(Grade(g["student_id"], g["assignment_id"], float(g["score"]), float(g["max_score"]), g["status"],
                          g["detail"], float(g["seconds"]), mine))
    return rows


def write_csv(rows: list[Grade], path: Path) -> None:
    """Write the rows, sorted by student then assignment."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for r in sorted(rows, key=lambda r: (r.student_id, r.assignment_id)):
            writer.writerow([r.student_id, r.assignment_id, f"{r.score:g}", f"{r.max_score:g}", r.status, r.detail,
                             f"{r.seconds:.1f}"])


def grade_cells(course: Course, assignment: str) -> list[tuple[str, float]]:
    """(grade id, points) of every autograded cell of an assignment, in notebook order.

    Answers graded by hand (grade cells that are also solution cells) are left out: they score
    in the course gradebook, once graded there.
    """
    cells = []
    for name in course.notebook_names(assignment):
        for cell in nbformat.read(course.solutions / assignment / f"{name}.ipynb", as_version=4).cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade") and not meta.get("solution"):
                cells.append((meta["grade_id"], float(meta.get("points", 0))))
    return cells


def write_cells_csv(rows: list[Grade], path: Path, cells: dict[str, list[tuple[str, float]]]) -> None:
    """A row per submission and grade cell; a submission that was not graded scores 0 in each."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CELL_COLUMNS)
        for r in sorted(rows, key=lambda r: (r.student_id, r.assignment_id)):
            for grade_id, points in cells[r.assignment_id]:
                writer.writerow([r.student_id, r.assignment_id, grade_id, f"{r.cells.get(grade_id, 0.0):g}", f"{points:g}"])


def format_table(rows: list[Grade]) -> str:
    """A plain-text table of grades for the terminal."""
    header = f"{'student':<16} {'assignment':<24} {'score':>13}  {'status':<9} detail"
    lines = [header, "-" * len(header)]
    for r in sorted(rows, key=lambda r: (r.student_id, r.assignment_id)):
        lines.append(
            f"{r.student_id:<16} {r.assignment_id:<24} {r.score:6.1f} / {r.max_score:<5g}  {r.status:<9} {r.detail}"
        )
    return "\n".join(lines)
