"""Cross-check probes of notebook 06, single-stage detectors (YOLO, SSD, RetinaNet)."""

from __future__ import annotations

import torch

from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.models import (
    default_boxes,
    hard_negative_mining,
    match_anchors,
    retinanet_loss,
    ssd_loss,
    ssd_match,
    yolo_loss,
    yolo_targets,
)
from cs_dense.ops import box_iou, sigmoid_focal_loss

_GRADIENTS = "cs_dense.grading.probes.recipes.gradients"
_DTYPES = (torch.float32, torch.float64)


def _boxes(gen: torch.Generator, n: int) -> torch.Tensor:
    """n float64 boxes of 2..32 pixels with corners in [0, 100)."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 30 + 2], 1)


# ----------------------------------------------------------------------- YOLO


def _yolo_targets(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        S, C = randint(gen, 1, 5 if trial < 3 else 9), randint(gen, 1, 6)  # small grids: crowded cells
        H, W = randint(gen, 16, 200), randint(gen, 16, 200)
        if trial % 2 == 0:  # whole-pixel cells, so that centres can sit on cell borders exactly
            H, W = S * max(1, H // S), S * max(1, W // S)
        N = 0 if trial == 5 else randint(gen, 2, 30)
        cx = torch.rand(N, generator=gen, dtype=torch.float64) * W
        cy = torch.rand(N, generator=gen, dtype=torch.float64) * H
        if trial % 2 == 0:  # some centres on cell borders and on the far edges
            on_x, on_y = torch.rand(N, generator=gen) < 0.3, torch.rand(N, generator=gen) < 0.3
            cx = torch.where(on_x, torch.randint(0, S + 1, (N,), generator=gen) * (W // S), cx)
            cy = torch.where(on_y, torch.randint(0, S + 1, (N,), generator=gen) * (H // S), cy)
        # quarter pixels, so that the centres are exact in float32 too; some equal areas
        half_w = (torch.rand(N, generator=gen, dtype=torch.float64) * W).round() / 4 + 0.5
        half_h = torch.where(torch.rand(N, generator=gen) < 0.2, half_w,
                             (torch.rand(N, generator=gen, dtype=torch.float64) * H).round() / 4 + 0.5)
        cx, cy = (cx * 4).round() / 4, (cy * 4).round() / 4
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1).to(_DTYPES[trial % 2])
        labels = torch.randint(1, C + 1, (N,), generator=gen)
        cases.append(Case(f"{N} boxes, {H} x {W}, S = {S}, C = {C}, {boxes.dtype}", (boxes, labels, (H, W), S, C),
                          expected=yolo_targets(boxes, labels, (H, W), S, C)))
    boxes = torch.tensor([[2.0, 2, 12, 12], [0, 0, 30, 30], [4, 4, 14, 14]])
    crowded = (boxes, torch.tensor([1, 2, 3]), (64, 64), 2, 3)
    cases.append(Case("three objects in one cell, two smallest of equal area: the first of them wins", crowded,
                      expected=yolo_targets(*crowded)))
    outside = (torch.tensor([[60.0, 0, 80, 10]]), torch.tensor([1]), (64, 64), 4, 3)
    cases.append(Case("a centre at x = 70 > W = 64", outside, raises="ValueError"))
    return cases


def _yolo_problem(gen: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    N, S, C = randint(gen, 1, 5), randint(gen, 1, 7), randint(gen, 1, 5)
    target = torch.rand(N, S, S, 5 + C, generator=gen, dtype=torch.float64)
    target[..., 4] = (torch.rand(N, S, S, generator=gen) < 0.3).double()
    target = target * target[..., 4:5]  # empty cells all zero
    pred = torch.randn(N, S, S, 5 + C, generator=gen, dtype=torch.float64)
    return pred.to(dtype), target.to(dtype)


def _yolo_loss(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        dtype = _DTYPES[trial % 2]
        pred, target = _yolo_problem(gen, dtype)
        weights = () if trial == 0 else (round(float(torch.rand((), generator=gen)) * 6, 3),
                                         round(float(torch.rand((), generator=gen)), 3))
        cases.append(Case(f"{list(pred.shape)}, lambdas {weights or 'by default'}, {dtype}", (pred, target, *weights),
                          expected=yolo_loss(pred, target, *weights), rtol=1e-5 if dtype == torch.float32 else 1e-9,
                          atol=1e-6))
    return cases


def _yolo_loss_gradients(gen: torch.Generator) -> list[Case]:
    pred, target = _yolo_problem(gen, torch.float64)
    leaf = pred.clone().requires_grad_()
    expected = torch.autograd.grad(yolo_loss(leaf, target, 2.0, 0.3), leaf)
    return [Case("the gradient with respect to pred", (pred, target, 2.0, 0.3), {"wrt": (0,)}, expected=expected)]


# ------------------------------------------------------------------------ SSD


def _default_boxes(gen: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(5):
        m = randint(gen, 1, 5)
        sizes = [(randint(gen, 1, 12), randint(gen, 1, 12)) for _ in range(m)]
        image = (randint(gen, 32, 400), randint(gen, 32, 400))
        ratios = [[round(float(r), 3) for r in torch.rand(randint(gen, 0, 3), generator=gen) * 3 + 1] for _ in range(m)]
        low = round(float(torch.rand((), generator=gen)) * 0.4 + 0.05, 3)
        high = round(low + float(torch.rand((), generator=gen)) * (1.2 - low), 3)  # beyond 1 at times: clamped sizes
        cases.append(Case(f"maps {sizes}, image {image}, ratios {ratios}, scales {low}..{high}",
                          (sizes, image, ratios, low, high), expected=default_boxes(sizes, image, ratios, low, high)))
    return cases


def _ssd_match(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        M, D = randint(gen, 1, 8), randint(gen, 50, 400)
        quality = torch.rand(M, D, generator=gen).pow(float(torch.rand((), generator=gen)) * 4 + 0.5)
        if trial % 3 == 0 and M > 1:  # two objects with one best box
            quality[1] = quality[0]
        threshold = (0.5, round(float(torch.rand((), generator=gen)), 3))[trial % 2]
        if trial < 4:  # IoUs exactly at the threshold, the best of the first ten boxes among them
            quality = torch.where(torch.rand(M, D, generator=gen) < 0.3, threshold, quality)
            quality[:, :10] = quality[:, :10].clamp(max=threshold)
            quality[0, :10] = threshold
        cases.append(Case(f"{M} object(s), {D} boxes, threshold {threshold}", (quality, threshold),
                          expected=ssd_match(quality, threshold)))
    cases.append(Case("no objects", (torch.zeros(0, 5),), expected=ssd_match(torch.zeros(0, 5))))
    return cases


def _hard_negative_mining(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        N, D = randint(gen, 1, 6), randint(gen, 1, 300)
        losses = torch.rand(N, D, generator=gen, dtype=torch.float64)
        if trial % 3 == 0:
            losses = (losses * 4).round() / 4  # many ties
        labels = torch.where(torch.rand(N, D, generator=gen) < float(torch.rand((), generator=gen)) * 0.5,
                             torch.randint(1, 5, (N, D), generator=gen), 0)
        if trial == 5:
            labels[0] = 0  # an image without positives
        ratio, dtype = randint(gen, 0, 5), _DTYPES[trial % 2]
        cases.append(Case(f"{N} images, {D} boxes, ratio {ratio}, {dtype}", (losses.to(dtype), labels, ratio),
                          expected=hard_negative_mining(losses.to(dtype), labels, ratio)))
    return cases


def _ssd_loss(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        N, C, D = randint(gen, 1, 4), randint(gen, 2, 6), randint(gen, 60, 250)
        priors = _boxes(gen, D)
        targets = []
        for _ in range(N):
            M = randint(gen, 0, 6)
            targets.append({"boxes": _boxes(gen, M), "labels": torch.randint(1, C, (M,), generator=gen)})
        matched = torch.stack([ssd_match(box_iou(t["boxes"], priors)) for t in targets])
        dtype = _DTYPES[trial % 2]
        # distinct logits: no ties among the negatives' losses
        logits = torch.randperm(N * D * C, generator=gen).to(torch.float64).view(N, D, C) / (N * D * C) * 8 - 4
        deltas = torch.randn(N, D, 4, generator=gen, dtype=torch.float64)
        args = (logits.to(dtype), deltas.to(dtype), priors.to(dtype), matched,
                [{"boxes": t["boxes"].to(dtype), "labels": t["labels"]} for t in targets])
        cases.append(Case(f"{N} images with {[len(t['labels']) for t in targets]} objects, {D} boxes, {C} classes, "
                          f"{dtype}", args, expected=ssd_loss(*args)))
    return cases


# ------------------------------------------------------------------ RetinaNet


def _focal_problem(gen: torch.Generator, trial: int) -> tuple:
    shape = ((50,), (7, 9), (2, 3, 20))[trial % 3]
    dtype = _DTYPES[trial % 2]
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 6).to(dtype)
    x.view(-1)[:4] = torch.tensor([100.0, -100.0, 80.0, -80.0], dtype=dtype)
    y = (torch.rand(shape, generator=gen) < 0.3).to(dtype)
    alpha = (-1.0, 0.25, round(float(torch.rand((), generator=gen)), 3))[trial % 3]
    gamma = (0.0, 2.0, round(1 + float(torch.rand((), generator=gen)) * 3, 3))[(trial // 3) % 3]
    return x, y, alpha, gamma, ("none", "mean", "sum")[(trial + trial // 3) % 3]


def _sigmoid_focal_loss(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        args = _focal_problem(gen, trial)
        cases.append(Case(f"{tuple(args[0].shape)}, alpha {args[2]}, gamma {args[3]}, {args[4]}, {args[0].dtype}", args,
                          expected=sigmoid_focal_loss(*args)))
    x, y = torch.randn(4, 3, generator=gen), (torch.rand(4, 3, generator=gen) < 0.5).float()
    cases.append(Case("reduction 'average'", (x, y, 0.25, 2.0, "average"), raises="ValueError"))
    return cases


def _sigmoid_focal_loss_gradients(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in (1, 5):
        args = _focal_problem(gen, trial)
        leaf = args[0].clone().requires_grad_()
        expected = torch.autograd.grad(sigmoid_focal_loss(leaf, *args[1:]).sum(), leaf)
        cases.append(Case(f"the gradient, alpha {args[2]}, gamma {args[3]}, {args[4]}, {args[0].dtype}", args,
                          {"wrt": (0,)}, expected=expected))
    return cases


def _retinanet_loss(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        N, K, A = randint(gen, 1, 4), randint(gen, 1, 6), randint(gen, 50, 300)
        anchors = _boxes(gen, A)
        targets, matched = [], []
        for _ in range(N):
            M = randint(gen, 0, 6)
            boxes = _boxes(gen, M)
            targets.append({"boxes": boxes, "labels": torch.randint(1, K + 1, (M,), generator=gen)})
            matched.append(torch.where(torch.rand(A, generator=gen) < 0.1, -2, -1) if M == 0 else
                           match_anchors(box_iou(boxes, anchors), 0.5, 0.4))
        dtype = _DTYPES[trial % 2]
        alpha, gamma = ((0.25, 2.0), (-1.0, 0.0), (round(float(torch.rand((), generator=gen)), 3), 1.0))[trial % 3]
        logits = torch.randn(N, A, K, generator=gen, dtype=torch.float64) * 3
        deltas = torch.randn(N, A, 4, generator=gen, dtype=torch.float64)
        args = (logits.to(dtype), deltas.to(dtype), anchors.to(dtype), torch.stack(matched),
                [{"boxes": t["boxes"].to(dtype), "labels": t["labels"]} for t in targets], alpha, gamma)
        cases.append(Case(f"{N} images with {[len(t['labels']) for t in targets]} objects, {A} anchors, K = {K}, "
                          f"alpha {alpha}, gamma {gamma}, {dtype}", args, expected=retinanet_loss(*args)))
    return cases


PROBES = {
    "test_yolo_targets": (Probe("yolo_targets", "yolo_targets", _yolo_targets),),
    "test_yolo_loss": (
        Probe("yolo_loss", "yolo_loss", _yolo_loss),
        Probe("yolo_loss", "yolo_loss", _yolo_loss_gradients, recipe=_GRADIENTS),
    ),
    "test_default_boxes": (Probe("default_boxes", "default_boxes", _default_boxes),),
    "test_ssd_match": (Probe("ssd_match", "ssd_match", _ssd_match),),
    "test_hard_negative_mining": (Probe("hard_negative_mining", "hard_negative_mining", _hard_negative_mining),),
    "test_ssd_loss": (Probe("ssd_loss", "ssd_loss", _ssd_loss, stand_in=("hard_negative_mining",)),),
    "test_sigmoid_focal_loss": (
        Probe("sigmoid_focal_loss", "sigmoid_focal_loss", _sigmoid_focal_loss),
        Probe("sigmoid_focal_loss", "sigmoid_focal_loss", _sigmoid_focal_loss_gradients, recipe=_GRADIENTS),
    ),
    "test_retinanet_loss": (
        Probe("retinanet_loss", "retinanet_loss", _retinanet_loss, stand_in=("sigmoid_focal_loss",)),
    ),
}
