"""DETR's set prediction: the assignment against scipy's ``linear_sum_assignment`` and brute
force; the matching cost and the set loss against transcriptions of DETR's ``HungarianMatcher``
and ``SetCriterion`` (torchvision ops, DETR's "no object last" layout) and a per-pair loop;
hand-worked cases, empty inputs, errors, devices and gradients."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tv
from reference_loops import random_boxes, shapes_detection_batch, training_losses
from scipy.optimize import linear_sum_assignment

from cs_dense.models import (
    OneToOneConfig,
    OneToOneDetector,
    SmallDetr,
    SmallDetrConfig,
    greedy_match,
    hungarian,
    hungarian_matcher,
    matching_cost,
    prior_bias,
    set_loss,
    sine_positions,
)

IMAGE_SIZE = (60, 100)  # (H, W): not square, so a swapped normaliser would show


def scipy_total(cost: torch.Tensor) -> float:
    array = cost.detach().cpu().double().numpy()
    rows, cols = linear_sum_assignment(array)
    return float(array[rows, cols].sum())


def check_assignment(cost: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> float:
    """Assert ``(rows, cols)`` is a valid assignment of ``cost`` as scipy shapes one; return its total."""
    n, m = cost.shape
    assert rows.dtype == cols.dtype == torch.int64 and rows.device == cols.device == cost.device
    assert rows.shape == cols.shape == (min(n, m),)
    rows, cols = rows.cpu(), cols.cpu()
    assert (rows[1:] > rows[:-1]).all(), "rows must increase"
    assert cols.unique().numel() == cols.numel(), "a column is used twice"
    assert ((0 <= rows) & (rows < n)).all() and ((0 <= cols) & (cols < m)).all()
    array = cost.detach().cpu().double().numpy()
    return float(array[rows.numpy(), cols.numpy()].sum())


# --------------------------------------------------------------------------- hungarian: oracles


def random_cost(kind: str, n: int, m: int, g: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(n, m, generator=g, dtype=torch.float64)
    if kind == "normal":  # negative entries and a wide range
        return torch.randn(n, m, generator=g, dtype=torch.float64) * 1000
    if kind == "ties":  # integers 0..3: many optimal assignments
        return torch.randint(0, 4, (n, m), generator=g).double()
    if kind == "int64":
        return torch.randint(-20, 21, (n, m), generator=g)
    if kind == "float32":
        return torch.rand(n, m, generator=g)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["uniform", "normal", "ties", "int64", "float32"])
@pytest.mark.parametrize("shape", ["square", "tall", "wide"])
def test_hungarian_total_equals_scipy(kind, shape):
    # 15 parametrisations x 200 cases = 3000 random problems of sizes 0..60
    g = torch.Generator().manual_seed(zlib.crc32(f"{kind}/{shape}".encode()))
    for _ in range(200):
        n = int(torch.randint(0, 61, (), generator=g))
        other = int(torch.randint(0, 61, (), generator=g))
        m = {"square": n, "tall": min(n, other), "wide": max(n, other)}[shape]
        cost = random_cost(kind, n, m, g)
        rows, cols = hungarian(cost)
        total = check_assignment(cost, rows, cols)
        expected = scipy_total(cost)
        # float64 sums in another order: equal up to rounding of the largest entries
        scale = 1 + cost.abs().max().item() if cost.numel() else 1
        assert math.isclose(total, expected, rel_tol=1e-12, abs_tol=1e-12 * scale * max(n, m)), (n, m)
        if kind in ("ties", "int64"):
            assert total == expected  # integer sums are exact


def brute_force_total(cost: torch.Tensor) -> float:
    """Minimum over every injective map of the shorter side into the longer, in Python floats."""
    values = cost.tolist()
    n, m = cost.shape
    if n > m:
        values, n, m = [list(col) for col in zip(*values)], m, n
    return min((sum(values[i][j] for i, j in enumerate(p)) for p in itertools.permutations(range(m), n)), default=0.0)


@pytest.mark.parametrize("n, m", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (2, 5), (5, 2), (3, 6), (6, 4), (1, 6)])
def test_hungarian_equals_brute_force(n, m):
    g = torch.Generator().manual_seed(n * 10 + m)
    for kind in ("uniform", "ties", "normal"):
        for _ in range(10):
            cost = random_cost(kind, n, m, g)
            total = check_assignment(cost, *hungarian(cost))
            assert math.isclose(total, brute_force_total(cost), rel_tol=1e-12, abs_tol=1e-9)


def test_hungarian_by_hand_greedy_is_not_optimal():
    #        gt0  gt1
    # p0  [   1,   2 ]   greedy takes the 1 first and is left with the 100: 101;
    # p1  [   2, 100 ]   crossing over costs 2 + 2 = 4.
    cost = torch.tensor([[1.0, 2.0], [2.0, 100.0]])
    rows, cols = hungarian(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    rows, cols = greedy_match(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]
    assert check_assignment(cost, rows, cols) == 101


def test_hungarian_by_hand_3x3():
    # The six permutations of   [[4, 1, 3],
    #                            [2, 0, 5],
    #                            [3, 2, 2]]:
    # (0,1,2): 4+0+2 = 6   (0,2,1): 4+5+2 = 11   (1,0,2): 1+2+2 = 5
    # (1,2,0): 1+5+3 = 9   (2,0,1): 3+2+2 = 7    (2,1,0): 3+0+3 = 6   -> (1, 0, 2), unique
    cost = torch.tensor([[4, 1, 3], [2, 0, 5], [3, 2, 2]])
    rows, cols = hungarian(cost)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 0, 2]
    # drop the last row: (1, 0) costs 3 and is still the best pair
    rows, cols = hungarian(cost[:2])
    assert cols.tolist() == [1, 0]
    # drop the last column, transposed: column 0 -> row 1 (2), column 1 -> row 0 (1): total 3
    rows, cols = hungarian(cost[:, :2].T)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_hungarian_structured_worst_cases():
    # Every row's cheapest column is column 0, so the start assigns one row and each
    # path is long: a stress test for the potentials, not only for speed.
    i, j = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    for cost in (i * j, -(i * j), torch.ones(40, 40), (i - j) ** 2, torch.outer(i[:, 0] + 1, j[0] + 1).sqrt()):
        assert check_assignment(cost, *hungarian(cost)) == pytest.approx(scipy_total(cost), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0)])
def test_hungarian_empty(device, shape):
    for match in (hungarian, greedy_match):
        rows, cols = match(torch.zeros(shape, device=device))
        assert rows.shape == cols.shape == (0,)
        assert rows.dtype == cols.dtype == torch.int64 and rows.device.type == device


def test_hungarian_on_device(device):
    g = torch.Generator().manual_seed(0)
    for n, m in ((12, 12), (30, 7), (7, 30)):
        cost = torch.rand(n, m, generator=g).to(device)
        rows, cols = hungarian(cost)
        assert check_assignment(cost, rows, cols) == pytest.approx(scipy_total(cost), rel=1e-6)


@pytest.mark.parametrize(
    "cost, message",
    [
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), "NaN"),
        (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), "infinite"),
        (torch.tensor([[0.0, -float("inf")], [1.0, 2.0]]), "infinite"),
        (torch.tensor([[0.0, 1e308], [1.0, 2.0]], dtype=torch.float64), "at most .* in magnitude"),
        (torch.zeros(3), r"cost must be a tensor of shape \[N, M\]"),
        (torch.zeros(2, 2, 2), r"cost must be a tensor of shape \[N, M\]"),
        (torch.zeros(2, 2, dtype=torch.bool), "real numbers"),
        ([[1.0, 2.0]], "cost must be a tensor"),
    ],
)
def test_hungarian_errors(cost, message):
    with pytest.raises(ValueError, match=message):
        hungarian(cost)
    if "magnitude" not in message:  # greedy only compares entries: any finite size is fine
        with pytest.raises(ValueError, match=message):
            greedy_match(cost)


def test_hungarian_does_not_modify_or_need_grad():
    cost = torch.rand(5, 4, requires_grad=True)
    before = cost.detach().clone()
    rows, _ = hungarian(cost)
    assert torch.equal(cost.detach(), before) and not rows.requires_grad


# --------------------------------------------------------------------------- greedy


def loop_greedy(cost: torch.Tensor) -> list[tuple[int, int]]:
    """Repeatedly take the smallest entry among free rows and columns (first in row-major order)."""
    values = cost.tolist()
    free_rows, free_cols = set(range(len(values))), set(range(len(values[0]) if values else 0))
    pairs = []
    while free_rows and free_cols:
        best = min((values[i][j], i, j) for i in free_rows for j in free_cols)
        pairs.append(best[1:])
        free_rows.discard(best[1])
        free_cols.discard(best[2])
    return sorted(pairs)


def test_greedy_matches_the_loop_and_never_beats_hungarian():
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        n, m = (int(x) for x in torch.randint(1, 12, (2,), generator=g))
        cost = torch.randint(0, 5, (n, m), generator=g).double()  # ties exercise the row-major rule
        rows, cols = greedy_match(cost)
        assert list(zip(rows.tolist(), cols.tolist())) == loop_greedy(cost)
        assert check_assignment(cost, rows, cols) >= check_assignment(cost, *hungarian(cost))


# --------------------------------------------------------------------------- DETR transcriptions


def to_detr_logits(logits: torch.Tensor) -> torch.Tensor:
    """Ours (column 0 'no object', column l class l) -> DETR's (column l - 1 class l, 'no object' last)."""
    return torch.cat([logits[..., 1:], logits[..., :1]], dim=-1)


def normalised_cxcywh(boxes: torch.Tensor, image_size) -> torch.Tensor:
    """What DETR's data pipeline feeds its matcher: cxcywh divided by (W, H, W, H)."""
    height, width = image_size
    return tv.box_convert(boxes, "xyxy", "cxcywh") / torch.tensor([width, height, width, height], dtype=boxes.dtype,
                                                                  device=boxes.device)


def detr_matching_cost(logits, boxes, gt_labels, gt_boxes, image_size, w_class=1.0, w_l1=5.0, w_giou=2.0):
    """DETR's ``HungarianMatcher.forward`` for one image, in its own layout and box format."""
    out_prob = to_detr_logits(logits).softmax(-1)
    tgt_ids = gt_labels - 1
    out_bbox, tgt_bbox = normalised_cxcywh(boxes, image_size), normalised_cxcywh(gt_boxes, image_size)
    cost_class = -out_prob[:, tgt_ids]
    cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
    cost_giou = -tv.generalized_box_iou(tv.box_convert(out_bbox, "cxcywh", "xyxy"), tv.box_convert(tgt_bbox, "cxcywh", "xyxy"))
    return w_l1 * cost_bbox + w_class * cost_class + w_giou * cost_giou


def detr_set_criterion(logits, boxes, targets, indices, image_size, eos_coef=0.1):
    """DETR's ``SetCriterion`` ``loss_labels`` and ``loss_boxes`` (unweighted), in its layout."""
    src_logits = to_detr_logits(logits)
    b, n, columns = src_logits.shape
    num_classes = columns - 1
    empty_weight = torch.ones(columns, dtype=logits.dtype, device=logits.device)
    empty_weight[-1] = eos_coef
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    target_classes_o = torch.cat([t["labels"][j] - 1 for t, (_, j) in zip(targets, indices)])
    target_classes = torch.full((b, n), num_classes, dtype=torch.int64, device=logits.device)
    target_classes[batch_idx, src_idx] = target_classes_o
    loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, empty_weight)
    num_boxes = max(1, sum(len(t["labels"]) for t in targets))
    src_boxes = normalised_cxcywh(boxes[batch_idx, src_idx], image_size)
    target_boxes = normalised_cxcywh(torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]), image_size)
    loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes
    giou = tv.generalized_box_iou(tv.box_convert(src_boxes, "cxcywh", "xyxy"), tv.box_convert(target_boxes, "cxcywh", "xyxy"))
    loss_giou = (1 - torch.diag(giou)).sum() / num_boxes
    return {"classification": loss_ce, "l1": loss_bbox, "giou": loss_giou}


def loop_giou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    enclose = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (enclose - union) / enclose


def loop_set_loss(logits, boxes, targets, indices, image_size, eos_coef=0.1):
    """The set loss one prediction and one pair at a time, in Python floats."""
    height, width = image_size
    ce_sum = weight_sum = l1 = giou = 0.0
    for b, (target, (rows, cols)) in enumerate(zip(targets, indices)):
        match = dict(zip(rows.tolist(), cols.tolist()))
        for i, z in enumerate(logits[b].tolist()):
            label = int(target["labels"][match[i]]) if i in match else 0
            weight = 1.0 if label else eos_coef
            log_sum = math.log(sum(math.exp(v) for v in z))
            ce_sum += weight * (log_sum - z[label])
            weight_sum += weight
        for i, j in match.items():
            p, t = boxes[b, i].tolist(), target["boxes"][j].tolist()
            for k, scale in enumerate((width, height)):  # x then y
                centre = abs((p[k] + p[k + 2]) / 2 - (t[k] + t[k + 2]) / 2) / scale
                side = abs((p[k + 2] - p[k]) - (t[k + 2] - t[k])) / scale
                l1 += centre + side
            giou += 1 - loop_giou(p, t)
    num_boxes = max(1, sum(len(t["labels"]) for t in targets))
    return {"classification": ce_sum / weight_sum, "l1": l1 / num_boxes, "giou": giou / num_boxes}


def random_batch(seed: int, counts, n: int = 7, num_classes: int = 3, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(counts), n, num_classes + 1, generator=g, dtype=dtype).to(device)
    boxes = torch.stack([random_boxes(n, g, dtype, device, corners=(0.0, 50.0)) for _ in counts])
    targets = [
        {"boxes": random_boxes(m, g, dtype, device, corners=(0.0, 50.0)),
         "labels": torch.randint(1, num_classes + 1, (m,), generator=g).to(device)}
        for m in counts
    ]
    return {"logits": logits, "boxes": boxes}, targets


# --------------------------------------------------------------------------- matching_cost


@pytest.mark.parametrize("weights", [(1.0, 5.0, 2.0), (0.5, 0.0, 3.0)])
def test_matching_cost_equals_detr(device, weights):
    for seed, m in enumerate((0, 1, 5, 12)):
        outputs, targets = random_batch(seed, [m], device=device)
        logits, boxes, target = outputs["logits"][0], outputs["boxes"][0], targets[0]
        got = matching_cost(logits, boxes, target["labels"], target["boxes"], IMAGE_SIZE, *weights)
        assert got.shape == (7, m) and got.device.type == device and got.dtype == torch.float64
        expected = detr_matching_cost(logits, boxes, target["labels"], target["boxes"], IMAGE_SIZE, *weights)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_matching_cost_by_hand():
    # 100 x 100 image, two classes. Prediction = ground truth, both (10, 10)-(30, 30):
    # L1 = 0, GIoU = 1; logits (0, ln 2, ln 1) give p = (1, 2, 1) / 4 so p(class 1) = 0.5.
    # cost = -0.5 + 5 * 0 - 2 * 1 = -2.5
    logits = torch.tensor([[0.0, math.log(2.0), 0.0]])
    box = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    assert matching_cost(logits, box, torch.tensor([1]), box, 100).item() == pytest.approx(-2.5)
    # Shifted 10 px right: cx differs by 0.1; IoU 200/600 = 1/3 and the enclosing box is
    # the union, so GIoU = 1/3. For class 2 (p = 0.25): -0.25 + 5 * 0.1 - 2/3
    shifted = box + torch.tensor([10.0, 0.0, 10.0, 0.0])
    got = matching_cost(logits, shifted, torch.tensor([2]), box, 100).item()
    assert got == pytest.approx(-0.25 + 0.5 - 2 / 3)


def test_matching_cost_degenerate_boxes_are_finite():
    # zero-width and zero-height predictions and ground truths, two of them identical
    flat = torch.tensor([[5.0, 5.0, 5.0, 20.0], [5.0, 5.0, 5.0, 20.0], [0.0, 7.0, 30.0, 7.0], [3.0, 3.0, 3.0, 3.0]])
    logits = torch.randn(4, 4, requires_grad=True)
    boxes = flat.clone().requires_grad_(True)
    cost = matching_cost(logits, boxes, torch.tensor([1, 2, 3, 1]), flat, IMAGE_SIZE)
    assert torch.isfinite(cost).all()
    cost.sum().backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(boxes.grad).all()


def test_matching_cost_empty():
    logits, boxes = torch.randn(5, 4), random_boxes(5, 0)
    assert matching_cost(logits, boxes, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4), IMAGE_SIZE).shape == (5, 0)
    empty = matching_cost(torch.zeros(0, 4), torch.zeros(0, 4), torch.tensor([1, 2]), random_boxes(2, 1), IMAGE_SIZE)
    assert empty.shape == (0, 2)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"logits": torch.randn(3, 1)}, "logits must have C"),
        ({"logits": torch.randn(3)}, r"logits must be a floating tensor of shape \[N, C \+ 1\]"),
        ({"logits": torch.randint(0, 3, (3, 4))}, "logits must be a floating"),
        ({"boxes": torch.zeros(4, 4)}, r"boxes must be a floating tensor of shape \[3, 4\]"),
        ({"boxes": torch.tensor([[5.0, 0, 1, 1]] * 3)}, "boxes must satisfy x1 <= x2"),
        ({"gt_boxes": torch.zeros(2, 5)}, "gt_boxes must have shape"),
        ({"gt_labels": torch.tensor([1, 0])}, r"gt_labels must be object classes in 1..3"),
        ({"gt_labels": torch.tensor([1, 4])}, r"gt_labels must be object classes in 1..3"),
        ({"gt_labels": torch.tensor([1.0, 2.0])}, "gt_labels must be a torch.int64 tensor"),
        ({"gt_labels": torch.tensor([1])}, r"gt_labels must have one label per box \(2\)"),
        ({"image_size": (0, 10)}, "image_size"),
        ({"w_l1": -1.0}, "w_l1"),
        ({"w_giou": float("nan")}, "w_giou"),
    ],
)
def test_matching_cost_errors(change, message):
    args = {"logits": torch.randn(3, 4), "boxes": random_boxes(3, 0), "gt_labels": torch.tensor([1, 2]),
            "gt_boxes": random_boxes(2, 1), "image_size": IMAGE_SIZE}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        matching_cost(**args)


# --------------------------------------------------------------------------- hungarian_matcher


def test_hungarian_matcher_is_optimal_on_detr_cost(device):
    # M = 0, M < N, M = N and M > N (some ground truths unmatched)
    outputs, targets = random_batch(3, [0, 4, 7, 10], device=device)
    outputs["logits"].requires_grad_(True)
    indices = hungarian_matcher(outputs, targets, IMAGE_SIZE)
    assert len(indices) == 4
    for b, ((rows, cols), target) in enumerate(zip(indices, targets)):
        logits, boxes = outputs["logits"][b].detach(), outputs["boxes"][b]
        cost = detr_matching_cost(logits, boxes, target["labels"], target["boxes"], IMAGE_SIZE)
        assert check_assignment(cost, rows, cols) == pytest.approx(scipy_total(cost), rel=1e-12, abs=1e-12)
        assert not rows.requires_grad and not cols.requires_grad
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    "outputs, targets, message",
    [
        ({"logits": torch.randn(1, 3, 4)}, [{}], "outputs must be a dict with 'logits' and 'boxes'"),
        ({"logits": torch.randn(1, 3, 4), "boxes": torch.zeros(1, 2, 4)}, [{}], r"outputs\['logits'\] \[B, N, C \+ 1\]"),
        ({"logits": torch.randn(1, 3, 4), "boxes": torch.zeros(1, 3, 4)}, [], "one dict per image"),
        ({"logits": torch.randn(1, 3, 4), "boxes": torch.zeros(1, 3, 4)}, [{"boxes": torch.zeros(0, 4)}],
         r"targets\[0\] must be a dict with 'boxes' and 'labels'"),
        ({"logits": torch.randn(1, 3, 4), "boxes": torch.zeros(1, 3, 4)},
         [{"boxes": torch.tensor([[0.0, 0, 1, 1]]), "labels": torch.tensor([5])}], r"targets\[0\]\['labels'\] must be object"),
    ],
)
def test_hungarian_matcher_errors(outputs, targets, message):
    with pytest.raises(ValueError, match=message):
        hungarian_matcher(outputs, targets, IMAGE_SIZE)


# --------------------------------------------------------------------------- set_loss


def scipy_indices(seed: int, n: int, targets):
    """An optimal matching of random costs, found by scipy: the loss is tested apart from the matcher."""
    g = np.random.default_rng(seed)
    pairs = [linear_sum_assignment(g.random((n, len(t["labels"])))) for t in targets]
    return [(torch.as_tensor(r, dtype=torch.int64), torch.as_tensor(c, dtype=torch.int64)) for r, c in pairs]


@pytest.mark.parametrize("counts", [[0, 3, 9], [2], [0, 0]])
def test_set_loss_equals_detr_and_the_loop(device, counts):
    outputs, targets = random_batch(5, counts, device=device)
    indices = [(r.to(device), c.to(device)) for r, c in scipy_indices(5, 7, targets)]
    got = set_loss(outputs, targets, indices, IMAGE_SIZE, w_class=1.0, w_l1=1.0, w_giou=1.0)
    assert set(got) == {"classification", "l1", "giou"}
    detr = detr_set_criterion(outputs["logits"], outputs["boxes"], targets, indices, IMAGE_SIZE)
    loop = loop_set_loss(outputs["logits"].cpu(), outputs["boxes"].cpu(), [{k: v.cpu() for k, v in t.items()} for t in targets],
                         [(r.cpu(), c.cpu()) for r, c in indices], IMAGE_SIZE)
    for key in got:
        assert got[key].shape == () and got[key].device.type == device
        torch.testing.assert_close(got[key], detr[key], rtol=1e-12, atol=1e-12)
        assert got[key].item() == pytest.approx(loop[key], rel=1e-10, abs=1e-12)


def test_set_loss_weights_scale_each_term():
    outputs, targets = random_batch(6, [3, 5])
    indices = scipy_indices(6, 7, targets)
    raw = set_loss(outputs, targets, indices, IMAGE_SIZE, w_class=1.0, w_l1=1.0, w_giou=1.0)
    weighted = set_loss(outputs, targets, indices, IMAGE_SIZE)  # DETR's 1, 5, 2
    for key, weight in (("classification", 1.0), ("l1", 5.0), ("giou", 2.0)):
        torch.testing.assert_close(weighted[key], weight * raw[key])


def test_set_loss_classification_divides_by_the_weights():
    # one image, N = 4, one match: targets (1, 0, 0, 0) with weights (1, .1, .1, .1), so the
    # weighted mean divides by 1.3. All-zero logits over C + 1 = 3 columns: every CE is ln 3.
    outputs = {"logits": torch.zeros(1, 4, 3), "boxes": torch.tensor([[[0.0, 0, 10, 10]] * 4])}
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    got = set_loss(outputs, targets, indices, IMAGE_SIZE, no_object_weight=0.1)
    assert got["classification"].item() == pytest.approx(math.log(3))  # (1 + 3 * .1) ln 3 / 1.3
    assert got["l1"].item() == 0 and got["giou"].item() == 0
    # make prediction 0 certain of class 1: only the no-object terms remain, 0.3 ln 3 / 1.3
    outputs["logits"][0, 0] = torch.tensor([-100.0, 100.0, -100.0])
    got = set_loss(outputs, targets, indices, IMAGE_SIZE, no_object_weight=0.1)
    assert got["classification"].item() == pytest.approx(0.3 * math.log(3) / 1.3, rel=1e-6)


def test_set_loss_gradients(device):
    outputs, targets = random_batch(7, [2, 4], device=device)
    outputs = {k: v.requires_grad_(True) for k, v in outputs.items()}
    indices = hungarian_matcher(outputs, targets, IMAGE_SIZE)
    sum(set_loss(outputs, targets, indices, IMAGE_SIZE).values()).backward()
    assert torch.isfinite(outputs["logits"].grad).all() and (outputs["logits"].grad != 0).all()
    box_grad = outputs["boxes"].grad
    for b, (rows, _) in enumerate(indices):
        matched = torch.zeros(7, dtype=torch.bool, device=device)
        matched[rows] = True
        assert (box_grad[b][matched].abs().sum(dim=1) > 0).all()
        assert (box_grad[b][~matched] == 0).all()  # unmatched boxes get no box loss


def test_set_loss_gradcheck():
    outputs, targets = random_batch(8, [2, 3], n=4)
    indices = scipy_indices(8, 4, targets)

    def total(logits, boxes):
        return sum(set_loss({"logits": logits, "boxes": boxes}, targets, indices, IMAGE_SIZE).values())

    assert torch.autograd.gradcheck(total, (outputs["logits"].requires_grad_(True), outputs["boxes"].requires_grad_(True)))


def test_set_loss_degenerate_boxes_are_finite():
    flat = torch.tensor([[[5.0, 5.0, 5.0, 20.0], [0.0, 7.0, 30.0, 7.0]]], requires_grad=True)
    logits = torch.randn(1, 2, 3, requires_grad=True)
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 5.0, 20.0], [1.0, 1.0, 1.0, 1.0]]), "labels": torch.tensor([1, 2])}]
    loss = set_loss({"logits": logits, "boxes": flat}, targets, [(torch.tensor([0, 1]), torch.tensor([0, 1]))], IMAGE_SIZE)
    sum(loss.values()).backward()
    assert all(torch.isfinite(v) for v in loss.values())
    assert torch.isfinite(flat.grad).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "indices, kwargs, message",
    [
        ([(torch.tensor([0]), torch.tensor([0]))], {}, "one .rows, cols. pair per image"),
        ([(torch.tensor([0, 1]), torch.tensor([0]))] * 2, {}, "as many rows as cols"),
        ([(torch.tensor([0, 7]), torch.tensor([0, 1]))] * 2, {}, r"indices\[0\]\[0\] must index the 7 predictions"),
        ([(torch.tensor([0, 1]), torch.tensor([0, 2]))] * 2, {}, r"indices\[0\]\[1\] must index the 2 ground truths"),
        ([(torch.tensor([1, 1]), torch.tensor([0, 1]))] * 2, {}, r"indices\[0\]\[0\] repeats an index"),
        ([(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))] * 2, {}, r"indices\[0\]\[0\] must be a torch.int64"),
        ([(torch.tensor([0, 1]), torch.tensor([0, 1]))] * 2, {"no_object_weight": 0.0}, "no_object_weight"),
        ([(torch.tensor([0, 1]), torch.tensor([0, 1]))] * 2, {"image_size": (10,)}, "image_size"),
    ],
)
def test_set_loss_errors(indices, kwargs, message):
    outputs, targets = random_batch(9, [2, 2])
    with pytest.raises(ValueError, match=message):
        set_loss(outputs, targets, indices, kwargs.pop("image_size", IMAGE_SIZE), **kwargs)


# --------------------------------------------------------------------------- the detectors


def test_sine_positions_by_hand_and_against_a_loop():
    # dim 4, a 2 x 2 map: one frequency (1); rows and columns at (0.5 / 2) 2 pi = pi / 2 and 3 pi / 2
    code = sine_positions(2, 2, 4)
    assert code.shape == (4, 4)
    torch.testing.assert_close(code[1], torch.tensor([1.0, 0.0, -1.0, 0.0]), atol=1e-6, rtol=0)  # row 0, column 1
    height, width, dim = 3, 5, 16
    quarter = dim // 4
    want = torch.zeros(height * width, dim, dtype=torch.float64)
    for i in range(height):
        for j in range(width):
            for k in range(quarter):
                f = 10000.0 ** (-k / quarter)
                y, x = (i + 0.5) / height * 2 * math.pi * f, (j + 0.5) / width * 2 * math.pi * f
                want[i * width + j, [k, quarter + k, 2 * quarter + k, 3 * quarter + k]] = torch.tensor(
                    [math.sin(y), math.cos(y), math.sin(x), math.cos(x)], dtype=torch.float64)
    torch.testing.assert_close(sine_positions(height, width, dim).double(), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        sine_positions(2, 2, 6)


def one_to_one_oracle(model, images, targets):
    """OneToOneDetector's training losses rebuilt from its head's outputs with torchvision's ops and
    scipy's assignment on OneNet's cost written out here."""
    c = model.config
    logits, boxes = model.head(torch.stack(images))
    size = tuple(images[0].shape[-2:])
    focal = l1 = giou = 0.0
    for logit, box, target in zip(logits, boxes, targets):
        with torch.no_grad():
            p = torch.sigmoid(logit.double())[:, target["labels"] - 1]  # OneNet's focal-shaped class cost, in float64
            focal_cost = c.alpha * (1 - p) ** c.gamma * -p.log() - (1 - c.alpha) * p**c.gamma * -(1 - p).log()
            cost = (c.w_class * focal_cost.float()
                    + c.w_l1 * torch.cdist(normalised_cxcywh(box, size), normalised_cxcywh(target["boxes"], size), p=1)
                    - c.w_giou * tv.generalized_box_iou(box, target["boxes"]))
        rows, cols = (torch.as_tensor(v, device=logit.device) for v in linear_sum_assignment(cost.double().cpu().numpy()))
        one_hot = torch.zeros_like(logit)
        one_hot[rows, target["labels"][cols] - 1] = 1
        focal = focal + tv.sigmoid_focal_loss(logit, one_hot, c.alpha, c.gamma, reduction="sum")
        l1 = l1 + F.l1_loss(normalised_cxcywh(box[rows], size), normalised_cxcywh(target["boxes"][cols], size), reduction="sum")
        giou = giou + (1 - tv.generalized_box_iou(box[rows], target["boxes"][cols]).diagonal()).sum()
    num = max(1, sum(len(t["labels"]) for t in targets))
    return {"classification": focal / num, "l1": c.w_l1 * l1 / num, "giou": c.w_giou * giou / num}


def _to(images, targets, device):
    return [i.to(device) for i in images], [{k: v.to(device) for k, v in t.items()} for t in targets]


@pytest.mark.parametrize("w_class", [2.0, 0.0])
def test_one_to_one_losses_equal_the_oracle(w_class, device):
    torch.manual_seed(0)
    model = OneToOneDetector(OneToOneConfig(w_class=w_class)).to(device)
    images, targets = shapes_detection_batch(3)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}  # an image without objects
    images, targets = _to(images, targets, device)
    got = model(images, targets)
    want = one_to_one_oracle(model, images, targets)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    # the prior: every score starts near 0.01, so the first classification loss is about 0.25 * 0.99^2 * -log 0.01
    # per object (1.128) plus 3 x 256 background entries of 0.75 * 0.01^2 * -log 0.99 each, spread over the objects
    assert torch.equal(model.class_tower[-1].bias, torch.full_like(model.class_tower[-1].bias, prior_bias(0.01)))
    assert torch.sigmoid(model.head(torch.stack(images))[0]).mean().item() == pytest.approx(0.01, rel=0.2)  # towers add spread
    assert 1.0 < got["classification"].item() < 1.3
    sum(got.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_one_to_one_matches_each_object_to_one_position():
    torch.manual_seed(0)
    model = OneToOneDetector()
    images, targets = shapes_detection_batch(2)
    logits, boxes = model.head(torch.stack(images))
    for (rows, cols), target, logit, box in zip(model.match(logits, boxes, targets, (128, 128)), targets, logits, boxes):
        m = len(target["labels"])
        assert rows.numel() == m and rows.unique().numel() == m and sorted(cols.tolist()) == list(range(m))
        cost = model.cost(logit, box, target, (128, 128)).detach()
        assert cost[rows, cols].sum().item() == pytest.approx(scipy_total(cost), rel=1e-6)


def test_one_to_one_inference_keeps_every_position_above_the_threshold_without_nms():
    torch.manual_seed(0)
    model = OneToOneDetector(OneToOneConfig(prior_probability=0.5, score_thresh=0.5, detections_per_img=40)).eval()
    images, _ = shapes_detection_batch(2)
    with torch.no_grad():
        detections = model(images)
        logits, boxes = model.head(torch.stack(images))
    for det, logit, box in zip(detections, logits, boxes):
        # the loop: the 40 positions whose best sigmoid score beats the threshold most, best first, clipped to the image
        kept = sorted(((max(row), int(np.argmax(row)) + 1, i) for i, row in enumerate(torch.sigmoid(logit).tolist())
                       if max(row) > 0.5), reverse=True)
        assert len(kept) > 40  # an untrained model's many overlapping detections: nothing suppresses them, the cap cuts them
        kept = kept[:40]
        torch.testing.assert_close(det["scores"], torch.tensor([s for s, _, _ in kept]))
        assert det["labels"].tolist() == [label for _, label, _ in kept]
        torch.testing.assert_close(det["boxes"], box[[i for _, _, i in kept]].clamp(0, 128))


def test_one_to_one_bad_input_is_named():
    model = OneToOneDetector()
    image = torch.zeros(3, 128, 128)
    with pytest.raises(ValueError, match="targets are required"):
        model([image])
    with pytest.raises(ValueError, match="multiples of 8"):
        model([torch.zeros(3, 100, 128)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\]"):
        model([image], [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([4])}])


def test_small_detr_losses_equal_detr_on_its_outputs(device):
    torch.manual_seed(0)
    model = SmallDetr(SmallDetrConfig(encoder_layers=1)).to(device)
    images, targets = _to(*shapes_detection_batch(3), device)
    got = model(images, targets)
    outputs = model.head(torch.stack(images))
    assert outputs["logits"].shape == (3, 12, 4) and outputs["boxes"].shape == (3, 12, 4)
    indices = []
    for logits, boxes, target in zip(outputs["logits"].detach(), outputs["boxes"].detach(), targets):
        cost = detr_matching_cost(logits, boxes, target["labels"], target["boxes"], (128, 128))
        rows, cols = linear_sum_assignment(cost.double().cpu().numpy())
        indices.append((torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)))
    raw = detr_set_criterion(outputs["logits"], outputs["boxes"], targets, indices, (128, 128))
    want = {"classification": raw["classification"], "l1": 5 * raw["l1"], "giou": 2 * raw["giou"]}
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    sum(got.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_small_detr_inference_without_nms():
    torch.manual_seed(0)
    model = SmallDetr(SmallDetrConfig(score_thresh=0.0)).eval()
    images, _ = shapes_detection_batch(2)
    with torch.no_grad():
        detections = model(images)
        outputs = model.head(torch.stack(images))
    for det, logits, boxes in zip(detections, outputs["logits"], outputs["boxes"]):
        probs = logits.softmax(-1)[:, 1:]  # without "no object"
        order = probs.max(dim=1).values.argsort(descending=True)
        assert len(det["scores"]) == 12  # every query, one detection each
        torch.testing.assert_close(det["scores"], probs.max(dim=1).values[order])
        torch.testing.assert_close(det["labels"], probs.argmax(dim=1)[order] + 1)
        torch.testing.assert_close(det["boxes"], boxes[order].clamp(0, 128))


def test_small_detr_bad_input_is_named():
    model = SmallDetr()
    with pytest.raises(ValueError, match="targets are required"):
        model([torch.zeros(3, 128, 128)])
    with pytest.raises(ValueError, match="multiples of 8"):
        model.eval()([torch.zeros(3, 100, 128)])


@pytest.mark.parametrize(
    ("config", "field", "value"),
    [
        (OneToOneConfig, "num_classes", 1),
        (OneToOneConfig, "channels", 48),
        (OneToOneConfig, "prior_probability", 0.0),
        (OneToOneConfig, "w_class", -1.0),
        (OneToOneConfig, "box_scale", 0.0),
        (OneToOneConfig, "image_std", (0.25, 0.0, 0.25)),
        (SmallDetrConfig, "num_classes", 1),
        (SmallDetrConfig, "hidden", 30),
        (SmallDetrConfig, "heads", 3),
        (SmallDetrConfig, "num_queries", 0),
        (SmallDetrConfig, "encoder_layers", -1),
        (SmallDetrConfig, "no_object_weight", 0.0),
        (SmallDetrConfig, "image_mean", (0.5, 0.5)),
    ],
)
def test_set_detector_configs_name_the_field(config, field, value):
    with pytest.raises(ValueError, match="hidden" if field == "heads" else field):
        config(**{field: value})


@pytest.mark.parametrize("model_class", [OneToOneDetector, SmallDetr])
def test_set_detectors_overfit_four_images(model_class):
    # 60 AdamW steps on 4 shapes images: the summed loss must fall well below its start
    torch.manual_seed(0)
    totals = training_losses(model_class(), *shapes_detection_batch(4))
    assert sum(totals[-5:]) / 5 < 0.5 * sum(totals[:5]) / 5
