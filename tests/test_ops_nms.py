"""cs_dense.ops NMS against torchvision.ops, slow loop references and hand cases."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tv
from reference_loops import loop_iou

from cs_dense.ops import batched_nms, nms, soft_nms


def clustered_boxes(n: int, seed: int, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Seeded detector-like output: ~n/8 objects, each with jittered candidate boxes.

    Scores are a random permutation of distinct values, so the order is tie-free and
    torchvision's (unspecified) tie order never matters.
    """
    g = torch.Generator().manual_seed(seed)
    n_objects = max(1, n // 8)
    centres = torch.rand(n_objects, 2, generator=g, dtype=torch.float64) * 200
    sizes = torch.rand(n_objects, 2, generator=g, dtype=torch.float64) * 60 + 5
    owner = torch.randint(0, n_objects, (n,), generator=g)
    centre = centres[owner] + torch.randn(n, 2, generator=g, dtype=torch.float64) * sizes[owner] * 0.15
    half = sizes[owner] * (1 + 0.2 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp(0.5, 1.5) / 2
    boxes = torch.cat([centre - half, centre + half], dim=1).to(dtype=dtype, device=device)
    scores = ((torch.randperm(n, generator=g) + 1).to(torch.float64) / n).to(dtype=dtype, device=device)
    return boxes, scores


def loop_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """Slow reference greedy NMS: visit by (-score, index), keep unless IoU > t with a kept box."""
    b, s = boxes.tolist(), scores.tolist()
    keep: list[int] = []
    for i in sorted(range(len(s)), key=lambda i: (-s[i], i)):
        if all(loop_iou(b[i], b[k]) <= iou_threshold for k in keep):
            keep.append(i)
    return keep


def loop_batched_nms(boxes, scores, idxs, iou_threshold) -> list[int]:
    """Slow reference: loop_nms per category, merged by (-score, index)."""
    keep: list[int] = []
    for c in sorted(set(idxs.tolist())):
        members = [i for i, k in enumerate(idxs.tolist()) if k == c]
        keep += [members[j] for j in loop_nms(boxes[members], scores[members], iou_threshold)]
    s = scores.tolist()
    return sorted(keep, key=lambda i: (-s[i], i))


def loop_soft_nms(boxes, scores, sigma, score_threshold, method, iou_threshold):
    """Slow reference Soft-NMS in Python floats, following the documented conventions."""
    b, s = boxes.tolist(), scores.tolist()
    remaining = [i for i in range(len(s)) if s[i] >= score_threshold]
    keep, kept_scores = [], []
    while remaining:
        best = max(remaining, key=lambda i: (s[i], -i))  # highest score, then lowest index
        remaining.remove(best)
        keep.append(best)
        kept_scores.append(s[best])
        for i in remaining:
            o = loop_iou(b[best], b[i])
            if method == "gaussian":
                s[i] *= math.exp(-o * o / sigma)
            elif o > iou_threshold:
                s[i] *= 1 - o
        remaining = [i for i in remaining if s[i] >= score_threshold]
    return keep, kept_scores


# ---------------------------------------------------------------- nms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "seed"), [(1, 0), (17, 1), (300, 2), (700, 3)])  # 700 spans several blocks
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(device, dtype, n, seed, iou_threshold):
    boxes, scores = clustered_boxes(n, seed, dtype, device)
    keep = nms(boxes, scores, iou_threshold)
    assert keep.dtype == torch.int64 and keep.device == boxes.device
    torch.testing.assert_close(keep, tv.nms(boxes, scores, iou_threshold), rtol=0, atol=0)


@pytest.mark.parametrize("seed", [4, 5])
def test_nms_matches_slow_loop_reference(seed):
    boxes, scores = clustered_boxes(120, seed, torch.float64)
    assert nms(boxes, scores, 0.5).tolist() == loop_nms(boxes, scores, 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_threshold_edges_by_hand(dtype):
    # A = (0,0)-(10,10) holds B = (0,0)-(10,h): IoU = 10h / 100 = h / 10.
    # h = 5 gives exactly 0.5 (exact in binary): at threshold 0.5 B survives (strict >);
    # h = 5 + 2**-10 is just above (suppressed), h = 5 - 2**-10 just below (kept).
    scores = torch.tensor([0.9, 0.8], dtype=dtype)
    for h, expected in [(5.0, [0, 1]), (5 + 2**-10, [0]), (5 - 2**-10, [0, 1])]:
        boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, h]], dtype=dtype)
        assert nms(boxes, scores, 0.5).tolist() == expected, h
        assert tv.nms(boxes, scores, 0.5).tolist() == expected, h


def test_nms_threshold_that_is_not_representable_follows_torchvision():
    # h = 3: IoU = 30 / 100. In float64 that is the double nearest 0.3, equal to the
    # threshold, so B survives. In float32 it rounds to 0.30000001192..., which is
    # greater than the double 0.3 that torchvision compares with, so B is suppressed.
    # A naive float32 comparison against float32(0.3) would keep it.
    for dtype, expected in [(torch.float64, [0, 1]), (torch.float32, [0])]:
        boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 3]], dtype=dtype)
        scores = torch.tensor([0.9, 0.8], dtype=dtype)
        assert tv.nms(boxes, scores, 0.3).tolist() == expected
        assert nms(boxes, scores, 0.3).tolist() == expected


def test_nms_ties_go_to_the_lower_index():
    # Identical boxes with equal scores: the lower index is visited first and kept.
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = torch.tensor([0.5, 0.9, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [1, 0]
    assert nms(boxes.flip(0), scores.flip(0), 0.5).tolist() == [1, 0]


def test_nms_float16_agrees_with_float32_away_from_the_threshold():
    # torchvision has no float16 NMS on the CPU; we compute IoU in float32 either way.
    boxes, scores = clustered_boxes(200, seed=6)
    boxes = boxes.half().float()  # representable in float16
    assert torch.equal(nms(boxes.half(), scores.half(), 0.5), nms(boxes, scores.half().float(), 0.5))


def test_nms_empty_and_degenerate(device):
    empty = nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64 and empty.device.type == device
    # two identical zero-area boxes: IoU 0 here (NaN in torchvision); neither suppresses
    points = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5]], device=device)
    scores = torch.tensor([0.2, 0.7], device=device)
    assert nms(points, scores, 0.5).tolist() == tv.nms(points, scores, 0.5).tolist() == [1, 0]


def test_nms_does_not_modify_inputs():
    boxes, scores = clustered_boxes(50, seed=7)
    copies = boxes.clone(), scores.clone()
    nms(boxes, scores, 0.5)
    batched_nms(boxes, scores, torch.arange(50) % 3, 0.5)
    soft_nms(boxes, scores)
    assert torch.equal(boxes, copies[0]) and torch.equal(scores, copies[1])


# ---------------------------------------------------------------- batched_nms


@pytest.mark.parametrize(("n", "n_classes", "seed"), [(40, 3, 8), (600, 4, 9), (1500, 20, 10)])
def test_batched_nms_matches_torchvision(device, n, n_classes, seed):
    # torchvision shifts classes apart below 4000 coordinates and loops above; both paths covered
    boxes, scores = clustered_boxes(n, seed, device=device)
    idxs = torch.randint(0, n_classes, (n,), generator=torch.Generator().manual_seed(seed)).to(device)
    torch.testing.assert_close(batched_nms(boxes, scores, idxs, 0.5), tv.batched_nms(boxes, scores, idxs, 0.5), rtol=0, atol=0)


def test_batched_nms_matches_slow_loop_reference():
    boxes, scores = clustered_boxes(150, seed=11, dtype=torch.float64)
    idxs = torch.randint(0, 4, (150,), generator=torch.Generator().manual_seed(11))
    assert batched_nms(boxes, scores, idxs, 0.4).tolist() == loop_batched_nms(boxes, scores, idxs, 0.4)


def test_batched_nms_never_suppresses_across_categories():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


def test_batched_nms_empty():
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


# ---------------------------------------------------------------- soft_nms


def test_soft_nms_by_hand():
    # A = (10,10)-(50,50), B = (30,30)-(70,70): IoU 1/7 (see test_ops_boxes). C is far away.
    boxes = torch.tensor([[10.0, 10, 50, 50], [30, 30, 70, 70], [100, 100, 110, 110]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.85], dtype=torch.float64)
    # Gaussian, sigma 0.5: B becomes 0.8 * exp(-(1/7)^2 / 0.5) = 0.8 * exp(-2/49) ~ 0.768;
    # the order of selection is A (0.9), C (0.85), B.
    keep, kept_scores = soft_nms(boxes, scores, sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(kept_scores, torch.tensor([0.9, 0.85, 0.8 * math.exp(-2 / 49)], dtype=torch.float64))
    # Linear with N_t = 0.1 < 1/7: B becomes 0.8 * (1 - 1/7) = 24/35 ~ 0.686.
    keep, kept_scores = soft_nms(boxes, scores, method="linear", iou_threshold=0.1)
    torch.testing.assert_close(kept_scores, torch.tensor([0.9, 0.85, 0.8 * 6 / 7], dtype=torch.float64))
    # Linear with N_t = 0.3 > 1/7: nothing decays.
    keep, kept_scores = soft_nms(boxes, scores, method="linear", iou_threshold=0.3)
    torch.testing.assert_close(kept_scores, torch.tensor([0.9, 0.85, 0.8], dtype=torch.float64))


def test_soft_nms_linear_threshold_is_strict_and_score_threshold_drops():
    # B inside A with IoU exactly 0.5: at N_t = 0.5 it is not decayed (strict >).
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert soft_nms(boxes, scores, method="linear", iou_threshold=0.5)[1].tolist() == [0.9, 0.8]
    # Identical boxes: linear decay multiplies by 1 - 1 = 0, below any positive threshold.
    same = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    keep, kept_scores = soft_nms(same, torch.tensor([0.9, 0.8]), method="linear", iou_threshold=0.5)
    assert keep.tolist() == [0] and kept_scores.tolist() == pytest.approx([0.9])
    # Initial scores below the threshold are dropped too.
    assert soft_nms(boxes, torch.tensor([0.9, 0.0005], dtype=torch.float64))[0].tolist() == [0]


@pytest.mark.parametrize(("method", "sigma", "iou_threshold"), [("gaussian", 0.5, 0.3), ("gaussian", 0.1, 0.3), ("linear", 0.5, 0.3), ("linear", 0.5, 0.6)])
def test_soft_nms_matches_slow_loop_reference(device, method, sigma, iou_threshold):
    boxes, scores = clustered_boxes(60, seed=12, dtype=torch.float64, device=device)
    keep, kept_scores = soft_nms(boxes, scores, sigma=sigma, score_threshold=0.01, method=method, iou_threshold=iou_threshold)
    ref_keep, ref_scores = loop_soft_nms(boxes.cpu(), scores.cpu(), sigma, 0.01, method, iou_threshold)
    assert keep.tolist() == ref_keep
    torch.testing.assert_close(kept_scores.cpu(), torch.tensor(ref_scores, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert (kept_scores[1:] <= kept_scores[:-1]).all()  # decreasing decayed score


def test_soft_nms_ties_go_to_the_lower_index_and_empty_works():
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    assert soft_nms(boxes, torch.tensor([0.5, 0.5]))[0].tolist() == [0, 1]
    keep, kept_scores = soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert keep.shape == kept_scores.shape == (0,) and keep.dtype == torch.int64


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: nms(torch.zeros(3, 4), torch.zeros(2), 0.5), "scores must be a tensor of shape \\[3\\]"),
        (lambda: nms(torch.zeros(3, 5), torch.zeros(3), 0.5), "boxes must have shape"),
        (lambda: nms(torch.tensor([[2.0, 0, 1, 1]]), torch.zeros(1), 0.5), "boxes must satisfy"),
        (lambda: nms(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2), 0.5), "boxes must be floating point"),
        (lambda: batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5), "idxs must be a tensor of shape"),
        (lambda: soft_nms(torch.zeros(2, 4), torch.zeros(2), method="hard"), "method must be one of"),
        (lambda: soft_nms(torch.zeros(2, 4), torch.zeros(2), sigma=0.0), "sigma must be > 0"),
        (lambda: soft_nms(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)), "scores must be floating point"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
