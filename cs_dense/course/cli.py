"""The ``cs-dense`` command: release, autograde, report, demo, check, samples, bundle."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cs_dense.course.autograde import NOTEBOOK_TIMEOUT, autograde, format_table
from cs_dense.course.bundle import write_bundle
from cs_dense.course.check import check, format_results
from cs_dense.course.layout import find_course
from cs_dense.course.release import release
from cs_dense.course.report import write_report
from cs_dense.course.samples import BUGS, write_samples
from cs_dense.course.sandbox import Limits, SandboxUnavailable, find_bwrap, parse_size

NO_SANDBOX_WARNING = (
    "cs-dense: WARNING: grading without the sandbox: student code runs as you, can read the hidden tests "
    "and solutions, use the network and change your files. Use this only for code you trust."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cs-dense", description=__doc__)
    parser.add_argument("--root", type=Path, default=None, help="course repository (default: found from the working directory)")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("release", help="regenerate notebooks/ from solutions/")
    p.add_argument("assignments", nargs="*", help="assignment ids (default: all)")

    p = commands.add_parser("autograde", help="grade SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb")
    p.add_argument("submissions", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for grades.csv and feedback/")
    p.add_argument("--workers", type=int, default=1, help="submissions graded at once on this machine (default 1)")
    p.add_argument("--scheduler", metavar="tcp://HOST:8786",
                   help="grade on the workers of this Dask scheduler instead of on this machine (see the README)")
    p.add_argument("--assignment", action="append", dest="assignments", help="only this assignment (repeatable)")
    p.add_argument("--timeout", type=float, default=NOTEBOOK_TIMEOUT, help="seconds allowed per submission")
    p.add_argument("--no-sandbox", action="store_true", help="run student code without bubblewrap (trusted code only)")
    p.add_argument("--memory-limit", type=parse_size, default=Limits.memory, metavar="SIZE",
                   help="memory per submission, e.g. 4G (default 4G)")
    p.add_argument("--pids-limit", type=int, default=Limits.pids, metavar="N",
                   help=f"processes and threads per submission (default {Limits.pids})")
    p.add_argument("--force", action="store_true",
                   help="grade every submission again (by default, those already in OUT/grades.csv are kept)")

    p = commands.add_parser("report", help="after autograde: pass rates, score distributions, what needs a look")
    p.add_argument("out", type=Path, help="the --out folder of cs-dense autograde")

    p = commands.add_parser("demo", help="grade the bundled sample submissions and print the table")
    p.add_argument("--out", type=Path, default=None, help="keep grades.csv and feedback/ here")
    p.add_argument("--workers", type=int, default=1)

    p = commands.add_parser("check", help="run a notebook's visible tests and show the points")
    p.add_argument("notebook", type=Path)

    commands.add_parser("samples", help="regenerate data/samples/ (complete, partial, blank) from solutions/")

    p = commands.add_parser("bundle", help="write what students install: released notebooks, the package with exercises stubbed")
    p.add_argument("out", type=Path)
    p.add_argument("--reveal", action="append", default=[], metavar="ASSIGNMENT",
                   help="keep this assignment's reference implementations (repeatable)")
    p.add_argument("--reveal-through", metavar="ASSIGNMENT", help="reveal this assignment and every earlier one")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    return parser


def _explain_samples() -> str:
    lines = ["", "complete = the solutions; blank = the released notebook; partial = the solutions with bugs:"]
    for assignment, bugs in BUGS.items():
        lines += [f"  {assignment} / {bug.cell}: {bug.why}" for bug in bugs]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            results = check(args.notebook)
            print(format_results(args.notebook, results))
            return 0 if all(r.score == r.max_score for r in results) else 1
        if args.command == "report":
            print(f"wrote {write_report(args.out)}")
            return 0
        course = find_course(args.root)
        if args.command == "release":
            for folder in release(course, args.assignments):
                print(f"released {folder.relative_to(course.root)}")
        elif args.command == "samples":
            for path in write_samples(course):
                print(f"wrote {path.relative_to(course.root)}")
        elif args.command == "autograde":
            limits = Limits(memory=args.memory_limit, pids=args.pids_limit)
            if args.scheduler and args.workers != 1:
                raise ValueError("--workers is for grading on this machine; on a Dask cluster each worker's "
                                 "grade slots (dask worker --resources grade=S) decide how many run at once")
            if args.no_sandbox:
                print(NO_SANDBOX_WARNING, file=sys.stderr)
            rows = autograde(course, args.submissions, args.out, workers=args.workers, assignments=args.assignments,
                             notebook_timeout=args.timeout, sandbox=not args.no_sandbox, limits=limits, force=args.force,
                             scheduler=args.scheduler, gradebook=True)
            print(format_table(rows))
            print(f"\nwrote {args.out / 'grades.csv'}, {args.out / 'cells.csv'} and feedback in {args.out / 'feedback'}")
            print(f"graded submissions are also in the course's nbgrader gradebook ({course.root / 'gradebook.db'}): "
                  "formgrader, nbgrader export and nbgrader generate_feedback work there")
            print(f"next: cs-dense report {args.out}")
        elif args.command == "demo":
            try:
                find_bwrap()
                sandbox = True
            except SandboxUnavailable as error:  # the samples are the course's own code
                print(f"cs-dense: {error}", file=sys.stderr)
                print(NO_SANDBOX_WARNING, file=sys.stderr)
                sandbox = False
            with tempfile.TemporaryDirectory(prefix="cs_dense_demo_") as tmp:
                out = args.out or Path(tmp)
                print(f"grading the sample submissions in {course.data / 'samples'} ...")
                rows = autograde(course, course.data / "samples", out, workers=args.workers, sandbox=sandbox, force=True)
                print()
                print(format_table(rows))
                print(_explain_samples())
                if args.out:
                    print(f"\nfeedback pages: {args.out / 'feedback'}")
        elif args.command == "bundle":
            result = write_bundle(course, args.out, args.reveal, reveal_through=args.reveal_through, force=args.force)
            for line in result.warnings:
                print(f"cs-dense: warning: {line}", file=sys.stderr)
            print(result.summary())
    except (ValueError, FileNotFoundError, SandboxUnavailable) as error:
        print(f"cs-dense: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
