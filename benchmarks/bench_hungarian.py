"""Speed of cs_dense's hungarian (NumPy shortest augmenting paths) against scipy's linear_sum_assignment (C++).

    python benchmarks/bench_hungarian.py           # full sizes (run on a quiet machine)
    python benchmarks/bench_hungarian.py --quick   # smoke run, sizes up to 60

Costs are seeded DETR-like matrices: uniform random, which is what a matching cost of an
untrained model looks like, at 10 x 10, 100 x 100, 300 x 300 and 300 predictions x 20
ground truths; and one structured 300 x 300 matrix (``i * j``) on which every row wants
the same column, so each augmenting path is long: our worst case, not scipy's. Every
total is checked against scipy's before anything is timed (assignments may differ on
ties, totals may not). Our time includes converting the tensor to NumPy and the result
back; scipy is given the NumPy array.
"""

from __future__ import annotations

import math

import torch
from common import interleaved_medians, print_environment, print_table, timing_arguments
from scipy.optimize import linear_sum_assignment

from cs_dense.models import hungarian


def total(cost: torch.Tensor, rows, cols) -> float:
    return float(cost[torch.as_tensor(rows), torch.as_tensor(cols)].sum())


def main() -> None:
    args, reps = timing_arguments(__doc__)
    sizes = [(10, 10), (30, 30), (60, 60), (60, 20)] if args.quick else [(10, 10), (100, 100), (300, 300), (300, 20)]
    side = sizes[2][0]
    print_environment()
    rows = []
    g = torch.Generator().manual_seed(0)
    cases = [(f"{n}x{m} uniform", torch.rand(n, m, generator=g, dtype=torch.float64)) for n, m in sizes]
    i, j = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64), indexing="ij")
    cases.append((f"{side}x{side} i*j (long paths)", i * j))
    for label, cost in cases:
        array = cost.numpy()
        ours, theirs = total(cost, *hungarian(cost)), total(cost, *linear_sum_assignment(array))
        assert math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-9), (label, ours, theirs)
        candidates = {"ours": lambda c=cost: hungarian(c), "scipy": lambda a=array: linear_sum_assignment(a)}
        t = interleaved_medians(candidates, reps)
        rows.append((f"hungarian {label}", t["ours"], t["scipy"], "scipy"))
    print_table(rows)


if __name__ == "__main__":
    main()
