"""Slow, obviously-correct references and seeded inputs shared by several test files."""

from __future__ import annotations

import torch

from cs_dense.data import load_split


def random_boxes(
    n: int,
    seed: int | torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    *,
    corners: tuple[float, float] = (0.0, 80.0),
    sides: tuple[float, float] = (1.0, 40.0),
    tiny: float = 0.0,
) -> torch.Tensor:
    """Seeded random xyxy boxes, drawn in float64 and then cast.

    Args:
        n: number of boxes.
        seed: a seed, or a generator to draw from (to continue a seeded stream).
        corners: the range of x1 and y1 (by default inside a 100 x 100 image).
        sides: the range of widths and heights.
        tiny: the fraction of boxes whose sides are instead under 0.9 pixels (0 included).
    """
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    xy = corners[0] + torch.rand(n, 2, generator=g, dtype=torch.float64) * (corners[1] - corners[0])
    wh = sides[0] + torch.rand(n, 2, generator=g, dtype=torch.float64) * (sides[1] - sides[0])
    if tiny:
        small = torch.rand(n, 1, generator=g) < tiny  # [n, 1]
        wh = torch.where(small, torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.9, wh)
    return torch.cat([xy, xy + wh], dim=1).to(dtype=dtype, device=device)


def loop_iou(a: list[float], b: list[float]) -> float:
    """IoU of two xyxy boxes in Python floats (0 for an empty union)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def shapes_detection_batch(count: int, keys: tuple[str, ...] = ("boxes", "labels"), device: str = "cpu"):
    """The first ``count`` shapes training images as a list, and their targets with ``keys`` only, on ``device``."""
    images, targets = load_split("train", count)
    return [image.to(device) for image in images], [{key: t[key].to(device) for key in keys} for t in targets]


def training_losses(model: torch.nn.Module, images, targets, steps: int = 60) -> list[float]:
    """The summed loss of each of ``steps`` AdamW steps (learning rate 0.002) of a detector
    that returns a dict of losses in training mode, on a fixed batch: overfitting checks."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
    return totals
