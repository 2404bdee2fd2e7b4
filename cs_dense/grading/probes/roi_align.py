"""Cross-check probes of notebook 05, RoI Pool and RoI Align."""

from __future__ import annotations

import torch

from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.models import BoxCoder, fast_rcnn_loss, postprocess_detections
from cs_dense.models.two_stage import ROI_BOX_WEIGHTS
from cs_dense.ops import bilinear_sample, roi_align, roi_pool

_TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}
_DTYPES = (torch.float32, torch.float64)


def _bilinear_sample(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        C, H, W = randint(gen, 1, 4), randint(gen, 1, 10), randint(gen, 1, 10)
        if trial == 0:
            H = 1  # a single row
        dtype = _DTYPES[trial % 2]
        feature = torch.randn(C, H, W, generator=gen, dtype=torch.float64).to(dtype)
        shape = ((40,), (5, 7), (2, 3, 4))[trial % 3]
        ys = torch.rand(shape, generator=gen, dtype=torch.float64) * (H + 3) - 2
        xs = torch.rand(shape, generator=gen, dtype=torch.float64) * (W + 3) - 2
        # whole and half cells, and the borders -1, H and W exactly
        ys.view(-1)[:6] = torch.tensor([-1.0, H, 0, H - 1, 0.5, -1.0], dtype=torch.float64)
        xs.view(-1)[:6] = torch.tensor([W, -1.0, W - 1, 0, -1.0, W + 0.5], dtype=torch.float64)
        ys, xs = ys.to(dtype), xs.to(dtype)
        cases.append(Case(f"{C} x {H} x {W} map, points of shape {shape}, {dtype}", (feature, ys, xs),
                          expected=bilinear_sample(feature, ys, xs), **_TOLERANCE[dtype]))
    feature = torch.randn(2, 3, 4, generator=gen)
    point = torch.rand(2, generator=gen) * 3
    cases.append(Case("a 0-dimensional point", (feature, point[0], point[1]),
                      expected=bilinear_sample(feature, point[0], point[1]), **_TOLERANCE[torch.float32]))
    cases.append(Case("no points", (feature, torch.zeros(0), torch.zeros(0)),
                      expected=bilinear_sample(feature, torch.zeros(0), torch.zeros(0))))
    return cases


def _rois(gen: torch.Generator, N: int, H: int, W: int, K: int, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """K rows (b, x1, y1, x2, y2) from 30 % before the map to 20 % past it, a fifth of them under one cell."""
    size = torch.tensor([W, H], dtype=torch.float64)
    corner = (torch.rand(K, 2, generator=gen, dtype=torch.float64) * 1.5 - 0.3) * size
    extent = torch.rand(K, 2, generator=gen, dtype=torch.float64) * 0.8 * size
    tiny = torch.rand(K, 1, generator=gen) < 0.2
    extent = torch.where(tiny, torch.rand(K, 2, generator=gen, dtype=torch.float64) * 0.9, extent)
    index = torch.randint(0, N, (K, 1), generator=gen).to(torch.float64)
    return torch.cat([index, corner / scale, (corner + extent) / scale], dim=1).to(dtype)


def _roi_pool(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        N, C, H, W = randint(gen, 1, 3), randint(gen, 1, 4), randint(gen, 1, 20), randint(gen, 1, 20)
        scale, dtype = (1.0, 0.5, 0.25, 0.125)[trial % 4], _DTYPES[trial % 2]
        output_size = (7, (3, 5), 1, 2)[randint(gen, 0, 4)]
        K = 0 if trial == 4 else randint(gen, 1, 10)
        corner = torch.rand(K, 2, generator=gen, dtype=torch.float64) * torch.tensor([W, H]) * 1.2 / scale
        size = torch.rand(K, 2, generator=gen, dtype=torch.float64) * torch.tensor([W, H]) * 0.8 / scale
        size = torch.where(torch.rand(K, 1, generator=gen) < 0.2, torch.rand(K, 2, generator=gen, dtype=torch.float64)
                           * 0.9 / scale, size)
        boxes = torch.cat([corner, corner + size], dim=1)
        # some corners on half cells, where the rounding matters
        boxes = torch.where(torch.rand(K, 1, generator=gen) < 0.3, (boxes * scale * 2).floor() / 2 / scale, boxes)
        rois = torch.cat([torch.randint(0, N, (K, 1), generator=gen).to(torch.float64), boxes], dim=1).to(dtype)
        feature = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64).to(dtype)
        cases.append(Case(f"{K} boxes on {N} x {C} x {H} x {W}, scale {scale}, output {output_size}, {dtype}",
                          (feature, rois, output_size, scale), expected=roi_pool(feature, rois, output_size, scale)))
    return cases


def _roi_align(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        N, C, H, W = randint(gen, 1, 3), randint(gen, 1, 4), randint(gen, 1, 16), randint(gen, 1, 16)
        scale, ratio = (1.0, 0.5, 0.25, 0.125)[trial % 4], (-1, 0, 1, 2, 3)[randint(gen, 0, 5)]
        aligned, dtype = bool(trial % 2), _DTYPES[(trial // 2) % 2]
        size = (7, (3, 5), 1, (4, 2))[randint(gen, 0, 4)]
        K = 0 if trial == 5 else randint(gen, 1, 8)
        rois = _rois(gen, N, H, W, K, scale, dtype)
        feature = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64).to(dtype)
        args = (feature, rois, size, scale, ratio, aligned)
        cases.append(Case(f"{K} boxes on {N} x {C} x {H} x {W}, scale {scale}, sampling_ratio {ratio}, "
                          f"aligned={aligned}, output {size}, {dtype}", args, expected=roi_align(*args),
                          **_TOLERANCE[dtype]))
    return cases


def input_gradient(roi_align, input, boxes, output_size, spatial_scale, sampling_ratio, aligned, weights):
    """d sum(weights * roi_align(input, ...)) / d input through the student's roi_align."""
    leaf = input.detach().clone().requires_grad_()
    out = roi_align(leaf, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    return torch.autograd.grad((out * weights).sum(), leaf)[0]


def _roi_align_gradient(gen: torch.Generator) -> list[Case]:
    cases = []
    for scale, ratio, aligned in ((1.0, -1, False), (0.5, 2, True)):
        feature = torch.randn(2, 2, 9, 11, generator=gen, dtype=torch.float64)
        rois = _rois(gen, 2, 9, 11, 6, scale, torch.float64)
        weights = torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64)
        leaf = feature.clone().requires_grad_()
        expected = torch.autograd.grad((roi_align(leaf, rois, 3, scale, ratio, aligned) * weights).sum(), leaf)[0]
        cases.append(Case(f"gradient with respect to input, scale {scale}, sampling_ratio {ratio}, aligned={aligned}",
                          (feature, rois, 3, scale, ratio, aligned, weights), expected=expected,
                          **_TOLERANCE[torch.float64]))
    return cases


def _fast_rcnn_loss(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        K, C, dtype = randint(gen, 1, 80), randint(gen, 2, 8), _DTYPES[trial % 2]
        logits = (torch.randn(K, C, generator=gen, dtype=torch.float64) * 3).to(dtype)
        box = (torch.randn(K, 4 * C, generator=gen, dtype=torch.float64) * 0.3).to(dtype)  # both sides of beta
        share = (0.25, 0.0, 1.0, 0.25, 0.5, 0.25)[trial]  # the foreground's share: some, none, all
        foreground = torch.rand(K, generator=gen) < share
        labels = torch.where(foreground, torch.randint(1, C, (K,), generator=gen), 0)
        targets = (torch.randn(K, 4, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
        args = (logits, box, labels, targets)
        cases.append(Case(f"K={K}, C={C}, {int(foreground.sum())} foreground, {dtype}", args,
                          expected=fast_rcnn_loss(*args), **_TOLERANCE[dtype]))
    return cases


def _postprocess_detections(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        K, C = randint(gen, 1, 60), randint(gen, 2, 7)
        H, W = randint(gen, 32, 200), randint(gen, 32, 200)
        dtype = _DTYPES[trial % 2]
        centre = torch.rand(K, 2, generator=gen, dtype=torch.float64) * torch.tensor([W, H]) * 1.2
        size = 2 + torch.rand(K, 2, generator=gen, dtype=torch.float64) * 60
        proposals = torch.cat([centre - size / 2, centre + size / 2], dim=1).to(dtype)
        logits = (torch.randn(K, C, generator=gen, dtype=torch.float64) * 3).to(dtype)
        deltas = torch.randn(K, 4 * C, generator=gen, dtype=torch.float64).to(dtype)
        score_thresh = (0.05, 0.0, 0.3)[trial % 3]
        nms_thresh, limit = (0.5, 0.3, 0.7)[randint(gen, 0, 3)], (100, 20, 5)[randint(gen, 0, 3)]
        args = (logits, deltas, proposals, (H, W), score_thresh, nms_thresh, limit)
        expected = postprocess_detections(logits, deltas, proposals, (H, W), score_thresh, nms_thresh, limit,
                                          coder=BoxCoder(ROI_BOX_WEIGHTS))
        cases.append(Case(f"K={K}, C={C}, image {H} x {W}, score_thresh {score_thresh}, nms_thresh {nms_thresh}, "
                          f"detections_per_img {limit}, {dtype}", args, expected=expected))
    return cases


PROBES = {
    "test_bilinear_sample": (Probe("bilinear_sample", "bilinear_sample", _bilinear_sample),),
    "test_roi_pool": (Probe("roi_pool", "roi_pool", _roi_pool),),
    "test_roi_align": (
        Probe("roi_align", "roi_align", _roi_align, stand_in=("bilinear_sample",)),
        Probe("roi_align", "roi_align", _roi_align_gradient, recipe="cs_dense.grading.probes.roi_align.input_gradient",
              stand_in=("bilinear_sample",)),
    ),
    "test_fast_rcnn_loss": (Probe("fast_rcnn_loss", "fast_rcnn_loss", _fast_rcnn_loss),),
    "test_postprocess_detections": (
        Probe("postprocess_detections", "postprocess_detections", _postprocess_detections),
    ),
}
