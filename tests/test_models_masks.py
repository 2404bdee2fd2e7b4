"""Mask R-CNN's mask branch: targets, head, loss and inference against torchvision's
``roi_heads`` and ``MaskRCNNHeads`` / ``MaskRCNNPredictor``; pasting against a pixel-by-pixel
loop and hand-drawn grids; mask IoU against pycocotools; empty inputs, errors, devices."""

from __future__ import annotations

import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
import torchvision
from reference_loops import random_boxes
from torch import nn
from torchvision.models.detection import roi_heads
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from cs_dense.data import load_split
from cs_dense.models import (
    MaskHead,
    mask_iou,
    mask_roundtrip_iou,
    maskrcnn_inference,
    maskrcnn_loss,
    paste_masks_in_image,
    project_masks_on_boxes,
)

DTYPES = [torch.float32, torch.float64]
# The course's RoI Align sums its samples in another order than torchvision's kernel
# (tests/test_ops_roi.py), so targets, and the losses on them, agree up to round-off.
TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}
EXACT = dict(rtol=0, atol=0)


def random_gt_masks(g: int, height: int, width: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``g`` masks of random ellipses, so that boxes cut across edges, not only flat regions."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    centre = torch.rand(g, 2, generator=gen) * torch.tensor([width, height])  # [g, 2]
    radii = 2 + torch.rand(g, 2, generator=gen) * torch.tensor([width, height]) / 3  # [g, 2]
    inside = ((xs - centre[:, None, None, 0]) / radii[:, None, None, 0]) ** 2 + (
        (ys - centre[:, None, None, 1]) / radii[:, None, None, 1]
    ) ** 2 <= 1  # [g, H, W]
    return inside.to(dtype)


def boxes_in(height: int, width: int, n: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Boxes around and past an image of ``height x width``, a quarter of them under a pixel."""
    side = min(height, width)
    return random_boxes(n, gen, dtype, corners=(-0.2 * side, 0.9 * side), sides=(0.0, 0.8 * side), tiny=0.25)


# --------------------------------------------------------------------------- project_masks_on_boxes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.float32])
def test_project_equals_torchvision(device, dtype, mask_dtype):
    gen = torch.Generator().manual_seed(0)
    for height, width, g, k, m in [(30, 40, 3, 12, 28), (17, 9, 1, 5, 7), (25, 25, 4, 20, 14)]:
        gt = random_gt_masks(g, height, width, gen, mask_dtype).to(device)
        boxes = boxes_in(height, width, k, gen, dtype).to(device)
        idxs = torch.randint(0, g, (k,), generator=gen).to(device)
        # torchvision's rule: RoI Align with aligned=False
        expected = roi_heads.project_masks_on_boxes(gt, boxes, idxs, m)
        actual = project_masks_on_boxes(gt, boxes, idxs, m, aligned=False)
        assert actual.shape == (k, m, m) and actual.dtype == dtype and actual.device.type == device
        torch.testing.assert_close(actual, expected, **TOLERANCES[dtype])
        # the course's rule: the same with aligned=True
        rois = torch.cat([idxs[:, None].to(dtype), boxes], dim=1)
        expected = torchvision.ops.roi_align(gt[:, None].to(dtype), rois, (m, m), 1.0, aligned=True)[:, 0]
        torch.testing.assert_close(project_masks_on_boxes(gt, boxes, idxs, m), expected, **TOLERANCES[dtype])


def test_project_by_hand():
    # An 8 x 8 mask with a 4 x 4 block of ones (pixels 2..5), and the box around it:
    #   x:  0 1 2 3 4 5 6 7
    #   y=2     1 1 1 1          box (2, 2, 6, 6): exactly the block
    #   ...     1 1 1 1
    #   y=5     1 1 1 1
    # M = 2: each cell is 2 x 2 pixels, sampled ceil(4 / 2) = 2 times per side.
    gt = torch.zeros(1, 8, 8, dtype=torch.uint8)
    gt[0, 2:6, 2:6] = 1
    box, idx = torch.tensor([[2.0, 2.0, 6.0, 6.0]]), torch.zeros(1, dtype=torch.int64)
    # aligned: samples at pixel centres 2.5, 3.5 | 4.5, 5.5 -- all inside the block
    torch.testing.assert_close(project_masks_on_boxes(gt, box, idx, 2), torch.ones(1, 2, 2), **EXACT)
    # aligned=False reads half a pixel further: 3, 4 | 5, 6 in pixel centres, and the
    # sample at 6 is halfway between pixel 5 (1) and pixel 6 (0). Per axis the cells hold
    # 1 and (1 + 0.5) / 2 = 0.75; the corner cell (1 + 0.5 + 0.5 + 0.25) / 4 = 0.5625.
    expected = torch.tensor([[[1.0, 0.75], [0.75, 0.5625]]])
    torch.testing.assert_close(project_masks_on_boxes(gt, box, idx, 2, aligned=False), expected, **EXACT)
    # the left half of the block, M = 1: one cell, the mean of 2 x 4 = 8 samples... all ones
    left = torch.tensor([[2.0, 2.0, 4.0, 6.0]])
    torch.testing.assert_close(project_masks_on_boxes(gt, left, idx, 1), torch.ones(1, 1, 1), **EXACT)
    # a box straddling the block's left edge: columns 1 (0) and 2 (1), all rows inside
    straddle = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    torch.testing.assert_close(project_masks_on_boxes(gt, straddle, idx, 1), torch.full((1, 1, 1), 0.5), **EXACT)


def test_project_picks_the_matched_mask():
    gt = torch.zeros(2, 6, 6)
    gt[0, :3] = 1  # top half
    gt[1, 3:] = 1  # bottom half
    boxes = torch.tensor([[0.0, 0.0, 6.0, 3.0]] * 2)  # the top half, twice
    targets = project_masks_on_boxes(gt, boxes, torch.tensor([0, 1]), 3)
    torch.testing.assert_close(targets, torch.stack([torch.ones(3, 3), torch.zeros(3, 3)]), **EXACT)


def test_project_empty(device):
    gt = torch.ones(2, 5, 5, device=device)
    for masks in (gt, gt[:0]):
        out = project_masks_on_boxes(masks, torch.zeros(0, 4, device=device), torch.zeros(0, dtype=torch.int64), 28)
        assert out.shape == (0, 28, 28) and out.dtype == torch.float32 and out.device.type == device


@pytest.mark.parametrize(
    "change, message",
    [
        ({"matched_idxs": torch.tensor([0, 2])},
         r"matched_idxs must be indices of ground-truth masks in \[0, 2\), got 2"),
        ({"matched_idxs": torch.tensor([-1, 0])}, r"matched_idxs must be indices .* got -1"),
        ({"matched_idxs": torch.tensor([0])}, r"matched_idxs must have one entry per box \(2\)"),
        ({"matched_idxs": torch.tensor([0, 1], dtype=torch.int32)}, "matched_idxs must be a torch.int64 tensor"),
        ({"gt_masks": torch.ones(8, 8)}, r"gt_masks must be a tensor of shape \[G, H, W\]"),
        ({"gt_masks": torch.ones(2, 8, 8, dtype=torch.int64)}, "gt_masks must be bool, uint8 or floating"),
        ({"gt_masks": torch.full((2, 8, 8), 255, dtype=torch.uint8)}, r"gt_masks must hold values in \[0, 1\]"),
        ({"boxes": torch.zeros(2, 5)}, r"boxes must be a floating tensor of shape \[K, 4\]"),
        ({"boxes": torch.zeros(2, 4, dtype=torch.int64)}, "boxes must be a floating tensor"),
        ({"boxes": torch.tensor([[4.0, 0, 2, 2], [0, 0, 1, 1]])}, "boxes must satisfy x1 <= x2"),
        ({"M": 0}, "M must be an int >= 1, got 0"),
        ({"M": 2.0}, "M must be an int"),
        ({"aligned": 1}, "aligned must be a bool"),
    ],
)
def test_project_errors(change, message):
    args = {"gt_masks": torch.ones(2, 8, 8), "boxes": torch.tensor([[0.0, 0, 4, 4], [2, 2, 6, 6]]),
            "matched_idxs": torch.tensor([0, 1]), "M": 4, "aligned": True}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        project_masks_on_boxes(**args)


# --------------------------------------------------------------------------- MaskHead


def torchvision_head(in_channels: int, num_classes: int, layers: tuple[int, ...], dilation: int) -> nn.Sequential:
    """torchvision's mask head and predictor, as Mask R-CNN chains them."""
    return nn.Sequential(
        MaskRCNNHeads(in_channels, list(layers), dilation), MaskRCNNPredictor(layers[-1], layers[-1], num_classes)
    )


@torch.no_grad()
def copy_from_torchvision(ours: MaskHead, theirs: nn.Sequential) -> None:
    heads, predictor = theirs
    convs = [layer for layer in ours.convs if isinstance(layer, nn.Conv2d)]
    assert len(convs) == len(heads)
    pairs = [(conv, block[0]) for conv, block in zip(convs, heads)]
    pairs += [(ours.upsample, predictor.conv5_mask), (ours.logits, predictor.mask_fcn_logits)]
    for mine, source in pairs:
        assert type(mine) is type(source) and mine.weight.shape == source.weight.shape
        mine.weight.copy_(source.weight)
        mine.bias.copy_(source.bias)


@pytest.mark.parametrize("layers, dilation", [((64, 64), 1), ((256, 256, 256, 256), 1), ((32, 48, 16), 2)])
def test_mask_head_equals_torchvision(device, layers, dilation):
    torch.manual_seed(0)  # both initialisations draw from the global generator
    in_channels, num_classes = 24, 5
    ours = MaskHead(in_channels, num_classes, layers, dilation)
    theirs = torchvision_head(in_channels, num_classes, layers, dilation)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    copy_from_torchvision(ours, theirs)
    ours, theirs = ours.to(device), theirs.to(device)
    features = torch.randn(3, in_channels, 14, 14, generator=torch.Generator().manual_seed(1)).to(device)
    out = ours(features)
    assert out.shape == (3, num_classes, 28, 28)
    torch.testing.assert_close(out, theirs(features))
    assert ours(features[:0]).shape == (0, num_classes, 28, 28)


def test_mask_head_lecture_shapes():
    # The lecture's head: 256-channel 14 x 14 RoI features, COCO's 80 classes + background
    head = MaskHead(256, 81, conv_layers=(256, 256))
    assert head(torch.zeros(2, 256, 14, 14)).shape == (2, 81, 28, 28)
    assert head(torch.zeros(0, 256, 14, 14)).shape == (0, 81, 28, 28)
    assert MaskHead(256, 81)(torch.zeros(1, 256, 7, 7)).shape == (1, 81, 14, 14)  # any side S -> 2 S


def test_mask_head_initialisation():
    torch.manual_seed(0)
    head = MaskHead(64, 5, conv_layers=(64, 64))
    layers = [layer for layer in head.modules() if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d)]
    assert len(layers) == 4
    for layer in layers:
        weight = layer.weight
        # He normal, fan_out = dim 0 x kernel area (for the transposed conv, dim 0 is its input)
        fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
        expected = math.sqrt(2 / fan_out)
        assert abs(weight.std().item() / expected - 1) < 0.1, type(layer)
        assert abs(weight.mean().item()) < 0.1 * expected
        assert (layer.bias == 0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"in_channels": 0}, "in_channels must be an int >= 1"),
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
        ({"conv_layers": ()}, "conv_layers must be a non-empty sequence"),
        ({"conv_layers": 256}, "conv_layers must be a non-empty sequence"),
        ({"conv_layers": (64, 0)}, r"conv_layers\[1\] must be an int >= 1"),
        ({"dilation": 0}, "dilation must be an int >= 1"),
    ],
)
def test_mask_head_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskHead(**{"in_channels": 8, "num_classes": 3, **kwargs})


def test_mask_head_forward_errors():
    head = MaskHead(8, 3, conv_layers=(8,))
    with pytest.raises(ValueError, match=r"features must have 8 channels"):
        head(torch.zeros(1, 4, 14, 14))
    with pytest.raises(ValueError, match=r"features must be a floating tensor of shape \[K, 8, S, S\]"):
        head(torch.zeros(8, 14, 14))


# --------------------------------------------------------------------------- maskrcnn_loss


def random_loss_case(gen: torch.Generator, dtype: torch.dtype, device: str, counts: list[tuple[int, int]],
                     num_classes: int = 5, m: int = 14):
    """Logits for ``sum K_i`` RoIs and per-image targets; ``counts`` holds ``(G_i, K_i)``."""
    proposals, gt_masks, gt_labels, idxs = [], [], [], []
    for g, k in counts:
        height, width = (int(v) for v in torch.randint(12, 40, (2,), generator=gen))  # images differ in size
        gt_masks.append(random_gt_masks(g, height, width, gen, torch.uint8).to(device))
        gt_labels.append(torch.randint(1, num_classes, (g,), generator=gen).to(device))
        proposals.append(boxes_in(height, width, k, gen, dtype).to(device))
        idxs.append(torch.randint(0, max(g, 1), (k,), generator=gen).to(device))
    total = sum(k for _, k in counts)
    logits = (3 * torch.randn(total, num_classes, m, m, generator=gen, dtype=dtype)).to(device).requires_grad_()
    return logits, proposals, gt_masks, gt_labels, idxs


def value_and_grad(loss_fn, logits, *args, **kwargs):
    leaf = logits.detach().clone().requires_grad_()
    loss = loss_fn(leaf, *args, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_maskrcnn_loss_equals_torchvision(device, dtype):
    gen = torch.Generator().manual_seed(0)
    for counts in ([(3, 6), (2, 4)], [(1, 1)], [(4, 10), (0, 0), (2, 3)], [(2, 0), (3, 5)]):
        logits, *targets = random_loss_case(gen, dtype, device, counts)
        expected, expected_grad = value_and_grad(roi_heads.maskrcnn_loss, logits, *targets)
        actual, grad = value_and_grad(maskrcnn_loss, logits, *targets, aligned=False)
        assert actual.shape == () and actual.dtype == dtype
        torch.testing.assert_close(actual, expected, **TOLERANCES[dtype])
        torch.testing.assert_close(grad, expected_grad, **TOLERANCES[dtype])


def test_maskrcnn_loss_aligned_equals_composition(device):
    # The course's targets: torchvision's RoI Align with aligned=True, then the mean BCE of
    # each RoI's true-class channel -- written out with torchvision and F only.
    gen = torch.Generator().manual_seed(1)
    logits, proposals, gt_masks, gt_labels, idxs = random_loss_case(gen, torch.float64, device, [(3, 7), (2, 5)], m=28)
    targets = []
    for masks, boxes, idx in zip(gt_masks, proposals, idxs):
        rois = torch.cat([idx[:, None].double(), boxes], dim=1)
        targets.append(torchvision.ops.roi_align(masks[:, None].double(), rois, 28, 1.0, aligned=True)[:, 0])
    labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, idxs)])
    expected = F.binary_cross_entropy_with_logits(logits[torch.arange(12), labels], torch.cat(targets))
    actual = maskrcnn_loss(logits, proposals, gt_masks, gt_labels, idxs)
    torch.testing.assert_close(actual, expected, **TOLERANCES[torch.float64])


def test_maskrcnn_loss_trains_only_the_true_class_channel():
    gen = torch.Generator().manual_seed(2)
    logits, proposals, gt_masks, gt_labels, idxs = random_loss_case(gen, torch.float64, "cpu", [(3, 6), (2, 4)])
    _, grad = value_and_grad(maskrcnn_loss, logits, proposals, gt_masks, gt_labels, idxs)
    labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, idxs)])
    true_channel = F.one_hot(labels, logits.shape[1]).bool()  # [K, C]
    assert (grad[~true_channel] == 0).all()  # other classes (background too) get nothing
    assert (grad[true_channel] != 0).any(dim=(1, 2)).all()
    # a softmax over classes (what Mask R-CNN's table 2b rejects) would push the others down
    probabilities = logits.softmax(dim=1)[torch.arange(10), labels]
    targets = torch.cat([roi_heads.project_masks_on_boxes(*args, 14) for args in zip(gt_masks, proposals, idxs)])
    softmax_grad, = torch.autograd.grad(F.binary_cross_entropy(probabilities, targets), logits)
    assert (softmax_grad[~true_channel] != 0).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_maskrcnn_loss_without_positives(device, dtype):
    gen = torch.Generator().manual_seed(3)
    for counts in ([(2, 0), (0, 0)], [(0, 0)], []):
        logits, *targets = random_loss_case(gen, dtype, device, counts)
        actual, grad = value_and_grad(maskrcnn_loss, logits, *targets)
        assert actual.item() == 0 and actual.dtype == dtype and grad.shape == logits.shape and (grad == 0).all()
        if counts:  # torchvision's concatenation fails on an empty batch
            expected, _ = value_and_grad(roi_heads.maskrcnn_loss, logits, *targets)
            torch.testing.assert_close(actual, expected, **EXACT)
    loss = maskrcnn_loss(torch.zeros(0, 3, 28, 28, requires_grad=True), [], [], [], [])
    assert loss.requires_grad  # still part of the graph, so that backward() works


def loss_args() -> dict:
    """Valid arguments: two images with 2 and 1 masks and proposals, C = 4 channels, M = 7."""
    return {
        "mask_logits": torch.zeros(3, 4, 7, 7),
        "proposals": [torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5]]), torch.tensor([[2.0, 2, 6, 6]])],
        "gt_masks": [torch.ones(2, 8, 8), torch.ones(1, 6, 6)],
        "gt_labels": [torch.tensor([1, 3]), torch.tensor([2])],
        "mask_matched_idxs": [torch.tensor([0, 1]), torch.tensor([0])],
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mask_logits": torch.zeros(3, 4, 7)}, r"mask_logits must be a floating tensor of shape \[K, C, M, M\]"),
        ({"mask_logits": torch.zeros(3, 4, 7, 6)}, "square"),
        ({"mask_logits": torch.zeros(3, 1, 7, 7)}, r"C >= 2"),
        ({"mask_logits": torch.zeros(4, 4, 7, 7)}, r"mask_logits must have one row per proposal \(3\)"),
        ({"proposals": torch.zeros(3, 4)}, "proposals must be a list"),
        ({"gt_masks": [torch.ones(2, 8, 8)]}, r"gt_masks must be a list of one tensor per image \(2\)"),
        ({"gt_labels": (torch.tensor([1, 3]),)}, r"gt_labels must be a list of one tensor per image \(2\)"),
        ({"gt_labels": [torch.tensor([1, 4]), torch.tensor([2])]},
         r"gt_labels\[0\] must be object classes in 1..3 .*, got 4"),
        ({"gt_labels": [torch.tensor([1, 3]), torch.tensor([0])]},
         r"gt_labels\[1\] must be object classes in 1..3 .*, got 0"),
        ({"gt_labels": [torch.tensor([1]), torch.tensor([2])]}, r"gt_labels\[0\] must have one label per mask"),
        ({"mask_matched_idxs": [torch.tensor([0, 2]), torch.tensor([0])]}, r"mask_matched_idxs\[0\] must be indices"),
        ({"mask_matched_idxs": [torch.tensor([0, 1]), torch.tensor([1])]}, r"mask_matched_idxs\[1\] must be indices"),
        ({"gt_masks": [torch.ones(2, 8, 8), torch.ones(6, 6)]}, r"gt_masks\[1\] must be a tensor of shape \[G, H, W\]"),
        ({"proposals": [torch.tensor([[0.0, 0, 4, 4], [5, 1, 1, 5]]), torch.tensor([[2.0, 2, 6, 6]])]},
         r"proposals\[0\] must satisfy x1 <= x2"),
        ({"aligned": "yes"}, "aligned must be a bool"),
    ],
)
def test_maskrcnn_loss_errors(change, message):
    args = {**loss_args(), **change}
    with pytest.raises(ValueError, match=message):
        maskrcnn_loss(**args)


# --------------------------------------------------------------------------- maskrcnn_inference


@pytest.mark.parametrize("counts", [[3, 0, 2], [0], [0, 0], [5]])
def test_maskrcnn_inference_equals_torchvision(device, counts):
    gen = torch.Generator().manual_seed(sum(counts))
    logits = torch.randn(sum(counts), 4, 28, 28, generator=gen).to(device)
    labels = [torch.randint(1, 4, (n,), generator=gen).to(device) for n in counts]
    actual, expected = maskrcnn_inference(logits, labels), roi_heads.maskrcnn_inference(logits, labels)
    assert len(actual) == len(expected) == len(counts)
    for a, e, n in zip(actual, expected, counts):
        assert a.shape == (n, 1, 28, 28)
        torch.testing.assert_close(a, e, **EXACT)  # the same sigmoid of the same values


@pytest.mark.parametrize(
    "mask_logits, labels, message",
    [
        (torch.zeros(2, 4, 5, 5), [torch.tensor([1, 4])], r"labels\[0\] must be object classes in 1..3 .*, got 4"),
        (torch.zeros(2, 4, 5, 5), [torch.tensor([1]), torch.tensor([0])], r"labels\[1\] must be object classes"),
        (torch.zeros(2, 4, 5, 5), [torch.tensor([1.0, 2.0])], r"labels\[0\] must be a torch.int64 tensor"),
        (torch.zeros(2, 4, 5, 5), [torch.tensor([1])], r"mask_logits must have one row per label \(1\)"),
        (torch.zeros(2, 4, 5, 5), torch.tensor([1, 2]), "labels must be a list"),
        (torch.zeros(2, 4, 5, 5, dtype=torch.int64), [torch.tensor([1, 2])], "mask_logits must be a floating"),
    ],
)
def test_maskrcnn_inference_errors(mask_logits, labels, message):
    with pytest.raises(ValueError, match=message):
        maskrcnn_inference(mask_logits, labels)


# --------------------------------------------------------------------------- paste_masks_in_image


def loop_paste(masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], threshold: float) -> torch.Tensor:
    """One pixel at a time in Python floats: a pixel is inside if its centre is in the box
    (``x1 <= x + 0.5 < x2``, likewise y) and the mask, read bilinearly at the centre's
    position in cells (cell b's centre at b, clamped to the border cells), is ``>= threshold``."""
    height, width = image_size
    out = torch.zeros(len(masks), height, width, dtype=torch.bool)
    for d, (mask, (x1, y1, x2, y2)) in enumerate(zip(masks.tolist(), boxes.tolist())):
        rows, cols = len(mask), len(mask[0])
        for y in range(height):
            for x in range(width):
                cx, cy = x + 0.5, y + 0.5
                if not (x1 <= cx < x2 and y1 <= cy < y2):
                    continue
                u = min(max((cx - x1) / (x2 - x1) * cols - 0.5, 0.0), cols - 1.0)
                v = min(max((cy - y1) / (y2 - y1) * rows - 0.5, 0.0), rows - 1.0)
                b0, a0 = math.floor(u), math.floor(v)
                b1, a1 = min(b0 + 1, cols - 1), min(a0 + 1, rows - 1)
                fu, fv = u - b0, v - a0
                top = (1 - fu) * mask[a0][b0] + fu * mask[a0][b1]
                bottom = (1 - fu) * mask[a1][b0] + fu * mask[a1][b1]
                out[d, y, x] = (1 - fv) * top + fv * bottom >= threshold
    return out


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8])
def test_paste_equals_loop(device, threshold):
    gen = torch.Generator().manual_seed(int(threshold * 10))
    for image_size, cells in [((24, 32), (28, 28)), ((17, 11), (5, 5)), ((20, 20), (1, 1)), ((16, 24), (3, 7))]:
        masks = (torch.rand(10, *cells, generator=gen, dtype=torch.float64) * 1.4 - 0.2).clamp(0, 1)  # many 0s and 1s
        side = min(image_size)  # boxes up to the image's size, hanging off its edges, some under a pixel
        boxes = random_boxes(10, gen, torch.float64, corners=(-0.3 * side, 0.8 * side), sides=(0.0, side), tiny=0.15)
        boxes[0, 2:] = boxes[0, :2]  # an empty box
        actual = paste_masks_in_image(masks.to(device), boxes.to(device), image_size, threshold)
        assert actual.dtype == torch.bool and actual.shape == (10, *image_size) and actual.device.type == device
        torch.testing.assert_close(actual.cpu(), loop_paste(masks, boxes, image_size, threshold), **EXACT)


def test_paste_float32_equals_loop():
    gen = torch.Generator().manual_seed(7)
    masks = torch.rand(5, 28, 28, generator=gen)
    boxes = boxes_in(30, 30, 5, gen, torch.float32)
    torch.testing.assert_close(paste_masks_in_image(masks, boxes, 30), loop_paste(masks, boxes, (30, 30), 0.5), **EXACT)


def grid(*rows: str) -> torch.Tensor:
    """A bool image drawn with '#' (True) and '.' (False)."""
    return torch.tensor([[c == "#" for c in row] for row in rows])


def test_paste_by_hand_box_covers_its_pixels():
    # a 2 x 2 mask of ones in box (2, 2, 6, 6) covers pixels 2..5 and nothing else
    pasted = paste_masks_in_image(torch.ones(1, 2, 2), torch.tensor([[2.0, 2.0, 6.0, 6.0]]), (8, 8))
    expected = grid("........",
                    "........",
                    "..####..",
                    "..####..",
                    "..####..",
                    "..####..",
                    "........",
                    "........")
    torch.testing.assert_close(pasted[0], expected, **EXACT)
    # the [D, 1, M, M] layout gives the same
    layout = paste_masks_in_image(torch.ones(1, 1, 2, 2), torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 8)
    torch.testing.assert_close(layout, pasted, **EXACT)


def test_paste_by_hand_bilinear_values_and_threshold_edge():
    # Mask [[1, 0], [0, 0]] in box (0, 0, 4, 4): pixel centres 0.5 .. 3.5 fall at cell
    # positions u = (x + 0.5) / 4 * 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to 0 .. 1,
    # reading 1, 0.75, 0.25, 0 along each axis; the image is their outer product:
    #   1      0.75    0.25    0
    #   0.75   0.5625  0.1875  0
    #   0.25   0.1875  0.0625  0
    #   0      0       0       0
    mask, box = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    square, corner = grid("##..", "##..", "....", "...."), grid("##..", "#...", "....", "....")
    torch.testing.assert_close(paste_masks_in_image(mask, box, 4)[0], square, **EXACT)
    torch.testing.assert_close(paste_masks_in_image(mask, box, 4, threshold=0.5625)[0], square, **EXACT)  # >= keeps it
    above = float(np.nextafter(np.float32(0.5625), np.float32(1)))
    torch.testing.assert_close(paste_masks_in_image(mask, box, 4, threshold=above)[0], corner, **EXACT)
    torch.testing.assert_close(paste_masks_in_image(mask, box, 4, threshold=0.0625)[0],
                               grid("###.", "###.", "###.", "...."), **EXACT)
    # threshold 0 keeps the whole box, but nothing outside it
    torch.testing.assert_close(paste_masks_in_image(mask, box, (5, 6), threshold=0.0)[0],
                               grid("####..", "####..", "####..", "####..", "......"), **EXACT)


def test_paste_by_hand_boxes_past_the_image():
    ones = torch.ones(3, 2, 2)
    boxes = torch.tensor([[-2.0, -2.0, 2.0, 2.0], [4.0, 3.0, 9.0, 7.0], [7.0, 0.0, 12.0, 3.0]])
    pasted = paste_masks_in_image(ones, boxes, (6, 8))
    torch.testing.assert_close(pasted[0], grid("##......", "##......", "........", "........", "........", "........"))
    torch.testing.assert_close(pasted[1], grid("........", "........", "........", "....####", "....####", "....####"))
    torch.testing.assert_close(pasted[2], grid(".......#", ".......#", ".......#", "........", "........", "........"))
    # a box entirely outside the image marks nothing
    assert not paste_masks_in_image(torch.ones(1, 2, 2), torch.tensor([[9.0, 1.0, 12.0, 4.0]]), (6, 8)).any()


def test_paste_by_hand_boxes_under_a_pixel():
    ones = torch.ones(4, 3, 3)
    boxes = torch.tensor([
        [3.1, 3.1, 3.4, 3.4],  # contains no pixel centre: nothing
        [3.2, 3.2, 3.6, 3.6],  # contains the centre (3.5, 3.5) of pixel (3, 3): that pixel
        [3.5, 3.5, 3.5, 3.5],  # empty, even on a centre (the right edge is excluded)
        [2.5, 3.0, 3.5, 4.0],  # half-open: centre 2.5 is in, 3.5 is out -> pixel (3, 2)
    ])
    pasted = paste_masks_in_image(ones, boxes, (6, 6))
    assert not pasted[0].any() and not pasted[2].any()
    assert pasted[1].nonzero().tolist() == [[3, 3]]
    assert pasted[3].nonzero().tolist() == [[3, 2]]


def test_paste_empty(device):
    out = paste_masks_in_image(torch.zeros(0, 28, 28, device=device), torch.zeros(0, 4, device=device), (5, 7))
    assert out.shape == (0, 5, 7) and out.dtype == torch.bool and out.device.type == device
    assert paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), 3).shape == (0, 3, 3)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"masks": torch.ones(2, 4)}, r"masks must be a floating tensor of shape \[D, M, M\] or \[D, 1, M, M\]"),
        ({"masks": torch.ones(2, 2, 4, 4)}, r"masks must be a floating tensor of shape \[D, M, M\]"),
        ({"masks": torch.ones(2, 4, 4, dtype=torch.uint8)}, "masks must be a floating tensor"),
        ({"masks": torch.ones(2, 0, 4)}, "masks must have M >= 1"),
        ({"masks": torch.full((2, 4, 4), 2.0)}, r"masks must hold values in \[0, 1\]"),
        ({"masks": torch.full((2, 4, 4), -0.5)}, r"masks must hold values in \[0, 1\]"),
        ({"boxes": torch.zeros(3, 4)}, r"boxes must have one box per mask \(2\)"),
        ({"boxes": torch.zeros(2, 2)}, r"boxes must have shape \[N, 4\]"),
        ({"boxes": torch.tensor([[0.0, 0, 4, 4], [3, 3, 1, 5]])}, "boxes must satisfy x1 <= x2"),
        ({"image_size": (0, 8)}, "image_size must be >= 1"),
        ({"image_size": (8,)}, "image_size must be an int or a pair of ints"),
        ({"image_size": (8.0, 8.0)}, "image_size must be an int or a pair of ints"),
        ({"threshold": 1.5}, r"threshold must be a number in \[0.0, 1.0\], got 1.5"),
        ({"threshold": -0.1}, "threshold must be a number in"),
        ({"threshold": float("nan")}, "threshold must be a number in"),
        ({"threshold": True}, "threshold must be a number in"),
    ],
)
def test_paste_errors(change, message):
    args = {"masks": torch.ones(2, 4, 4), "boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5]]), "image_size": (8, 8),
            "threshold": 0.5}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        paste_masks_in_image(**args)


# --------------------------------------------------------------------------- mask_iou


def coco_iou(masks1: torch.Tensor, masks2: torch.Tensor) -> np.ndarray:
    """pycocotools' IoU of RLE-encoded masks (no crowds), ``[N, M]``."""
    def encode(masks):
        return mask_util.encode(np.asfortranarray(masks.cpu().numpy().astype(np.uint8).transpose(1, 2, 0)))
    if len(masks1) == 0 or len(masks2) == 0:  # pycocotools returns [] then
        return np.zeros((len(masks1), len(masks2)))
    return mask_util.iou(encode(masks1), encode(masks2), [0] * len(masks2))


def test_mask_iou_equals_pycocotools(device):
    gen = torch.Generator().manual_seed(0)
    for n, m, (height, width) in [(5, 7, (20, 30)), (1, 1, (9, 4)), (0, 3, (6, 6)), (4, 0, (6, 6)), (0, 0, (3, 3))]:
        masks1 = random_gt_masks(n, height, width, gen, torch.bool)
        masks2 = random_gt_masks(m, height, width, gen, torch.uint8)
        if n > 2 and m > 2:
            masks1[0] = False  # empty against everything, including
            masks2[1] = 0  # an empty mask
            masks2[2] = masks1[1]  # an identical one
        actual = mask_iou(masks1.to(device), masks2.to(device))
        assert actual.shape == (n, m) and actual.dtype == torch.float64 and actual.device.type == device
        expected = torch.from_numpy(coco_iou(masks1, masks2))
        torch.testing.assert_close(actual.cpu(), expected, **TOLERANCES[torch.float64])


def test_mask_iou_by_hand():
    a = grid("##..", "##..", "....")  # 4 pixels
    b = grid(".##.", ".##.", ".##.")  # 6 pixels, 2 shared -> 2 / 8
    empty = grid("....", "....", "....")
    expected = torch.tensor([[0.25, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)  # empty vs empty: 0
    torch.testing.assert_close(mask_iou(torch.stack([a, empty]), torch.stack([b, empty, a])), expected, **EXACT)
    # floating soft masks count nonzero pixels as inside
    torch.testing.assert_close(mask_iou(a[None] * 0.3, b[None].float()), expected[:1, :1], **EXACT)


def test_mask_iou_errors():
    with pytest.raises(ValueError, match=r"masks1 and masks2 must have the same H, W"):
        mask_iou(torch.ones(2, 4, 4), torch.ones(2, 4, 5))
    with pytest.raises(ValueError, match=r"masks2 must be a tensor of shape \[M, H, W\]"):
        mask_iou(torch.ones(2, 4, 4), torch.ones(4, 4))


# --------------------------------------------------------------------------- mask_roundtrip_iou


def test_roundtrip_equals_composition_of_oracles():
    _, targets = load_split("train", 2)
    objects = [(m, b) for t in targets for m, b in zip(t["masks"], t["boxes"])][:3]
    index = torch.zeros(1, dtype=torch.int64)
    for mask, box in objects:
        size = tuple(mask.shape)
        # torchvision all the way, then pycocotools
        projected = roi_heads.project_masks_on_boxes(mask[None], box[None], index, 28)
        soft = roi_heads.paste_masks_in_image(projected[:, None], box[None], size)[:, 0]
        expected = coco_iou(soft >= 0.5, mask[None])[0, 0]
        assert mask_roundtrip_iou(mask, box, 28, "torchvision") == pytest.approx(expected, abs=1e-12)
        # aligned RoI Align (torchvision), the pixel loop, pycocotools
        rois = torch.cat([index[:, None].float(), box[None]], dim=1)
        projected = torchvision.ops.roi_align(mask[None, None].float(), rois, 28, 1.0, aligned=True)[:, 0]
        expected = coco_iou(loop_paste(projected.double(), box[None].double(), size, 0.5), mask[None])[0, 0]
        assert mask_roundtrip_iou(mask, box) == pytest.approx(expected, abs=1e-12)


def test_roundtrip_of_a_box_filling_rectangle_is_exact():
    # a 7 x 5 rectangle exactly filling its (pixel-edge) box projects to all ones and pastes back whole
    mask = torch.zeros(20, 20, dtype=torch.uint8)
    mask[3:8, 6:13] = 1
    box = torch.tensor([6.0, 3.0, 13.0, 8.0])
    for m in (28, 4, 1):
        assert mask_roundtrip_iou(mask, box, m) == 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "bilinear"}, r"method must be one of \('aligned', 'torchvision'\)"),
        ({"gt_mask": torch.ones(1, 8, 8)}, r"gt_mask must be a tensor of shape \[H, W\]"),
        ({"box": torch.tensor([[0.0, 0, 4, 4]])}, r"box must be a floating tensor of shape \[4\]"),
        ({"M": 0}, "M must be an int >= 1"),
    ],
)
def test_roundtrip_errors(change, message):
    args = {"gt_mask": torch.ones(8, 8), "box": torch.tensor([0.0, 0, 8, 8]), "M": 28, "method": "aligned", **change}
    with pytest.raises(ValueError, match=message):
        mask_roundtrip_iou(**args)
