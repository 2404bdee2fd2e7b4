"""The benchmark scripts still run: smoke runs at tiny sizes (each checks agreement before timing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMOKE_RUNS = {
    "bench_boxes.py": ["--quick", "--reps", "1"],
    "bench_map.py": ["--quick", "--reps", "1"],
    "bench_upsample.py": ["--quick", "--reps", "1"],
    "bench_roi.py": ["--quick", "--reps", "1"],
    "bench_detector.py": ["--quick", "--seconds", "3"],
    "bench_single_stage.py": ["--quick", "--seconds", "3"],
    "bench_one_stage.py": ["--quick", "--seconds", "3"],
    "bench_hungarian.py": ["--quick", "--reps", "1"],
    "bench_set_prediction.py": ["--quick", "--seconds", "3"],
    "bench_mask_rcnn.py": ["--quick", "--seconds", "3", "--equal-steps"],
    "bench_explain.py": ["--quick", "--reps", "1"],
    "bench_grading.py": ["--quick"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_smoke_run(script):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *SMOKE_RUNS[script]],
        cwd=BENCHMARKS, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "|---|" in result.stdout, f"{script} printed no table:\n{result.stdout[-2000:]}"
