"""Shared helpers of the benchmark scripts: interleaved timing and a markdown table."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


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
