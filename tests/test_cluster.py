"""Grading on Dask: a real scheduler and ``dask worker`` processes started on localhost.

The toy course is graded once on this machine and once on the cluster, where a worker is
killed while it grades; the rows must be the same. Fingerprints and refusals are checked
without a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from cs_dense.course import cluster
from cs_dense.course.autograde import autograde
from cs_dense.course.cli import main
from cs_dense.course.release import release
from cs_dense.course.samples import write_samples
from cs_dense.course.sandbox import Limits
from toy_course import ASSIGNMENT, make_toy_course, nbgrader_export, require_sandbox

DASK = str(Path(sys.executable).parent / "dask")
NOTEBOOK = f"{ASSIGNMENT}.ipynb"


class Cluster:
    """A scheduler and workers, each ``dask`` command in a process group of its own."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None) -> None:
        self.folder, self.workers = folder, {}
        self.file = folder / "scheduler.json"
        self.scheduler = self._start(["scheduler", "--port", "0", "--scheduler-file", str(self.file)], folder,
                                     "scheduler", env)
        deadline = time.monotonic() + 60
        while not self.file.is_file():
            assert time.monotonic() < deadline and self.scheduler.poll() is None, (folder / "scheduler.log").read_text()
            time.sleep(0.2)
        time.sleep(0.5)  # the file is written before it is complete
        self.address = json.loads(self.file.read_text())["address"]

    def _start(self, args: list[str], cwd: Path, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        return subprocess.Popen([DASK, *args, "--no-dashboard"], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)

    def add_worker(self, name: str, course_root: Path, *, slots: int = 1) -> None:
        """A grading machine: ``dask worker`` started in a course repository, as the README says."""
        self.workers[name] = self._start(["worker", "--scheduler-file", str(self.file), "--name", name,
                                          "--nthreads", str(slots), "--resources", f"grade={slots}"],
                                         course_root, name)

    def wait_for_workers(self) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(len(self.workers), timeout=120)

    def kill_a_busy_worker(self) -> set[str]:
        """Kill the whole process group (nanny, worker, nbgrader, kernel) of a worker grading now.

        Returns the students whose jobs the scheduler had given that worker (running or queued).
        """
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            processing = client.processing()
            busy = {info["name"]: processing[address] for address, info in cluster.workers_now(client).items()
                    if processing[address]}
        name = sorted(busy)[0]
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait()
        return {key.split("-")[1] for key in busy[name]}

    def killing_progress(self, lines: list[str], killed: list[set[str]]):
        """A progress callback keeping the lines that, at the first graded row, kills a busy worker."""

        def progress(line: str) -> None:
            lines.append(line)
            if line.startswith("[1/") and not killed:
                killed.append(self.kill_a_busy_worker())

        return progress

    def close(self) -> None:
        for process in [*self.workers.values(), self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def cluster_factory(tmp_path):
    started = []

    def start(env: dict[str, str] | None = None) -> Cluster:
        folder = tmp_path / f"cluster{len(started)}"
        folder.mkdir()
        started.append(Cluster(folder, env))
        return started[-1]

    yield start
    for c in started:
        c.close()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy course and a class: two complete, two blank, two with a wrong ``add``, one missing."""
    root = tmp_path_factory.mktemp("toy")
    course = make_toy_course(root / "course")
    release(course)
    write_samples(course)
    samples = course.data / "samples"
    wrong = nbformat.read(samples / "complete" / ASSIGNMENT / NOTEBOOK, as_version=4)
    cell = next(c for c in wrong.cells if c.metadata["nbgrader"]["grade_id"] == "add")
    cell.source = "def add(a, b):\n    return a - b"
    submissions = root / "submissions"
    for student, source in [("ada", "complete"), ("bob", "blank"), ("cy", "wrong"), ("dee", "complete"),
                            ("eve", "blank"), ("fay", "wrong")]:
        folder = submissions / student / ASSIGNMENT
        folder.mkdir(parents=True)
        if source == "wrong":
            nbformat.write(wrong, folder / NOTEBOOK)
        else:
            shutil.copy(samples / source / ASSIGNMENT / NOTEBOOK, folder / NOTEBOOK)
    (submissions / "gus").mkdir()  # submitted nothing
    return course, submissions


def _rows(out: Path) -> list[list[str]]:
    """grades.csv without the seconds column, and cells.csv, as lists of fields."""
    grades = [line.split(",")[:-1] for line in (out / "grades.csv").read_text().splitlines()]
    return grades + [line.split(",") for line in (out / "cells.csv").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_grade_like_one_machine_when_one_dies_mid_run(toy, cluster_factory, tmp_path, monkeypatch):
    require_sandbox()
    monkeypatch.setattr(cluster, "IDLE_CHECK", 1.0)  # look for live workers while jobs run, as on long notebooks
    course, submissions = toy
    here = tmp_path / "here"
    local = autograde(course, submissions, here, workers=2, progress=lambda line: None)
    assert [(r.student_id, r.score, r.status) for r in local] == [
        ("ada", 5, "graded"), ("bob", 0, "graded"), ("cy", 3, "graded"), ("dee", 5, "graded"),
        ("eve", 0, "graded"), ("fay", 3, "graded"), ("gus", 0, "missing")]  # the toy's points, by hand

    c = cluster_factory()
    c.add_worker("w1", course.root)
    c.add_worker("w2", course.root)
    c.wait_for_workers()
    lines, killed = [], []
    progress = c.killing_progress(lines, killed)

    there = tmp_path / "there"
    remote = autograde(course, submissions, there, scheduler=c.address, gradebook=True, progress=progress)
    assert killed and killed[0]
    assert lines[0] == "grading on 2 Dask workers with 2 grade slots"
    assert [line.split("]")[0].split()[0] for line in lines[1:]] == [f"[{i}/6" for i in range(1, 7)]
    assert [(r.student_id, r.score, r.status, r.detail, r.cells) for r in remote] == \
           [(r.student_id, r.score, r.status, r.detail, r.cells) for r in local]
    assert _rows(there) == _rows(here)
    pages = sorted(p.relative_to(there / "feedback") for p in (there / "feedback").rglob("*.html"))
    assert pages == sorted(p.relative_to(here / "feedback") for p in (here / "feedback").rglob("*.html"))
    assert len(pages) == 7
    # the coordinator filled the course gradebook from the workers' autograded notebooks
    assert nbgrader_export(course) == {r.student_id: (r.score, r.max_score) for r in local if r.status == "graded"}
    ada = (there / "feedback" / "ada" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "Content-Security-Policy" in ada and "grader's cross-check" not in ada  # the toy has no probes


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_job_whose_machine_keeps_dying_is_crashed_and_a_foreign_worker_is_not_used(toy, cluster_factory, tmp_path):
    require_sandbox()
    course, submissions = toy
    foreign = tmp_path / "foreign"  # the same course but for one setting
    shutil.copytree(course.root, foreign, symlinks=True)
    settings = foreign / "nbgrader_config.py"
    settings.write_text(settings.read_text() + "c.Execute.timeout = 5\n")
    c = cluster_factory({"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})  # no retry
    c.add_worker("w1", course.root)
    c.add_worker("w2", course.root)
    c.add_worker("stranger", foreign)
    c.wait_for_workers()
    lines, killed = [], []
    progress = c.killing_progress(lines, killed)

    rows = autograde(course, submissions, tmp_path / "out", scheduler=c.address, progress=progress)
    stranger = [line for line in lines if line.startswith("not grading on")]
    assert len(stranger) == 1 and "its settings differ from this course's" in stranger[0], lines
    assert str(foreign) in stranger[0]
    assert lines[1] == "grading on 2 Dask workers with 2 grade slots"
    # Dask counts a lost worker against every job it had been given, running or queued
    lost = {r.student_id: r for r in rows if r.status == "crashed"}
    assert killed and set(lost) == killed[0], (killed, rows)
    for row in lost.values():
        assert row.detail.startswith("grading machine lost") and (row.score, row.max_score) == (0, 5)
        page = (tmp_path / "out" / "feedback" / row.student_id / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
        assert "grading machine lost" in page
    expected = {"ada": 5, "bob": 0, "cy": 3, "dee": 5, "eve": 0, "fay": 3}
    assert {r.student_id: r.score for r in rows if r.status == "graded"} == \
           {s: p for s, p in expected.items() if s not in lost}
    # run again: only the lost ones are graded, on the worker that is left
    lines.clear()
    rows = autograde(course, submissions, tmp_path / "out", scheduler=c.address, progress=lines.append)
    assert sorted(line.split("]")[1].split()[0] for line in lines if line.startswith("[")) == sorted(lost)
    assert {r.student_id: (r.score, r.status) for r in rows if r.student_id != "gus"} == \
           {s: (p, "graded") for s, p in expected.items()}
    # with no worker of this course left, the coordinator says so instead of waiting
    for name, process in c.workers.items():
        if name != "stranger" and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    time.sleep(2)
    with pytest.raises(ValueError, match="no Dask worker can grade this course"):
        autograde(course, submissions, tmp_path / "out", scheduler=c.address, force=True, progress=lines.append)


def test_the_fingerprint_names_the_part_that_differs(tmp_path):
    course = make_toy_course(tmp_path / "course")
    write_samples(course)
    before = cluster.course_fingerprint(course)
    assert set(before) == {"package", "solutions", "data", "settings", "libraries"}
    (course.data / "samples" / "complete" / ASSIGNMENT / NOTEBOOK).write_text("{}")  # submissions do not count
    assert cluster.course_fingerprint(course) == before
    changes = {
        "solutions": course.solutions / ASSIGNMENT / "notes.md",
        "data": course.data / "shapes" / "seed.txt",
        "settings": course.root / "nbgrader_config.py",
    }
    for part, path in changes.items():
        path.parent.mkdir(exist_ok=True)
        with open(path, "a") as handle:
            handle.write("# changed\n")
        after = cluster.course_fingerprint(course)
        assert cluster.differences(before, after) == [part]
        before = after


def test_a_worker_refuses_a_job_of_another_course(tmp_path, monkeypatch):
    course = make_toy_course(tmp_path / "course")
    monkeypatch.chdir(course.root)  # where `dask worker` would be started
    cluster._machine.cache_clear()
    try:
        theirs = {**cluster.course_fingerprint(course), "solutions": "0" * 64}
        request = cluster.Request("ada", ASSIGNMENT, {NOTEBOOK: b"{}"}, theirs, 60, None, Limits())
        with pytest.raises(cluster.CourseMismatch, match="its solutions differ from the coordinator's"):
            cluster.grade(request)
    finally:
        cluster._machine.cache_clear()


def test_the_cli_explains_what_a_cluster_run_needs(tmp_path, capsys):
    course = make_toy_course(tmp_path / "course")
    write_samples(course)
    args = ["--root", str(course.root), "autograde", str(course.data / "samples"), "--out", str(tmp_path / "out"),
            "--scheduler", "tcp://127.0.0.1:9"]
    assert main([*args, "--workers", "2"]) == 2
    assert "each worker's grade slots" in capsys.readouterr().err
    assert main([*args, "--no-sandbox"]) == 2
    assert "needs the sandbox" in capsys.readouterr().err


@pytest.mark.slow
def test_an_unreachable_scheduler_is_named(tmp_path, capsys):
    course = make_toy_course(tmp_path / "course")
    write_samples(course)
    started = time.monotonic()
    assert main(["--root", str(course.root), "autograde", str(course.data / "samples"), "--out", str(tmp_path / "out"),
                 "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
    assert time.monotonic() - started < 60


def test_the_live_worker_list_is_asked_afresh_even_while_the_client_refreshes_its_cache():
    """The client's own refresh (every 2 s, here every 1 ms) caches a worker-less summary; a run
    that read that cache once concluded every grading machine had left (a CI failure)."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}), \
            LocalCluster(n_workers=1, processes=False, dashboard_address=None) as local, Client(local) as client:
        (address,) = client.nthreads()  # the scheduler's own answer, the oracle
        assert all(list(cluster.workers_now(client)) == [address] for _ in range(300))
