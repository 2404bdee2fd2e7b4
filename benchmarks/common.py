"""Shared helpers of the benchmark scripts: interleaved timing and a markdown table."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch


def timing_arguments(doc: str, quick_help: str = "tiny sizes, for a smoke run", reps: tuple[int, int] = (3, 15)):
    """Parse the options every timing script shares: ``--quick`` and ``--reps``.

    Returns:
        ``(args, reps)``: the parsed options and the repetitions to time, ``--reps`` or the
        default for the mode (``reps[0]`` quick, ``reps[1]`` full).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per candidate")
    args = parser.parse_args()
    return args, args.reps or (reps[0] if args.quick else reps[1])


def print_environment() -> None:
    """Say what the numbers were measured on (threads are left at torch's default)."""
    machine = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"python {platform.python_version()}, torch {torch.__version__}, {threads} threads, {machine}")


def interleaved_medians(candidates: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time in ms of each candidate, alternating candidates every repetition.

    Alternating (A, B, A, B, ...) rather than (A, A, ..., B, B, ...) spreads any drift
    of a shared machine (other jobs, frequency scaling) evenly over the candidates.
    """
    for _ in range(warmup):
        for run in candidates.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(reps):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(rows: list[tuple[str, float, float, str]]) -> None:
    """Markdown table of (operation, ours ms, theirs ms, theirs' name)."""
    print("| operation | ours ms | theirs ms | ratio ours/theirs |")
    print("|---|---:|---:|---:|")
    for operation, ours, theirs, name in rows:
        print(f"| {operation} (vs {name}) | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |")
