"""Grading throughput: one machine's thread pool against a Dask cluster of 1 and 2 local workers.

Grades the course's sample submissions (complete, partial, blank) of a few assignments three
ways on this machine, in the sandbox, and checks that the three agree row for row before
reporting submissions per minute and each notebook's grading time:

* ``cs-dense autograde --workers 2`` (no Dask);
* a Dask cluster of one worker with one ``grade`` slot (each kernel gets every core);
* a Dask cluster of two workers with one slot each and one thread per kernel, standing in
  for two machines.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from distributed import LocalCluster

from cs_dense.course.autograde import autograde
from cs_dense.course.layout import find_course

DEFAULT = ("00_tasks_and_data", "03_iou_nms_map", "09_explain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the blank sample of 00, for a smoke run")
    parser.add_argument("--assignments", nargs="+", default=DEFAULT)
    args = parser.parse_args()
    course = find_course(Path(__file__).resolve().parent)
    assignments = ["00_tasks_and_data"] if args.quick else args.assignments
    students = ["blank"] if args.quick else ["complete", "partial", "blank"]
    with tempfile.TemporaryDirectory(prefix="bench_grading_") as tmp:
        submissions = Path(tmp) / "submissions"
        for student in students:
            for assignment in assignments:
                shutil.copytree(course.data / "samples" / student / assignment, submissions / student / assignment)
        n = len(students) * len(assignments)
        runs = {}
        for name, workers in (("this machine, --workers 2", None), ("Dask, 1 worker x 1 slot", 1),
                              ("Dask, 2 workers x 1 slot", 2)):
            out = Path(tmp) / f"out{len(runs)}"
            started = time.perf_counter()
            if workers is None:
                rows = autograde(course, submissions, out, workers=2, progress=lambda line: None)
            else:
                threads = str(max(1, 2 // workers))
                with LocalCluster(n_workers=workers, threads_per_worker=1, resources={"grade": 1},
                                  env={"OMP_NUM_THREADS": threads}, dashboard_address=None) as cluster:
                    rows = autograde(course, submissions, out, scheduler=cluster.scheduler_address,
                                     progress=lambda line: None)
            runs[name] = (time.perf_counter() - started, rows)
    first = [(r.student_id, r.assignment_id, r.score, r.status) for r in next(iter(runs.values()))[1]]
    for name, (_, rows) in runs.items():
        assert [(r.student_id, r.assignment_id, r.score, r.status) for r in rows] == first, f"{name} graded differently"
    print(f"{n} submissions ({', '.join(students)} of {', '.join(assignments)}), every run graded alike\n")
    print("| run | wall time (s) | submissions / min |\n|---|---|---|")
    for name, (seconds, _) in runs.items():
        print(f"| {name} | {seconds:.0f} | {n / seconds * 60:.2f} |")
    print("\nseconds to grade one notebook, on the 1-worker cluster (one at a time, every core):\n")
    print("| assignment | median | max |\n|---|---|---|")
    rows = runs["Dask, 1 worker x 1 slot"][1]
    for assignment in assignments:
        seconds = [r.seconds for r in rows if r.assignment_id == assignment]
        print(f"| {assignment} | {statistics.median(seconds):.1f} | {max(seconds):.1f} |")


if __name__ == "__main__":
    main()
