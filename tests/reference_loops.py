"""Slow, obviously-correct references and seeded inputs shared by several test files."""

from __future__ import annotations

import torch


def random_boxes(n: int, seed: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    """Seeded random xyxy boxes inside a 100 x 100 image, sizes 1..40 pixels."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 80
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 39 + 1
    return torch.cat([xy, xy + wh], dim=1).to(dtype=dtype, device=device)


def loop_iou(a: list[float], b: list[float]) -> float:
    """IoU of two xyxy boxes in Python floats (0 for an empty union)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
