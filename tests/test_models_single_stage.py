"""Single-stage detectors: YOLO's targets and loss against loops over objects and cells; SSD's
default boxes, matching and loss against torchvision (``DefaultBoxGenerator``, ``SSDMatcher``,
``SSD.compute_loss``) and hard-negative mining against a loop; RetinaNet's loss against
``RetinaNetHead.compute_loss``; hand-worked cases; the detector's contract and a short overfit."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.ops import box_iou as tv_box_iou

from cs_dense.models import (
    SingleStageConfig,
    SingleStageDetector,
    default_boxes,
    easy_negative_share,
    hard_negative_mining,
    prior_bias,
    retinanet_loss,
    ssd_loss,
    ssd_match,
    ssd_scales,
    yolo_loss,
    yolo_targets,
)
from reference_loops import random_boxes, shapes_detection_batch, training_losses

# --------------------------------------------------------------------------- YOLO targets


def loop_yolo_targets(boxes, labels, image_size, s, num_classes):
    """YOLOv1's target one object at a time, in Python floats: the cell holding the centre
    (clamped to the last row / column), the smaller box per cell, the first on equal areas."""
    height, width = image_size
    owner = {}  # (row, col) -> (object index, area)
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        col = min(math.floor(cx * s / width), s - 1)
        row = min(math.floor(cy * s / height), s - 1)
        area = (x2 - x1) * (y2 - y1)
        if (row, col) not in owner or area < owner[row, col][1]:
            owner[row, col] = (k, area)
    target = [[[0.0] * (5 + num_classes) for _ in range(s)] for _ in range(s)]
    for (row, col), (k, _) in owner.items():
        x1, y1, x2, y2 = boxes[k].tolist()
        cell = target[row][col]
        cell[0] = (x1 + x2) / 2 * s / width - col
        cell[1] = (y1 + y2) / 2 * s / height - row
        cell[2] = math.sqrt((x2 - x1) / width)
        cell[3] = math.sqrt((y2 - y1) / height)
        cell[4] = 1.0
        cell[4 + int(labels[k])] = 1.0
    return torch.tensor(target, dtype=torch.float64)


@pytest.mark.parametrize("grid_size", [1, 2, 5, 7, 13])
@pytest.mark.parametrize("image_size", [(100, 100), (104, 120)])
def test_yolo_targets_match_the_loop(device, grid_size, image_size):
    for seed in range(3):
        # 30 objects: small grids get many objects per cell, so the area rule is exercised
        boxes = random_boxes(30, seed, torch.float64)
        labels = torch.randint(1, 4, (30,), generator=torch.Generator().manual_seed(seed))
        got = yolo_targets(boxes.to(device), labels.to(device), image_size, grid_size, 3)
        assert got.device.type == device and got.shape == (grid_size, grid_size, 8)
        torch.testing.assert_close(got.cpu(), loop_yolo_targets(boxes, labels, image_size, grid_size, 3))


def test_yolo_targets_cell_borders_by_hand():
    # 100 x 100 image, S = 4: cells are 25 pixels; column borders at x = 25, 50, 75
    #
    #        0    25   50   75  100
    #     0  +----+----+----+----+
    #        |    |    |    |    |
    #    25  +----+----+----+----+
    #        |    |    |    |    |
    #    50  +----X----+----+----+     X: centre (25, 50) of box A, on a corner of four cells
    #        |    |    |    |    |
    #    75  +----+----+----+----+
    #        |    |    |    |    |
    #   100  +----+----+----+---Y+     Y: centre (100, 100) of box B, on the image's corner
    boxes = torch.tensor([[20.0, 40.0, 30.0, 60.0], [96.0, 92.0, 104.0, 108.0]])
    got = yolo_targets(boxes, torch.tensor([2, 3]), (100, 100), 4, 3)
    # A: x = 25 is column 25 * 4 / 100 = 1 exactly -> column 1 (right), row 2 (below); tx = ty = 0;
    #    sqrt(w / W) = sqrt(10 / 100) = 0.316228, sqrt(h / H) = sqrt(20 / 100) = 0.447214; class 2 -> channel 6
    torch.testing.assert_close(got[2, 1], torch.tensor([0.0, 0.0, 0.316228, 0.447214, 1.0, 0.0, 1.0, 0.0]))
    # B: 100 * 4 / 100 = 4 -> clamped to the last column and row, so tx = ty = 4 - 3 = 1;
    #    sqrt(8 / 100) = 0.282843, sqrt(16 / 100) = 0.4; class 3 -> channel 7
    torch.testing.assert_close(got[3, 3], torch.tensor([1.0, 1.0, 0.282843, 0.4, 1.0, 0.0, 0.0, 1.0]))
    assert got.sum(-1).count_nonzero() == 2  # every other cell is all zeros


def test_yolo_targets_one_object_per_cell_by_hand():
    big, small = [0.0, 0.0, 24.0, 24.0], [10.0, 10.0, 14.0, 14.0]  # both centred on (12, 12): cell (0, 0)
    for order, labels, winner in [([big, small], [1, 2], 2), ([small, big], [2, 1], 2)]:
        got = yolo_targets(torch.tensor(order), torch.tensor(labels), (100, 100), 4, 2)
        # the smaller box wins whatever the order: sqrt(4 / 100) = 0.2, centre 12 * 4 / 100 = 0.48
        torch.testing.assert_close(got[0, 0, :4], torch.tensor([0.48, 0.48, 0.2, 0.2]))
        assert got[0, 0, 4 + winner] == 1 and got[0, 0, 5:].sum() == 1
    # equal areas (10 x 20 and 20 x 10 = 200), both centres in cell (0, 0): the first listed wins
    tall, wide = [0.0, 0.0, 10.0, 20.0], [5.0, 0.0, 25.0, 10.0]
    first = yolo_targets(torch.tensor([tall, wide]), torch.tensor([1, 2]), (100, 100), 4, 2)
    assert first[0, 0, 5].item() == 1 and first[0, 0, 0].item() == pytest.approx(5 * 4 / 100)  # tall: cx = 5
    second = yolo_targets(torch.tensor([wide, tall]), torch.tensor([2, 1]), (100, 100), 4, 2)
    assert second[0, 0, 6].item() == 1 and second[0, 0, 0].item() == pytest.approx(15 * 4 / 100)  # wide: cx = 15


def test_yolo_targets_empty_and_dtype():
    empty = yolo_targets(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.int64), (64, 64), 3, 2)
    assert empty.shape == (3, 3, 7) and empty.dtype == torch.float64 and empty.count_nonzero() == 0
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0]])
    for dtype in (torch.float32, torch.float64):
        assert yolo_targets(boxes.to(dtype), torch.tensor([1]), (64, 64), 3, 2).dtype == dtype


@pytest.mark.parametrize(
    ("boxes", "labels", "grid_size", "message"),
    [
        ([[110.0, 0.0, 130.0, 10.0]], [1], 4, "outside the 100x100 image"),  # cx = 120
        ([[-10.0, 0.0, 4.0, 10.0]], [1], 4, "outside"),  # cx = -3
        ([[0.0, 0.0, 10.0, 10.0]], [0], 4, "labels must be object classes >= 1"),
        ([[0.0, 0.0, 10.0, 10.0]], [4], 4, r"labels must be in 1\.\.3"),
        ([[0.0, 0.0, 10.0, 10.0]], [1], 0, "grid_size"),
        ([[0.0, 0.0, 10.0, 10.0]], [1, 2], 4, "labels must have one entry per box"),
    ],
)
def test_yolo_targets_bad_input_is_named(boxes, labels, grid_size, message):
    with pytest.raises(ValueError, match=message):
        yolo_targets(torch.tensor(boxes), torch.tensor(labels), (100, 100), grid_size, 3)


# --------------------------------------------------------------------------- YOLO loss


def loop_yolo_loss(pred, target, lambda_coord=5.0, lambda_noobj=0.5):
    """YOLOv1's sum-squared error one cell at a time, in Python floats, averaged over images."""
    total = 0.0
    n, s = pred.shape[:2]
    for b in range(n):
        for i in range(s):
            for j in range(s):
                p, t = pred[b, i, j].tolist(), target[b, i, j].tolist()
                if t[4] == 1:
                    total += lambda_coord * sum((p[c] - t[c]) ** 2 for c in range(4))
                    total += (p[4] - t[4]) ** 2
                    total += sum((p[c] - t[c]) ** 2 for c in range(5, len(p)))
                else:
                    total += lambda_noobj * (p[4] - t[4]) ** 2
    return total / n


@pytest.mark.parametrize(("lambda_coord", "lambda_noobj"), [(5.0, 0.5), (1.0, 1.0), (0.0, 2.0)])
def test_yolo_loss_matches_the_loop(device, lambda_coord, lambda_noobj):
    g = torch.Generator().manual_seed(0)
    target = torch.stack(
        [
            yolo_targets(random_boxes(6, g, torch.float64), torch.randint(1, 4, (6,), generator=g), (100, 100), 5, 3)
            for _ in range(3)
        ]
    )
    pred = torch.randn(3, 5, 5, 8, generator=g, dtype=torch.float64)
    got = yolo_loss(pred.to(device), target.to(device), lambda_coord, lambda_noobj)
    assert got.shape == () and got.device.type == device
    assert got.item() == pytest.approx(loop_yolo_loss(pred, target, lambda_coord, lambda_noobj), rel=1e-12)


def test_yolo_loss_by_hand():
    # S = 2, C = 2; one responsible cell (0, 1) and three empty cells
    target = torch.zeros(1, 2, 2, 7)
    target[0, 0, 1] = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 1.0])
    pred = torch.full((1, 2, 2, 7), 9.0)  # empty cells: only the confidence counts, the 9s do not
    pred[0, 0, 1] = torch.tensor([0.6, 0.3, 0.5, 0.7, 0.8, 0.1, 0.6])
    pred[0, 0, 0, 4], pred[0, 1, 0, 4], pred[0, 1, 1, 4] = 0.4, 0.0, -0.2
    # responsible cell: coordinates 5 * (0.1^2 + 0.2^2 + 0 + 0.2^2) = 5 * 0.09 = 0.45
    #                   confidence (0.8 - 1)^2 = 0.04; classes 0.1^2 + 0.4^2 = 0.17   -> 0.66
    # empty cells:      0.5 * (0.4^2 + 0^2 + 0.2^2) = 0.5 * 0.2 = 0.1               -> 0.76
    assert yolo_loss(pred, target).item() == pytest.approx(0.76, rel=1e-6)
    # a batch of two copies is averaged over images, not summed
    assert yolo_loss(pred.repeat(2, 1, 1, 1), target.repeat(2, 1, 1, 1)).item() == pytest.approx(0.76, rel=1e-6)


def test_yolo_loss_gradient():
    g = torch.Generator().manual_seed(1)
    target = yolo_targets(random_boxes(4, g, torch.float64), torch.randint(1, 3, (4,), generator=g), (100, 100), 3, 2)
    pred = torch.randn(1, 3, 3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: yolo_loss(p, target[None]), (pred,))
    yolo_loss(pred, target[None]).backward()
    # d/dp of lambda_noobj * (p - 0)^2 in an empty cell's confidence: 2 * 0.5 * p = p
    empty = target[..., 4] == 0
    torch.testing.assert_close(pred.grad[0, ..., 4][empty], pred.detach()[0, ..., 4][empty])


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(1, 3, 3, 8), torch.zeros(1, 3, 3, 7), "pred and target must have one shape"),
        (torch.zeros(1, 3, 3, 5), torch.zeros(1, 3, 3, 5), "C >= 1"),
        (torch.zeros(1, 3, 3, 7), torch.full((1, 3, 3, 7), 0.5), "objectness"),
        (torch.zeros(3, 3, 7), torch.zeros(3, 3, 7), "pred must be a floating tensor"),
    ],
)
def test_yolo_loss_bad_input_is_named(pred, target, message):
    with pytest.raises(ValueError, match=message):
        yolo_loss(pred, target)


# --------------------------------------------------------------------------- SSD default boxes


def tv_default_boxes(feature_sizes, image_size, aspect_ratios, **kwargs):
    generator = DefaultBoxGenerator([list(r) for r in aspect_ratios], **kwargs)
    images = ImageList(torch.zeros(1, 3, *image_size), [tuple(image_size)])
    return generator(images, [torch.zeros(1, 1, h, w) for h, w in feature_sizes])[0]


@pytest.mark.parametrize(
    ("feature_sizes", "image_size", "aspect_ratios", "kwargs"),
    [
        # torchvision's ssd300_vgg16: six maps, explicit scales and steps
        (
            [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)],
            (300, 300),
            [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
            {"scales": [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], "steps": [8, 16, 32, 64, 100, 300]},
        ),
        # automatic scales, a non-square image, a map with no extra ratios
        ([(12, 20), (6, 10), (3, 5)], (96, 160), [[2], [2, 3], []], {}),
        ([(12, 20), (6, 10), (3, 5)], (96, 160), [[2], [2, 3], []], {"min_ratio": 0.2, "max_ratio": 0.95}),
        # steps that do not divide the image: centres spaced by the step, not by the map
        ([(7, 9), (4, 5)], (90, 120), [[2], [3]], {"steps": [13, 24]}),
        # scales above 1 and ratio 3: clip=False keeps sides wider than the image
        ([(4, 4), (2, 2)], (64, 80), [[3], [2, 3]], {"scales": [0.5, 0.9, 1.4], "clip": False}),
        ([(4, 4), (2, 2)], (64, 80), [[3], [2, 3]], {"scales": [0.5, 0.9, 1.4]}),
        # a single map: scales [min_ratio, max_ratio]
        ([(8, 8)], (64, 64), [[2]], {}),
    ],
)
def test_default_boxes_match_torchvision(feature_sizes, image_size, aspect_ratios, kwargs):
    got = default_boxes(feature_sizes, image_size, aspect_ratios, **kwargs)
    want = tv_default_boxes(feature_sizes, image_size, aspect_ratios, **kwargs)
    expected_count = sum(h * w * (2 + 2 * len(r)) for (h, w), r in zip(feature_sizes, aspect_ratios))
    assert got.shape == (expected_count, 4) and got.dtype == torch.float32
    torch.testing.assert_close(got, want)  # same order and values


def test_default_boxes_by_hand():
    # 100 x 100 image, one 2 x 2 map, scales (0.2, 0.8), ratio 2; position (0, 0) is centred on (25, 25)
    got = default_boxes([(2, 2)], (100, 100), [[2]], scales=[0.2, 0.8])
    assert got.shape == (2 * 2 * 4, 4)
    r = math.sqrt(2)
    want = torch.tensor(
        [
            [15.0, 15.0, 35.0, 35.0],  # s_k = 0.2: a 20-pixel square
            [5.0, 5.0, 45.0, 45.0],  # s'_k = sqrt(0.2 * 0.8) = 0.4: a 40-pixel square
            [25 - 10 * r, 25 - 10 / r, 25 + 10 * r, 25 + 10 / r],  # r = 2 is width / height: 28.3 wide, 14.1 high
            [25 - 10 / r, 25 - 10 * r, 25 + 10 / r, 25 + 10 * r],  # and its transpose
        ]
    )
    torch.testing.assert_close(got[:4], want)
    torch.testing.assert_close(got[4:8], want + torch.tensor([50.0, 0.0, 50.0, 0.0]))  # next position: one column right
    torch.testing.assert_close(got[8:12], want + torch.tensor([0.0, 50.0, 0.0, 50.0]))  # then the second row


def test_ssd_scales_by_hand():
    # 6 maps: 0.15 + 0.75 * k / 5 = 0.15, 0.30, ..., 0.90, then 1.0 for the last map's s_{k+1}
    assert ssd_scales(6) == pytest.approx([0.15, 0.30, 0.45, 0.60, 0.75, 0.90, 1.0])
    assert ssd_scales(3, 0.2, 0.8) == pytest.approx([0.2, 0.5, 0.8, 1.0])
    assert ssd_scales(1) == pytest.approx([0.15, 0.9])  # a single map: [min_ratio, max_ratio]
    for maps in (1, 2, 6):
        assert ssd_scales(maps) == pytest.approx(DefaultBoxGenerator([[2]] * maps).scales)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aspect_ratios": [[2]]}, "one entry of aspect_ratios per feature map"),
        ({"scales": [0.2, 0.5]}, "scales must have len"),
        ({"steps": [8]}, "steps must have one entry per feature map"),
        ({"aspect_ratios": [[2], [-1]]}, r"aspect_ratios\[1\]"),
    ],
)
def test_default_boxes_bad_input_is_named(kwargs, message):
    args = {"feature_sizes": [(4, 4), (2, 2)], "image_size": (64, 64), "aspect_ratios": [[2], [2]]} | kwargs
    with pytest.raises(ValueError, match=message):
        default_boxes(**args)


# --------------------------------------------------------------------------- SSD matching


@pytest.mark.parametrize(("m", "d"), [(1, 30), (3, 200), (8, 5), (12, 40)])
def test_ssd_match_matches_torchvision(device, m, d):
    matcher = tv_det_utils.SSDMatcher(0.5)
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        # continuous IoUs (no ties), sparse like real ones; every row keeps a positive entry.
        # With m > d (8 x 5) some ground truths must share their best box: the later one takes it.
        quality = torch.rand(m, d, generator=g) * (torch.rand(m, d, generator=g) < 0.4)
        quality[torch.arange(m), torch.randint(0, d, (m,), generator=g)] = 0.05 + 0.95 * torch.rand(m, generator=g)
        want = matcher(quality.clone())  # torchvision on the CPU: duplicate writes keep the last
        got = ssd_match(quality.to(device))
        assert got.dtype == torch.int64 and got.device.type == device
        torch.testing.assert_close(got.cpu(), want)


def test_ssd_match_by_hand():
    quality = torch.tensor(
        [
            [0.30, 0.90, 0.10, 0.60],
            [0.10, 0.80, 0.20, 0.05],
            [0.05, 0.10, 0.30, 0.00],
        ]
    )
    # thresholds: box 1 -> gt 0 (0.90 beats 0.80), box 3 -> gt 0 (0.60); boxes 0 and 2 below 0.5
    # best boxes: gt 0 -> box 1, gt 1 -> box 1 as well (0.80), gt 2 -> box 2 (0.30, claimed though below 0.5)
    # gt 0 and gt 1 share box 1: the later one, gt 1, takes it despite its lower IoU
    want = [-1, 1, 2, 0]
    assert ssd_match(quality).tolist() == want
    assert tv_det_utils.SSDMatcher(0.5)(quality.clone()).tolist() == want
    # a ground truth overlapping nothing claims box 0, the first of its all-zero IoUs
    assert ssd_match(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.7, 0.2]])).tolist() == [0, 1, -1]


def test_ssd_match_empty():
    assert ssd_match(torch.zeros(0, 6)).tolist() == [-1] * 6
    assert ssd_match(torch.zeros(3, 0)).shape == (0,)


# --------------------------------------------------------------------------- hard-negative mining


def loop_hard_negatives(cls_loss, labels, ratio=3):
    """Per image: negatives by loss descending (ties to the lower index), the first min(ratio * P, #neg)."""
    chosen = []
    for losses, labs in zip(cls_loss.tolist(), labels.tolist()):
        positives = sum(label > 0 for label in labs)
        negatives = sorted((d for d, label in enumerate(labs) if label == 0), key=lambda d: (-losses[d], d))
        keep = set(negatives[: min(ratio * positives, len(negatives))])
        chosen.append([d in keep for d in range(len(labs))])
    return torch.tensor(chosen)


@pytest.mark.parametrize("ratio", [0, 1, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_hard_negative_mining_matches_the_loop(device, ratio, ties):
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        losses = torch.randint(0, 4, (6, 40), generator=g).double() if ties else torch.rand(6, 40, generator=g)
        # positive fractions from none to most, so some images run short of negatives
        fraction = torch.tensor([0.0, 0.02, 0.1, 0.25, 0.5, 0.9])[:, None]
        labels = torch.where(torch.rand(6, 40, generator=g) < fraction, torch.randint(1, 4, (6, 40), generator=g), 0)
        got = hard_negative_mining(losses.to(device), labels.to(device), ratio)
        assert got.dtype == torch.bool and got.device.type == device
        torch.testing.assert_close(got.cpu(), loop_hard_negatives(losses, labels, ratio))


def test_hard_negative_mining_by_hand():
    losses = torch.tensor(
        [
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 9.0, 9.0],  # no positive: nothing is mined, however high the losses
            [9.0, 0.1, 0.3, 0.2, 0.4, 0.0, 0.5, 0.3],  # 1 positive (index 0): the 3 hardest negatives 6, 4, 2 (2 before 7)
            [9.0, 8.0, 0.1, 0.3, 7.0, 0.2, 6.0, 5.0],  # 5 positives, 3 negatives < 15: every negative, no positive
        ]
    )
    labels = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [2, 0, 0, 0, 0, 0, 0, 0],
            [1, 3, 0, 0, 2, 0, 1, 1],
        ]
    )
    got = hard_negative_mining(losses, labels)
    assert got.int().tolist() == [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 1, 0, 1, 0],
        [0, 0, 1, 1, 0, 1, 0, 0],
    ]


# --------------------------------------------------------------------------- SSD loss


def tv_ssd_loss(cls_logits, box_deltas, dboxes, matched_idxs, targets):
    ssd = SimpleNamespace(box_coder=tv_det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3)
    head_outputs = {"bbox_regression": box_deltas, "cls_logits": cls_logits}
    return SSD.compute_loss(ssd, targets, head_outputs, [dboxes] * len(targets), list(matched_idxs))


def ssd_batch(seed, counts=(3, 0, 2, 5), num_classes=3):
    """Random logits and deltas for torchvision's default boxes of a 64 x 64 image (320 of them),
    ground truths matched by torchvision's SSDMatcher; the image with 0 objects is all background."""
    g = torch.Generator().manual_seed(seed)
    dboxes = tv_default_boxes([(8, 8), (4, 4)], (64, 64), [[2], [2]])
    targets, matched = [], []
    for m in counts:
        boxes = random_boxes(m, g, corners=(0.0, 40.0), sides=(8.0, 24.0))
        targets.append({"boxes": boxes, "labels": torch.randint(1, num_classes + 1, (m,), generator=g)})
        matched.append(tv_det_utils.SSDMatcher(0.5)(tv_box_iou(boxes, dboxes)) if m else torch.full((len(dboxes),), -1))
    logits = torch.randn(len(counts), len(dboxes), num_classes + 1, generator=g) * 2  # continuous: no tied losses
    deltas = torch.randn(len(counts), len(dboxes), 4, generator=g)
    return logits, deltas, dboxes, torch.stack(matched), targets


def _losses_and_grads(fn, logits, deltas, *args):
    logits, deltas = logits.clone().requires_grad_(True), deltas.clone().requires_grad_(True)
    losses = fn(logits, deltas, *args)
    grads = torch.autograd.grad(losses["classification"] + 2 * losses["bbox_regression"], (logits, deltas))
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("seed", range(4))
def test_ssd_loss_matches_torchvision(device, seed):
    logits, deltas, dboxes, matched, targets = ssd_batch(seed)
    positives, negatives = (matched >= 0).sum(1), (matched < 0).sum(1)
    assert (negatives >= 3 * positives).all() and positives[0] > 0  # torchvision's mining picks negatives only
    want, want_grads = _losses_and_grads(tv_ssd_loss, logits, deltas, dboxes, matched, targets)
    on_device = [{k: v.to(device) for k, v in t.items()} for t in targets]
    got, got_grads = _losses_and_grads(
        ssd_loss, logits.to(device), deltas.to(device), dboxes.to(device), matched.to(device), on_device
    )
    assert set(got) == {"bbox_regression", "classification"}
    for key in got:
        torch.testing.assert_close(got[key].cpu(), want[key])
    for g_got, g_want in zip(got_grads, want_grads):
        torch.testing.assert_close(g_got.cpu(), g_want)


def test_ssd_loss_counts_positives_once_where_torchvision_counts_them_twice():
    g = torch.Generator().manual_seed(7)
    dboxes = random_boxes(8, g)
    targets = [
        {"boxes": random_boxes(2, g), "labels": torch.tensor([1, 2])},
        {"boxes": random_boxes(1, g), "labels": torch.tensor([3])},
    ]
    # image 0: P = 4, 4 negatives <= 2P, so torchvision's "top 3P = 12 negatives" also takes all 4 positives;
    # image 1: P = 1, 7 negatives >= 3P: the ordinary case
    matched = torch.tensor([[0, 1, 0, 1, -1, -1, -1, -1], [-1, -1, 0, -1, -1, -1, -1, -1]])
    logits, deltas = torch.randn(2, 8, 4, generator=g), torch.randn(2, 8, 4, generator=g)
    got = ssd_loss(logits, deltas, dboxes, matched, targets)
    want = tv_ssd_loss(logits, deltas, dboxes, matched, targets)
    ce = [
        F.cross_entropy(
            logits[i], torch.where(matched[i] >= 0, targets[i]["labels"][matched[i].clamp(min=0)], 0), reduction="none"
        ).tolist()
        for i in range(2)
    ]
    num_pos = 5
    # ours: image 0 every box once; image 1 its positive and its 3 hardest negatives
    hardest = sorted((ce[1][d] for d in range(8) if d != 2), reverse=True)[:3]
    assert got["classification"].item() == pytest.approx((sum(ce[0]) + ce[1][2] + sum(hardest)) / num_pos, rel=1e-5)
    # torchvision: the same plus image 0's positives once more
    positives_ce = F.cross_entropy(logits[0, :4], torch.tensor([1, 2, 1, 2]), reduction="sum")
    torch.testing.assert_close(want["classification"], got["classification"] + positives_ce / num_pos)
    torch.testing.assert_close(want["bbox_regression"], got["bbox_regression"])


def test_ssd_loss_by_hand():
    # 4 default boxes, one positive (box 0, class 1) whose deltas equal its target (gt = default box: all 0)
    dboxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [20.0, 0.0, 30.0, 10.0], [0.0, 20.0, 10.0, 30.0]])
    targets = [{"boxes": dboxes[:1], "labels": torch.tensor([1])}]
    matched = torch.tensor([[0, -1, -1, -1]])
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    # cross-entropies (background is column 0): box 0: -log(1/3) = log 3 = 1.098612
    #   box 1: -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2) = 0.239545
    #   box 2: -log(e^-1 / (e^-1 + 2)) = log(1 + 2 e) = 1.862186;  box 3: log 3
    got = ssd_loss(logits, torch.zeros(1, 4, 4), dboxes, matched, targets)
    assert got["bbox_regression"].item() == 0.0
    # ratio 3: all three negatives; (log 3 + 0.239545 + 1.862186 + log 3) / 1 = 4.298956
    assert got["classification"].item() == pytest.approx(2 * math.log(3) + math.log(1 + 2 / math.e**2) + math.log(1 + 2 * math.e))
    # ratio 1: only the hardest negative, box 2: log 3 + 1.862186 = 2.960798
    got = ssd_loss(logits, torch.zeros(1, 4, 4), dboxes, matched, targets, neg_to_pos_ratio=1)
    assert got["classification"].item() == pytest.approx(math.log(3) + math.log(1 + 2 * math.e))


def test_ssd_loss_label_above_the_classes_is_a_value_error():
    # cls_logits has C + 1 = 4 columns (classes 1..3); label 4 must be named in a ValueError, not reach
    # F.cross_entropy as an IndexError ("Target 4 is out of bounds")
    dboxes = random_boxes(4, 0)
    targets = [{"boxes": dboxes[:1], "labels": torch.tensor([4])}]
    with pytest.raises(ValueError, match="label"):
        ssd_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), dboxes, torch.tensor([[0, -1, -1, -1]]), targets)


# --------------------------------------------------------------------------- RetinaNet loss


def retina_batch(seed, counts=(3, 0, 4), num_classes=3, num_anchors=60):
    """Random anchors, objects and matches holding every case: indices, -1 and -2 (also in the empty image)."""
    g = torch.Generator().manual_seed(seed)
    anchors = random_boxes(num_anchors, g)
    targets, matched = [], []
    for m in counts:
        targets.append({"boxes": random_boxes(m, g), "labels": torch.randint(1, num_classes + 1, (m,), generator=g)})
        matched.append(torch.randint(-2, m, (num_anchors,), generator=g))
    logits = torch.randn(len(counts), num_anchors, num_classes, generator=g) * 3
    deltas = torch.randn(len(counts), num_anchors, 4, generator=g)
    return logits, deltas, anchors, torch.stack(matched), targets


def tv_retinanet_loss(cls_logits, box_deltas, anchors, matched_idxs, targets):
    head = RetinaNetHead(in_channels=4, num_anchors=1, num_classes=cls_logits.shape[-1])
    # torchvision's column c is class c; ours is class l in column l - 1
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] - 1} for t in targets]
    head_outputs = {"cls_logits": cls_logits, "bbox_regression": box_deltas}
    return head.compute_loss(tv_targets, head_outputs, [anchors] * len(targets), list(matched_idxs))


@pytest.mark.parametrize("seed", range(4))
def test_retinanet_loss_matches_torchvision(device, seed):
    logits, deltas, anchors, matched, targets = retina_batch(seed)
    assert {-2, -1} <= set(matched.unique().tolist()) and (matched[1] < 0).all()
    want, want_grads = _losses_and_grads(tv_retinanet_loss, logits, deltas, anchors, matched, targets)
    on_device = [{k: v.to(device) for k, v in t.items()} for t in targets]
    got, got_grads = _losses_and_grads(
        retinanet_loss, logits.to(device), deltas.to(device), anchors.to(device), matched.to(device), on_device
    )
    assert set(got) == {"classification", "bbox_regression"}
    for key in got:
        torch.testing.assert_close(got[key].cpu(), want[key])
    for g_got, g_want in zip(got_grads, want_grads):
        torch.testing.assert_close(g_got.cpu(), g_want)


def test_retinanet_loss_without_focusing_is_bce_per_image():
    logits, deltas, anchors, matched, targets = retina_batch(5)
    got = retinanet_loss(logits, deltas, anchors, matched, targets, alpha=-1.0, gamma=0.0)
    per_image = []
    for i, target in enumerate(targets):
        total, positives = 0.0, 0
        for a, m in enumerate(matched[i].tolist()):
            if m == -2:
                continue  # ignored anchors add nothing
            one_hot = torch.zeros(logits.shape[-1])
            if m >= 0:
                one_hot[target["labels"][m] - 1] = 1.0
                positives += 1
            total += F.binary_cross_entropy_with_logits(logits[i, a], one_hot, reduction="sum").item()
        per_image.append(total / max(1, positives))
    assert got["classification"].item() == pytest.approx(sum(per_image) / len(per_image), rel=1e-5)


def test_prior_bias_by_hand():
    # pi = 0.01: b = -log((1 - 0.01) / 0.01) = -log 99 = -4.59512; sigmoid(b) = 1 / (1 + 99) = 0.01
    assert prior_bias(0.01) == pytest.approx(-4.59512, abs=1e-5)
    assert 1 / (1 + math.exp(-prior_bias(0.01))) == pytest.approx(0.01)
    assert prior_bias(0.5) == 0.0
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="prior_probability"):
            prior_bias(bad)


def _dense_case():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 30.0]])
    args = {
        "cls_logits": torch.zeros(1, 5, 3),
        "box_deltas": torch.zeros(1, 5, 4),
        "anchors": random_boxes(5, 0),
        "matched_idxs": torch.tensor([[0, 1, -1, -1, -1]]),
        "targets": [{"boxes": boxes, "labels": torch.tensor([1, 3])}],
    }
    return args


@pytest.mark.parametrize("loss", [ssd_loss, retinanet_loss])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"box_deltas": torch.zeros(1, 6, 4)}, "must agree with cls_logits"),
        ({"anchors": random_boxes(4, 0)}, "must agree with cls_logits"),
        ({"matched_idxs": torch.zeros(1, 5)}, "matched_idxs must be a torch.int64 tensor"),
        ({"matched_idxs": torch.tensor([[0, 2, -1, -1, -1]])}, r"matched_idxs\[0\] refers to a ground truth >= 2"),
        ({"targets": []}, r"need one target dict per image \(1\)"),
        ({"targets": [{"boxes": torch.zeros(2, 4), "labels": torch.tensor([0, 1])}]}, "labels must be object classes >= 1"),
        ({"cls_logits": torch.zeros(1, 5, 3, dtype=torch.long)}, "cls_logits must be a floating tensor"),
    ],
)
def test_dense_losses_bad_input_is_named(loss, change, message):
    args = _dense_case() | change
    with pytest.raises(ValueError, match=message):  # positional: ssd_loss names its anchors differently
        loss(args["cls_logits"], args["box_deltas"], args["anchors"], args["matched_idxs"], args["targets"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"targets": [{"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 4])}]}, "has label 4 but cls_logits has K = 3"),
        ({"matched_idxs": torch.tensor([[0, 1, -3, -1, -1]])}, r"-1 \(background\) or -2 \(ignored\)"),
    ],
)
def test_retinanet_loss_bad_input_is_named(change, message):
    with pytest.raises(ValueError, match=message):
        retinanet_loss(**(_dense_case() | change))


# --------------------------------------------------------------------------- the detector


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_classes", 1),
        ("anchor_sizes", ()),
        ("aspect_ratios", (1.0, -2.0)),
        ("channels", 0),
        ("tower_depth", -1),
        ("prior_probability", 1.0),
        ("alpha", 1.5),
        ("gamma", -1.0),
        ("score_thresh", 1.5),
        ("nms_thresh", -0.1),
        ("topk_candidates", 0),
        ("detections_per_img", 0),
        ("image_mean", (0.5, 0.5)),
        ("image_std", (0.25, 0.0, 0.25)),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SingleStageConfig(**{field: value})


def test_config_stride_is_read_only():
    config = SingleStageConfig(prior_probability=None, alpha=-1.0, gamma=0.0, tower_depth=0)  # all valid
    assert config.stride == 8  # the backbone's: 128-pixel images give a 16 x 16 map
    with pytest.raises(TypeError):
        SingleStageConfig(stride=16)
    with pytest.raises(AttributeError):
        config.stride = 16


def test_detector_training_contract_and_prior():
    torch.manual_seed(0)
    model = SingleStageDetector()
    images, targets = shapes_detection_batch(2)
    assert torch.equal(model.class_tower[-1].bias, torch.full_like(model.class_tower[-1].bias, prior_bias(0.01)))
    logits, _, anchors = model.head(torch.stack(images))
    # 128 / 8 = 16 x 16 positions, 4 sizes x 3 ratios = 12 anchors each, 3 object classes
    assert logits.shape == (2, 16 * 16 * 12, 3) and anchors.shape == (16 * 16 * 12, 4)
    assert torch.sigmoid(logits).mean().item() == pytest.approx(0.01, rel=0.05)  # the towers add a little spread
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    # with p = 0.01 everywhere each positive (anchor, class) costs 0.25 * 0.99^2 * -log(0.01) = 1.1283 and each
    # background one 0.75 * 0.01^2 * -log(0.99) = 7.5e-7: the first loss is ~1.13, not thousands of easy negatives
    assert 1.12 < losses["classification"].item() < 1.16
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


@pytest.mark.parametrize(("prior", "alpha", "gamma"), [(0.01, -1.0, 0.0), (0.01, 0.25, 2.0), (None, -1.0, 0.0)])
def test_easy_negative_share_against_a_loop(prior, alpha, gamma):
    torch.manual_seed(0)
    model = SingleStageDetector(SingleStageConfig(prior_probability=prior)).eval()
    images, targets = shapes_detection_batch(2)
    got = easy_negative_share(model, torch.stack(images), targets, alpha, gamma)
    with torch.no_grad():
        logits, _, anchors = model.head(torch.stack(images))
        matched = model.match(anchors, targets)
    # the bookkeeping one (anchor, class) entry at a time, in Python floats
    pos = neg = 0
    total = easy = 0.0
    for n, target in enumerate(targets):
        for a, (m, row) in enumerate(zip(matched[n].tolist(), logits[n].double().tolist())):
            if m == -2:
                continue
            for k, x in enumerate(row):
                y = 1.0 if m >= 0 and int(target["labels"][m]) == k + 1 else 0.0
                p = 1 / (1 + math.exp(-x))
                p_t = p if y else 1 - p
                weight = 1.0 if alpha < 0 else (alpha if y else 1 - alpha)
                loss = -weight * (1 - p_t) ** gamma * math.log(p_t)
                total += loss
                pos, neg = pos + int(y), neg + int(not y)
                easy += loss if (not y and 1 - p > 0.9) else 0.0
    assert (got["positives"], got["negatives"]) == (pos, neg)
    assert got["loss"] == pytest.approx(total, rel=1e-4)
    assert got["easy_share"] == pytest.approx(easy / total, rel=1e-4, abs=1e-9)
    if prior is None:
        assert got["easy_share"] == 0  # p is about 0.5 everywhere: no negative is easy yet


def test_detector_without_prior_starts_at_one_half():
    torch.manual_seed(0)
    model = SingleStageDetector(SingleStageConfig(prior_probability=None))
    images, _ = shapes_detection_batch(1)
    logits, _, _ = model.head(torch.stack(images))
    assert torch.sigmoid(logits).mean().item() == pytest.approx(0.5, abs=0.01)


def test_detector_inference_format():
    torch.manual_seed(0)
    # without the prior every score starts near 0.5, above score_thresh: plenty of candidates
    model = SingleStageDetector(SingleStageConfig(prior_probability=None, detections_per_img=10)).eval()
    images, targets = shapes_detection_batch(2)
    with torch.no_grad():
        detections = model(images, targets)  # targets are ignored in eval mode
    assert len(detections) == 2
    for det in detections:
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape == (10, 4) and det["scores"].shape == (10,) and det["labels"].dtype == torch.int64
        boxes = det["boxes"]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 128).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert ((det["labels"] >= 1) & (det["labels"] <= 3)).all()
        assert (det["scores"][1:] <= det["scores"][:-1]).all() and (det["scores"] > 0.05).all()


def test_detector_postprocess_matches_torchvision_retinanet():
    torch.manual_seed(0)
    config = SingleStageConfig(topk_candidates=300, detections_per_img=40, score_thresh=0.05, nms_thresh=0.5)
    model = SingleStageDetector(config)
    _, _, anchors = model.head(torch.zeros(1, 3, 128, 128))
    d, k = anchors.shape[0], 3
    g = torch.Generator().manual_seed(1)
    logits = torch.linspace(-6.0, 3.0, d * k)[torch.randperm(d * k, generator=g)].view(d, k)  # distinct scores
    deltas = torch.randn(d, 4, generator=g) * 0.1  # small: no box is clipped down to nothing
    got = model.postprocess(logits, deltas, anchors, (128, 128))
    retina = SimpleNamespace(
        box_coder=tv_det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)),
        score_thresh=0.05,
        topk_candidates=300,
        nms_thresh=0.5,
        detections_per_img=40,
    )
    want = RetinaNet.postprocess_detections(
        retina, {"cls_logits": [logits[None]], "bbox_regression": [deltas[None]]}, [[anchors]], [(128, 128)]
    )[0]
    assert len(got["boxes"]) == 40
    torch.testing.assert_close(got["boxes"], want["boxes"])
    torch.testing.assert_close(got["scores"], want["scores"])
    torch.testing.assert_close(got["labels"], want["labels"] + 1)  # torchvision's column c is our class c + 1


def test_detector_bad_input_is_named():
    model = SingleStageDetector()
    image = torch.zeros(3, 128, 128)
    with pytest.raises(ValueError, match="targets are required"):
        model([image])
    with pytest.raises(ValueError, match="multiples of 8"):
        model([torch.zeros(3, 100, 128)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="one shape"):
        model.eval()([image, torch.zeros(3, 64, 64)])


def test_detector_overfits_four_images():
    # 60 AdamW steps on 4 shapes images: the summed loss must fall well below its start
    torch.manual_seed(0)
    model = SingleStageDetector()
    totals = training_losses(model, *shapes_detection_batch(4))
    assert sum(totals[-5:]) / 5 < 0.4 * sum(totals[:5]) / 5
