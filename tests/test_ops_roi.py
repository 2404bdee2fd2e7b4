"""cs_dense.ops.roi against torchvision.ops (the oracle), hand computations and gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from reference_loops import random_boxes

from cs_dense.ops.roi import bilinear_sample, boxes_to_rois, roi_align, roi_pool

DTYPES = [torch.float32, torch.float64]
SCALES = [1.0, 0.5, 0.25, 1 / 16]
OUTPUT_SIZES = [7, (3, 5)]
FEATURE_SHAPES = [(1, 3, 13, 17), (2, 4, 20, 20)]

# RoI Align: means of at most a few hundred interpolated N(0, 1) values, summed in a
# different order from torchvision's kernel (rows first, then columns). RoI Pool only
# compares and copies values, so it must agree exactly.
TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}
EXACT = dict(rtol=0, atol=0)


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def feature_boxes(num: int, height: int, width: int, scale: float, seed: int) -> torch.Tensor:
    """Tensor[num, 4] xyxy in image pixels (feature cells / scale), float64.

    Corners range from 30 % before the map to 10 % past it, so many boxes hang off an
    edge; a quarter of the boxes are under one cell wide or high, and the first is
    degenerate (zero width and height).
    """
    side = min(height, width)
    boxes = random_boxes(num, seed, torch.float64, corners=(-0.3 * side, 1.1 * side), sides=(0.0, 0.8 * side), tiny=0.25)
    boxes[:1, 2:] = boxes[:1, :2]  # always a degenerate box (when there are any)
    return boxes / scale


def random_rois(batch: int, height: int, width: int, scale: float, seed: int) -> list[torch.Tensor]:
    """One random set of boxes per image (sizes differ; image 0 may get none)."""
    g = torch.Generator().manual_seed(seed + 1000)
    counts = torch.randint(0, 12, (batch,), generator=g).tolist()
    return [feature_boxes(n, height, width, scale, seed + 10 * i) for i, n in enumerate(counts)]


def as_tensor_format(per_image: list[torch.Tensor]) -> torch.Tensor:
    """List of Tensor[L, 4] -> Tensor[K, 5] rows (batch_index, x1, y1, x2, y2)."""
    rows = [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(per_image)]
    return torch.cat(rows)


def cases(dtype: torch.dtype, device: str, box_format: str):
    """(feature map, boxes in the requested format, scale, output size, label) for every setting."""
    for seed in range(3):
        for shape in FEATURE_SHAPES:
            x = randn(*shape, seed=seed, dtype=dtype, device=device)
            for scale in SCALES:
                per_image = [b.to(dtype=dtype, device=device) for b in random_rois(shape[0], *shape[2:], scale, seed)]
                boxes = per_image if box_format == "list" else as_tensor_format(per_image)
                for output_size in OUTPUT_SIZES:
                    yield x, boxes, scale, output_size, f"seed={seed} shape={shape} scale={scale} out={output_size}"


# ---------------------------------------------------------------- a slow reference


def loop_roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """RoI Align one box, bin and sample at a time, in Python floats around bilinear_sample."""
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    out = x.new_zeros(rois.shape[0], x.shape[1], ph, pw)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        shift = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * spatial_scale - shift for v in (x1, y1, x2, y2))
        h, w = y2 - y1, x2 - x1
        if not aligned:
            h, w = max(h, 1.0), max(w, 1.0)
        n_h = sampling_ratio if sampling_ratio > 0 else math.ceil(h / ph)
        n_w = sampling_ratio if sampling_ratio > 0 else math.ceil(w / pw)
        for p in range(ph):
            for q in range(pw):
                total = x.new_zeros(x.shape[1])
                for i in range(n_h):
                    for j in range(n_w):
                        y = y1 + p * h / ph + (i + 0.5) * h / ph / n_h
                        xx = x1 + q * w / pw + (j + 0.5) * w / pw / n_w
                        total = total + bilinear_sample(x[int(b)], y, xx)
                out[k, :, p, q] = total / max(n_h * n_w, 1)
    return out


# ---------------------------------------------------------------- bilinear_sample


def test_bilinear_sample_by_hand():
    # The map, value at (y, x) = (row, column):
    #   x:   0  1
    #   y=0  0  1
    #   y=1  2  3
    f = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    torch.testing.assert_close(bilinear_sample(f, 0.5, 0.5), torch.tensor([1.5]))  # mean of all four
    torch.testing.assert_close(bilinear_sample(f, 0.0, 0.25), torch.tensor([0.25]))  # along the top row
    torch.testing.assert_close(bilinear_sample(f, 0.75, 1.0), torch.tensor([2.5]))  # 1 + 0.75 * (3 - 1)
    # at integer points, the cell itself
    ys, xs = torch.meshgrid(torch.arange(2.0), torch.arange(2.0), indexing="ij")
    torch.testing.assert_close(bilinear_sample(f, ys, xs), f)
    # y = 0.25, x = 0.5 on two channels: 0.75 * 0.5 + 0.25 * 2.5 = 1.0, and 10x that
    two = torch.cat([f, 10 * f])
    torch.testing.assert_close(bilinear_sample(two, torch.tensor([0.25]), torch.tensor([0.5])), torch.tensor([[1.0], [10.0]]))


def test_bilinear_sample_border_rules():
    f = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # H = W = 2
    # [-1, 0) clamps to 0; (H - 1, H] clamps to H - 1 (edge repeated); beyond -1 or H reads 0.
    y = torch.tensor([-1.0, -0.5, 1.5, 2.0, -1.01, 2.01, 0.0, 0.0, 0.0, 0.0])
    x = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0, 0.0, -1.0, 2.0, -1.01, 2.01])
    expected = torch.tensor([[0.0, 1.0, 2.5, 3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    torch.testing.assert_close(bilinear_sample(f, y, x), expected)


def test_bilinear_sample_is_roi_align_with_one_sample(device):
    # A 1 x 1 output with sampling_ratio=1 is one sample at the box centre (boxes of
    # at least one cell, so aligned=False does not stretch them).
    x = randn(2, 3, 9, 11, seed=0, device=device)
    g = torch.Generator().manual_seed(1)
    corner = torch.rand(20, 2, generator=g, dtype=torch.float64) * 14 - 2  # partly outside too
    boxes = torch.cat([corner, corner + 1 + 4 * torch.rand(20, 2, generator=g, dtype=torch.float64)], dim=1)
    boxes = boxes.to(device)
    batch = torch.arange(20, device=device) % 2
    rois = torch.cat([batch[:, None].double(), boxes], dim=1)
    for aligned in (False, True):
        pooled = roi_align(x, rois, 1, sampling_ratio=1, aligned=aligned)[:, :, 0, 0]  # [K, C]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 - 0.5 * aligned, (boxes[:, 1] + boxes[:, 3]) / 2 - 0.5 * aligned
        for k in range(20):
            torch.testing.assert_close(pooled[k], bilinear_sample(x[batch[k]], cy[k], cx[k]))


def test_bilinear_sample_broadcasts_and_differentiates():
    f = randn(3, 4, 5, seed=2).requires_grad_()
    y = torch.tensor([[0.3], [2.7]], dtype=torch.float64)  # [2, 1]
    x = torch.tensor([0.1, 1.9, 3.6], dtype=torch.float64)  # [3]
    assert bilinear_sample(f, y, x).shape == (3, 2, 3)
    assert torch.autograd.gradcheck(lambda t: bilinear_sample(t, y, x), (f,))


def test_bilinear_sample_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"feature must be .*\[C, H, W\]"):
        bilinear_sample(torch.zeros(1, 1, 2, 2), 0.0, 0.0)
    with pytest.raises(ValueError, match="feature must be a floating-point"):
        bilinear_sample(torch.zeros(1, 2, 2, dtype=torch.int64), 0.0, 0.0)
    with pytest.raises(ValueError, match="feature must have H, W >= 1"):
        bilinear_sample(torch.zeros(1, 0, 2), 0.0, 0.0)
    with pytest.raises(ValueError, match="y and x must broadcast"):
        bilinear_sample(torch.zeros(1, 2, 2), torch.zeros(2), torch.zeros(3))


# ---------------------------------------------------------------- RoI Align


def test_roi_align_by_hand():
    f = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    whole_map = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]])  # (batch, x1, y1, x2, y2): the whole map, in pixels
    # aligned: one sample per bin at the centres of the pixels -> the map itself
    torch.testing.assert_close(roi_align(f, whole_map, 2, sampling_ratio=1, aligned=True), f)
    # aligned, one bin with 2 x 2 samples at pixel centres -> the mean, 1.5
    torch.testing.assert_close(roi_align(f, whole_map, 1, sampling_ratio=2, aligned=True), torch.tensor([[[[1.5]]]]))
    # legacy: the same box samples half a pixel lower and further right: bin centres at
    # 0.5 and 1.5; 1.5 clamps to the last row/column -> [[1.5, 2], [2.5, 3]]
    legacy = roi_align(f, whole_map, 2, sampling_ratio=1, aligned=False)
    torch.testing.assert_close(legacy, torch.tensor([[[[1.5, 2.0], [2.5, 3.0]]]]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("box_format", ["tensor", "list"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
def test_roi_align_matches_torchvision(device, dtype, box_format, aligned, sampling_ratio):
    for x, boxes, scale, output_size, label in cases(dtype, device, box_format):
        expected = torchvision.ops.roi_align(x, boxes, output_size, scale, sampling_ratio, aligned)
        actual = roi_align(x, boxes, output_size, scale, sampling_ratio, aligned)
        assert actual.dtype == dtype and actual.is_contiguous()
        torch.testing.assert_close(actual, expected, **TOLERANCES[dtype], msg=label)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_matches_a_loop(aligned, sampling_ratio):
    x = randn(2, 2, 7, 8, seed=5)
    rois = as_tensor_format(random_rois(2, 7, 8, 0.5, seed=5))
    expected = loop_roi_align(x, rois, (2, 3), 0.5, sampling_ratio, aligned)
    torch.testing.assert_close(roi_align(x, rois, (2, 3), 0.5, sampling_ratio, aligned), expected)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_gradients_match_torchvision(aligned, sampling_ratio):
    x = randn(2, 3, 13, 17, seed=7).requires_grad_()
    rois = as_tensor_format(random_rois(2, 13, 17, 0.5, seed=7))
    grad_out = randn(rois.shape[0], 3, 3, 5, seed=8)
    ours = torch.autograd.grad(roi_align(x, rois, (3, 5), 0.5, sampling_ratio, aligned), x, grad_out)[0]
    theirs = torch.autograd.grad(torchvision.ops.roi_align(x, rois, (3, 5), 0.5, sampling_ratio, aligned), x, grad_out)[0]
    torch.testing.assert_close(ours, theirs, **TOLERANCES[torch.float64])


def test_roi_align_gradcheck():
    x = randn(2, 2, 5, 6, seed=9).requires_grad_()
    rois = torch.tensor([[0, 0.3, 0.2, 4.1, 3.7], [1, -1.5, 2.0, 3.0, 6.5], [1, 2.0, 1.0, 2.4, 1.2]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (2, 3), 1.0, -1, True), (x,))
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 2, 0.5, 2, False), (x,))


# ---------------------------------------------------------------- RoI Pool


def test_roi_pool_by_hand():
    # The 4 x 4 map holds 0..15 row by row; the box (0, 0, 3, 3) spans cells 0..3
    # inclusive, so 2 x 2 bins of 2 x 2 cells, maxima at their bottom-right corners.
    f = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = roi_pool(f, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]]), 2)
    torch.testing.assert_close(out, torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    # 2.5 rounds away from zero to 3 (torch.round would give 2): the box becomes cell 3.
    out = roi_pool(f, torch.tensor([[0.0, 2.5, 2.5, 2.5, 2.5]]), 1)
    torch.testing.assert_close(out, torch.tensor([[[[15.0]]]]))
    # A box entirely off the map pools to 0.
    out = roi_pool(f, torch.tensor([[0.0, 10.0, 10.0, 12.0, 12.0]]), 2)
    torch.testing.assert_close(out, torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("box_format", ["tensor", "list"])
def test_roi_pool_matches_torchvision(device, dtype, box_format):
    for x, boxes, scale, output_size, label in cases(dtype, device, box_format):
        expected = torchvision.ops.roi_pool(x, boxes, output_size, scale)
        actual = roi_pool(x, boxes, output_size, scale)
        torch.testing.assert_close(actual, expected, **EXACT, msg=label)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
def test_roi_pool_rounds_halves_like_torchvision(dtype, scale):
    # Every scaled corner an exact half (-1.5 ... 12.5): torch.round and C's round disagree on all of them.
    g = torch.Generator().manual_seed(11)
    halves = (torch.randint(-2, 13, (40, 4), generator=g) + 0.5).double()
    halves[:, 2:] = torch.maximum(halves[:, 2:], halves[:, :2])  # keep x1 <= x2, y1 <= y2
    rois = torch.cat([torch.zeros(40, 1, dtype=torch.float64), halves / scale], dim=1).to(dtype)
    x = randn(1, 2, 11, 12, seed=12, dtype=dtype)
    for output_size in OUTPUT_SIZES:
        expected = torchvision.ops.roi_pool(x, rois, output_size, scale)
        torch.testing.assert_close(roi_pool(x, rois, output_size, scale), expected, **EXACT)


def test_roi_pool_gradients_match_torchvision():
    # Random float64 values have no ties, so "the first maximum" is "the maximum".
    x = randn(2, 3, 13, 17, seed=13).requires_grad_()
    rois = as_tensor_format(random_rois(2, 13, 17, 0.5, seed=13))
    grad_out = randn(rois.shape[0], 3, 3, 5, seed=14)
    ours = torch.autograd.grad(roi_pool(x, rois, (3, 5), 0.5), x, grad_out)[0]
    theirs = torch.autograd.grad(torchvision.ops.roi_pool(x, rois, (3, 5), 0.5), x, grad_out)[0]
    torch.testing.assert_close(ours, theirs, **TOLERANCES[torch.float64])


def test_roi_pool_gradcheck():
    # Values 0.1 apart (a shuffled ramp): no ties, and gradcheck's 1e-6 steps cannot reorder them.
    g = torch.Generator().manual_seed(15)
    x = (torch.randperm(2 * 2 * 5 * 6, generator=g).double() / 10).reshape(2, 2, 5, 6).requires_grad_()
    rois = torch.tensor([[0, 0.3, 0.2, 4.1, 3.7], [1, -1.5, 2.0, 3.0, 6.5], [1, 8.0, 8.0, 9.0, 9.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (2, 3), 1.0), (x,))


# ---------------------------------------------------------------- empty inputs and errors


@pytest.mark.parametrize("op", [roi_align, roi_pool])
def test_empty_box_sets(op, device):
    x = randn(2, 3, 5, 5, seed=16, device=device)
    for boxes in (torch.zeros(0, 5, dtype=torch.float64, device=device), [], [x.new_zeros(0, 4), x.new_zeros(0, 4)]):
        out = op(x, boxes, (2, 3))
        assert out.shape == (0, 3, 2, 3) and out.dtype == x.dtype and out.device == x.device
    assert op(x[:0], [], 4).shape == (0, 3, 4, 4)  # no images, no boxes


@pytest.mark.parametrize("op", [roi_align, roi_pool])
def test_list_and_tensor_formats_agree(op):
    x = randn(3, 2, 9, 9, seed=17)
    per_image = random_rois(3, 9, 9, 1.0, seed=17)
    torch.testing.assert_close(op(x, per_image, 3), op(x, as_tensor_format(per_image), 3), **EXACT)
    # a float32 box tensor is cast to the feature map's dtype
    torch.testing.assert_close(op(x, [b.float() for b in per_image], 3), op(x, [b.float().double() for b in per_image], 3))


@pytest.mark.parametrize("op", [roi_align, roi_pool])
@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((torch.zeros(3, 4, 4), torch.zeros(1, 5), 2), {}, r"input must be .*\[B, C, H, W\]"),
        ((torch.zeros(1, 3, 4, 4, dtype=torch.int64), torch.zeros(1, 5), 2), {}, "input must be a floating-point"),
        ((torch.zeros(1, 3, 0, 4), torch.zeros(1, 5), 2), {}, "input must have H, W >= 1"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 4), 2), {}, r"boxes must be a Tensor\[K, 5\]"),
        ((torch.zeros(1, 3, 4, 4), [torch.zeros(2, 5)], 2), {}, r"boxes\[0\] must be a Tensor\[L, 4\]"),
        ((torch.zeros(1, 3, 4, 4), [torch.zeros(1, 4), torch.zeros(1, 4)], 2), {}, "list of 2 tensors.*B=1"),
        ((torch.zeros(1, 3, 4, 4), ((0, 0, 1, 1),), 2), {}, r"boxes\[0\] must be a Tensor\[L, 4\]"),
        ((torch.zeros(1, 3, 4, 4), "boxes", 2), {}, "boxes must be a Tensor"),
        ((torch.zeros(2, 3, 4, 4), torch.tensor([[2.0, 0, 0, 1, 1]]), 2), {}, r"boxes\[:, 0\] .*\[0, 2\), row 0"),
        ((torch.zeros(2, 3, 4, 4), torch.tensor([[0.0, 0, 0, 1, 1], [-1.0, 0, 0, 1, 1]]), 2), {}, r"boxes\[:, 0\]"),
        ((torch.zeros(2, 3, 4, 4), torch.tensor([[0.5, 0, 0, 1, 1]]), 2), {}, r"boxes\[:, 0\] must be integer"),
        ((torch.zeros(1, 3, 4, 4), torch.tensor([[0.0, 2, 0, 1, 1]]), 2), {}, "boxes must satisfy x1 <= x2"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(1, 5), 0), {}, "output_size must be >= 1"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(1, 5), (3, -1)), {}, "output_size must be >= 1"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(1, 5), (3, 3, 3)), {}, "output_size must be an int or a pair"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(1, 5), 2.5), {}, "output_size must be an int or a pair"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(1, 5), 2), dict(spatial_scale=0.0), "spatial_scale must be a positive"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(1, 5), 2), dict(spatial_scale=-0.5), "spatial_scale must be a positive"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(1, 5), 2), dict(spatial_scale=math.inf), "spatial_scale must be finite"),
    ],
)
def test_rejects_bad_arguments(op, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        op(*args, **kwargs)


def test_roi_align_rejects_bad_options():
    x, rois = torch.zeros(1, 3, 4, 4), torch.zeros(1, 5)
    with pytest.raises(ValueError, match="sampling_ratio must be an int"):
        roi_align(x, rois, 2, sampling_ratio=1.5)
    with pytest.raises(ValueError, match="sampling_ratio must be an int"):
        roi_align(x, rois, 2, sampling_ratio=True)
    with pytest.raises(ValueError, match="aligned must be a bool"):
        roi_align(x, rois, 2, aligned=1)


@pytest.mark.parametrize("op", [roi_align, roi_pool])
def test_inputs_are_untouched(op):
    x = randn(2, 3, 6, 6, seed=18)
    rois = as_tensor_format(random_rois(2, 6, 6, 1.0, seed=18))
    x_before, rois_before = x.clone(), rois.clone()
    op(x, rois, 3)
    assert torch.equal(x, x_before) and torch.equal(rois, rois_before)


def test_boxes_to_rois_prefixes_each_images_boxes_with_its_index():
    first, second = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]), torch.tensor([[9.0, 10, 11, 12]])
    expected = torch.tensor([[0.0, 1, 2, 3, 4], [0, 5, 6, 7, 8], [2, 9, 10, 11, 12]])  # by hand; image 1 has none
    assert torch.equal(boxes_to_rois([first, torch.zeros(0, 4), second]), expected)
    # the same pooling either way (torchvision takes both forms)
    feature = torch.randn(3, 2, 16, 16)
    assert torch.equal(torchvision.ops.roi_align(feature, expected, 2), torchvision.ops.roi_align(feature, [first, torch.zeros(0, 4), second], 2))
    with pytest.raises(ValueError, match="non-empty list"):
        boxes_to_rois([])
    with pytest.raises(ValueError, match=r"boxes\[1\] must be a Tensor\[L, 4\]"):
        boxes_to_rois([first, torch.zeros(2, 5)])
