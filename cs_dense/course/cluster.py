"""Grading on a Dask cluster: the coordinator sends submissions, grading machines send back rows.

The coordinator (``cs-dense autograde --scheduler tcp://HOST:8786``) connects to a running
Dask scheduler. Grading machines join it with ``dask worker tcp://HOST:8786 --resources
grade=S --nthreads S``, started inside their copy of the course repository; each ``grade``
slot grades one submission at a time. What crosses the network:

* to a worker, a :class:`Request`: the student's notebooks as bytes, the time limits, and
  the coordinator's :func:`course_fingerprint`;
* back, the row and the feedback pages as data. Only the coordinator writes
  ``grades.csv``, ``cells.csv`` and feedback.

Before grading, every worker reports its fingerprint and whether bubblewrap works there;
the coordinator uses only workers whose course (package, solutions, data, nbgrader settings,
library versions) is its own, and each worker checks the fingerprint again on every job. A
worker lost mid-job (machine down, process killed) has its job retried elsewhere by Dask;
after ``distributed.scheduler.allowed-failures`` losses the row is ``crashed`` with
"grading machine lost".
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.metadata
import platform
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cs_dense.course.autograde import (
    MACHINE_LOST,
    Grade,
    Graded,
    _grade_one,
    _Job,
    _line,
    _Pace,
    kernel_threads,
    master_gradebook,
)
from cs_dense.course.layout import Course, find_course
from cs_dense.course.sandbox import Limits, SandboxUnavailable, find_bwrap

#: Libraries whose versions must agree between the coordinator and the grading machines.
LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "captum", "pycocotools", "nbgrader", "nbclient", "ipykernel")
#: Seconds without any finished job after which the coordinator looks for live workers.
IDLE_CHECK = 30.0


class CourseMismatch(RuntimeError):
    """A grading machine's course is not the coordinator's; it refuses the job."""


def course_fingerprint(course: Course) -> dict[str, str]:
    """A digest of each part of the course that decides a grade.

    Parts: ``package`` (the installed ``cs_dense`` sources), ``solutions``, ``data`` (but the
    sample submissions), ``settings`` (``nbgrader_config.py``) and ``libraries`` (Python and
    :data:`LIBRARIES` versions).
    """
    import cs_dense

    package = Path(cs_dense.__file__).resolve().parent
    samples = course.data / "samples"
    versions = [f"python {platform.python_version()}"]
    versions += [f"{name} {importlib.metadata.version(name)}" for name in LIBRARIES]
    return {
        "package": _digest_files(package, lambda p: "__pycache__" not in p.parts),
        "solutions": _digest_files(course.solutions, lambda p: ".ipynb_checkpoints" not in p.parts),
        "data": _digest_files(course.data, lambda p: samples not in p.parents),
        "settings": _digest_files(course.root, lambda p: p.name == "nbgrader_config.py", recursive=False),
        "libraries": hashlib.sha256("\n".join(versions).encode()).hexdigest(),
    }


def _digest_files(folder: Path, keep, recursive: bool = True) -> str:
    digest = hashlib.sha256()
    files = folder.rglob("*") if recursive else folder.glob("*")
    for path in sorted(p for p in files if p.is_file() and keep(p)):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def differences(mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """The parts of two fingerprints that differ."""
    return sorted(part for part in mine.keys() | theirs.keys() if mine.get(part) != theirs.get(part))


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class Request:
    """One submission to grade, as sent to a worker."""

    student: str
    assignment: str
    #: notebook file name -> its bytes
    notebooks: dict[str, bytes]
    fingerprint: dict[str, str]
    notebook_timeout: float
    cell_timeout: int | None
    limits: Limits


class _Machine:
    """What a worker process keeps between jobs: its course, fingerprint and master gradebooks."""

    def __init__(self) -> None:
        self.course = find_course()
        self.fingerprint = course_fingerprint(self.course)
        self.work = Path(tempfile.mkdtemp(prefix="cs_dense_worker_"))
        atexit.register(shutil.rmtree, self.work, True)
        self.masters: dict[str, tuple[Path, float]] = {}
        self.lock = threading.Lock()

    def master(self, assignment: str) -> tuple[Path, float]:
        with self.lock:
            if assignment not in self.masters:
                self.masters[assignment] = master_gradebook(self.course, assignment, self.work)
            return self.masters[assignment]


@functools.cache
def _machine() -> _Machine:
    return _Machine()


def _slots() -> int:
    """``grade`` slots of the worker this runs in (1 outside a worker)."""
    from distributed import get_worker

    try:
        return int(get_worker().state.total_resources.get("grade", 1))
    except ValueError:  # not in a worker
        return 1


def describe_machine() -> dict:
    """What the coordinator needs to know about a worker before sending it jobs."""
    machine = _machine()
    try:
        bwrap = find_bwrap()
    except SandboxUnavailable as error:
        bwrap, problem = None, str(error)
    else:
        problem = ""
    return {"host": socket.gethostname(), "course": str(machine.course.root), "fingerprint": machine.fingerprint,
            "bwrap": bwrap, "bwrap_problem": problem}


def grade(request: Request) -> Graded:
    """Grade one submission on this machine (runs in a Dask worker); return the row and pages.

    Raises:
        CourseMismatch: this machine's course differs from the coordinator's.
    """
    machine = _machine()
    wrong = differences(request.fingerprint, machine.fingerprint)
    if wrong:
        raise CourseMismatch(f"{socket.gethostname()}:{machine.course.root}: its {', '.join(wrong)} "
                             "differ from the coordinator's")
    master_db, max_score = machine.master(request.assignment)
    inbox = Path(tempfile.mkdtemp(prefix="submission_", dir=machine.work))
    try:
        paths = []
        for name, content in request.notebooks.items():
            paths.append(inbox / Path(name).name)
            paths[-1].write_bytes(content)
        settings = {"notebook_timeout": request.notebook_timeout, "cell_timeout": request.cell_timeout,
                    "max_scores": {request.assignment: max_score}, "threads": kernel_threads(_slots()),
                    "bwrap": find_bwrap(), "limits": request.limits}
        job = _Job(request.student, request.assignment, paths)
        return _grade_one(job, master_db, machine.work, machine.course, settings)
    finally:
        shutil.rmtree(inbox, ignore_errors=True)


# --------------------------------------------------------------------------- coordinator side


def grade_on_cluster(jobs: list[_Job], scheduler: str, course: Course, settings: dict, record, progress) -> None:
    """Grade the jobs on the Dask cluster at ``scheduler``; ``record`` each row and its pages.

    Raises:
        ValueError: the scheduler cannot be reached, or no worker can grade this course, or
            some jobs were refused (their rows are not written: run again to grade them).
    """
    from distributed import Client, KilledWorker, wait

    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as error:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
    with client:
        fingerprint = course_fingerprint(course)
        usable = _usable_workers(client, fingerprint, progress)
        pace = _Pace(len(jobs))
        futures = {}
        for job in jobs:
            request = Request(job.student, job.assignment, {p.name: p.read_bytes() for p in job.notebooks}, fingerprint,
                              settings["notebook_timeout"], settings["cell_timeout"], settings["limits"])
            future = client.submit(grade, request, key=f"grade-{job.student}-{job.assignment}-{time.time_ns()}",
                                   resources={"grade": 1}, workers=usable, allow_other_workers=False, pure=False)
            futures[future] = job
        refused = []
        pending = set(futures)
        while pending:
            try:
                finished, pending = wait(pending, timeout=IDLE_CHECK, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished for a while: is anyone left to grade?
                if not set(workers_now(client)) & set(usable):
                    raise ValueError(f"every grading machine that has this course has left the cluster; {len(pending)} "
                                     "submissions are not graded yet: start workers and run the same command "
                                     "again") from None
                continue
            for future in finished:
                job = futures.pop(future)
                try:
                    graded = future.result()
                except KilledWorker as error:
                    detail = (f"{MACHINE_LOST}: the {error.allowed_failures + 1} Dask workers that took it died "
                              f"(the last, {error.last_worker.address}); run the same command again to grade it")
                    graded = Grade(job.student, job.assignment, 0.0, settings["max_scores"][job.assignment], "crashed",
                                   detail), {}, {}
                except CourseMismatch as error:
                    refused.append(f"{job.student}/{job.assignment} ({error})")
                    continue
                record(*graded)
                progress(pace.step() + _line(graded[0]))
        if refused:
            raise ValueError(f"{len(refused)} submissions were refused by grading machines whose course changed during "
                             f"the run, and are not graded: {'; '.join(refused[:3])}. Run the same command again.")


def workers_now(client) -> dict[str, dict]:
    """The scheduler's workers now, by address, asked afresh.

    Not ``client.scheduler_info()``: it returns the client's cached copy, which a periodic
    refresh on the client's own thread replaces every 2 s with one that lists no worker.
    """
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]


def _usable_workers(client, fingerprint: dict[str, str], progress) -> list[str]:
    """Addresses of the workers that can grade this course; say why the others are not used."""
    try:
        machines = client.run(describe_machine)
    except Exception as error:
        raise ValueError(f"could not ask the Dask workers about their course: {type(error).__name__}: {error} "
                         "(is cs_dense installed where each worker runs?)") from None
    resources = {address: info["resources"] for address, info in workers_now(client).items()}
    usable = []
    for address, machine in sorted(machines.items()):
        wrong = differences(fingerprint, machine["fingerprint"])
        if wrong:
            why = f"its {', '.join(wrong)} differ from this course's (update that machine's repository and venv)"
        elif machine["bwrap"] is None:
            why = f"no sandbox there: {machine['bwrap_problem']}"
        elif resources.get(address, {}).get("grade", 0) < 1:
            why = "it was started without a grade slot (dask worker ... --resources grade=S)"
        else:
            usable.append(address)
            continue
        progress(f"not grading on {address} ({machine['host']}:{machine['course']}): {why}")
    if not usable:
        raise ValueError(f"no Dask worker can grade this course ({len(machines)} connected); see the messages above")
    slots = sum(resources[a]["grade"] for a in usable)
    progress(f"grading on {len(usable)} Dask workers with {slots:g} grade slots")
    return usable
