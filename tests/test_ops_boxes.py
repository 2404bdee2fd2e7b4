"""cs_dense.ops box geometry against torchvision.ops, hand computations and gradcheck."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tv
from reference_loops import loop_iou, random_boxes

from cs_dense.data import make_sample
from cs_dense.ops import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou,
    masks_to_boxes,
    remove_small_boxes,
)

FLOAT_DTYPES = [torch.float16, torch.float32, torch.float64]
FORMATS = ["xyxy", "xywh", "cxcywh"]

# For float32/float64 our IoU arithmetic is torchvision's operation for operation, so
# results should agree to the last bit; the tolerances leave room for another
# vectorisation on other hardware. Both return float32 for float16 boxes, but
# torchvision subtracts corners in float16 before upcasting while we upcast first, so
# intersections differ by float16 rounding (~1e-3 relative to a 40-pixel side).
TOLERANCES = {
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.float32: dict(rtol=1e-6, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}


# ---------------------------------------------------------------- hand-computed cases


def test_iou_and_giou_by_hand(device):
    # A = (10,10)-(50,50), B = (30,30)-(70,70): each 40 x 40 = 1600.
    # Overlap (30,30)-(50,50) = 400; union = 1600 + 1600 - 400 = 2800 -> IoU = 1/7.
    # Enclosing box (10,10)-(70,70) = 3600 -> GIoU = 1/7 - (3600 - 2800)/3600 = 1/7 - 2/9 = -5/63.
    a = torch.tensor([[10.0, 10, 50, 50]], device=device)
    b = torch.tensor([[30.0, 30, 70, 70]], device=device)
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7]], device=device))
    torch.testing.assert_close(generalized_box_iou(a, b), torch.tensor([[-5 / 63]], device=device))


def test_disjoint_and_touching_by_hand(device):
    # C = (0,0)-(10,10) and D = (20,0)-(30,10) are 10 apart: IoU 0, union 200,
    # enclosing (0,0)-(30,10) = 300 -> GIoU = 0 - 100/300 = -1/3.
    # E = (10,0)-(20,10) touches C along an edge: IoU 0, enclosing 200 = union -> GIoU 0.
    c = torch.tensor([[0.0, 0, 10, 10]], device=device)
    de = torch.tensor([[20.0, 0, 30, 10], [10.0, 0, 20, 10]], device=device)
    torch.testing.assert_close(box_iou(c, de), torch.tensor([[0.0, 0.0]], device=device))
    torch.testing.assert_close(generalized_box_iou(c, de), torch.tensor([[-1 / 3, 0.0]], device=device))


def test_area_by_hand():
    boxes = torch.tensor([[10.0, 20, 50, 80], [3, 3, 3, 9]])  # 40 x 60, and zero width
    torch.testing.assert_close(box_area(boxes), torch.tensor([2400.0, 0.0]))


def test_iou_of_a_box_with_itself_is_one():
    boxes = random_boxes(20, seed=1, dtype=torch.float64)
    torch.testing.assert_close(box_iou(boxes, boxes).diagonal(), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(generalized_box_iou(boxes, boxes).diagonal(), torch.ones(20, dtype=torch.float64))


# ---------------------------------------------------------------- against torchvision


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchvision_on_random_boxes(device, dtype, seed):
    boxes1 = random_boxes(37, seed, dtype, device)
    boxes2 = random_boxes(23, seed + 100, dtype, device)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(box_area(boxes1), tv.box_area(boxes1), **tol)
    torch.testing.assert_close(box_iou(boxes1, boxes2), tv.box_iou(boxes1, boxes2), **tol)
    torch.testing.assert_close(generalized_box_iou(boxes1, boxes2), tv.generalized_box_iou(boxes1, boxes2), **tol)


def test_matches_slow_loop_reference():
    boxes1 = random_boxes(15, seed=3, dtype=torch.float64)
    boxes2 = random_boxes(11, seed=4, dtype=torch.float64)
    expected = torch.tensor([[loop_iou(a, b) for b in boxes2.tolist()] for a in boxes1.tolist()], dtype=torch.float64)
    torch.testing.assert_close(box_iou(boxes1, boxes2), expected, **TOLERANCES[torch.float64])


def test_integer_boxes_give_float_iou_like_torchvision():
    boxes1 = random_boxes(8, seed=5).round().long()
    boxes2 = random_boxes(6, seed=6).round().long()
    ours = box_iou(boxes1, boxes2)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, tv.box_iou(boxes1, boxes2))


def test_zero_area_pairs_give_zero_where_torchvision_gives_nan():
    # Two degenerate boxes: intersection 0, union 0. torchvision returns 0/0 = NaN; we
    # return 0 (as COCO does). A degenerate box against a real one is 0 in both.
    degenerate = torch.tensor([[5.0, 5, 5, 5], [0, 0, 10, 0]])
    real = torch.tensor([[0.0, 0, 10, 10]])
    assert tv.box_iou(degenerate, degenerate).isnan().all()
    torch.testing.assert_close(box_iou(degenerate, degenerate), torch.zeros(2, 2))
    torch.testing.assert_close(box_iou(degenerate, real), tv.box_iou(degenerate, real))
    # GIoU: the two degenerate boxes span (0,0)-(10,5): enclosing 50, union 0 -> -1;
    # a degenerate box with itself has an empty enclosing box -> 0 (torchvision: NaN).
    torch.testing.assert_close(generalized_box_iou(degenerate, degenerate), torch.tensor([[0.0, -1.0], [-1.0, 0.0]]))


def test_empty_inputs_give_empty_outputs(device):
    empty = torch.zeros(0, 4, device=device)
    boxes = random_boxes(3, seed=7, device=device)
    assert box_area(empty).shape == (0,)
    assert box_iou(empty, boxes).shape == (0, 3)
    assert box_iou(boxes, empty).shape == (3, 0)
    assert generalized_box_iou(empty, empty).shape == (0, 0)
    assert box_convert(empty, "xyxy", "cxcywh").shape == (0, 4)


# ---------------------------------------------------------------- box_convert


def test_box_convert_by_hand():
    # x1=10, y1=20, x2=50, y2=80 -> w=40, h=60, centre (30, 50)
    xyxy = torch.tensor([[10.0, 20, 50, 80]])
    torch.testing.assert_close(box_convert(xyxy, "xyxy", "xywh"), torch.tensor([[10.0, 20, 40, 60]]))
    torch.testing.assert_close(box_convert(xyxy, "xyxy", "cxcywh"), torch.tensor([[30.0, 50, 40, 60]]))
    torch.testing.assert_close(box_convert(torch.tensor([[30.0, 50, 40, 60]]), "cxcywh", "xywh"), torch.tensor([[10.0, 20, 40, 60]]))


@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_box_convert_matches_torchvision_and_round_trips(device, in_fmt, out_fmt):
    boxes = tv.box_convert(random_boxes(50, seed=8, dtype=torch.float64, device=device), "xyxy", in_fmt)
    converted = box_convert(boxes, in_fmt, out_fmt)
    torch.testing.assert_close(converted, tv.box_convert(boxes, in_fmt, out_fmt))
    torch.testing.assert_close(box_convert(converted, out_fmt, in_fmt), boxes)


def test_box_convert_keeps_leading_dimensions_and_does_not_alias():
    boxes = random_boxes(6, seed=9).reshape(2, 3, 4)
    assert box_convert(boxes, "xyxy", "cxcywh").shape == (2, 3, 4)
    same = box_convert(boxes, "xyxy", "xyxy")
    same += 1
    assert not torch.equal(same, boxes)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("fn", [box_iou, generalized_box_iou])
def test_gradcheck(fn):
    boxes1 = random_boxes(4, seed=10, dtype=torch.float64).requires_grad_()
    boxes2 = random_boxes(5, seed=11, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(fn, (boxes1, boxes2))


def test_gradient_is_finite_for_degenerate_pairs():
    boxes = torch.tensor([[5.0, 5, 5, 5], [1, 1, 3, 3]], dtype=torch.float64, requires_grad=True)
    (box_iou(boxes, boxes).sum() + generalized_box_iou(boxes, boxes).sum()).backward()
    assert torch.isfinite(boxes.grad).all()


# ---------------------------------------------------------------- validation


def test_inputs_are_not_modified():
    boxes1, boxes2 = random_boxes(5, seed=12), random_boxes(4, seed=13)
    copies = boxes1.clone(), boxes2.clone()
    box_iou(boxes1, boxes2)
    generalized_box_iou(boxes1, boxes2)
    box_convert(boxes1, "cxcywh", "xyxy")
    assert torch.equal(boxes1, copies[0]) and torch.equal(boxes2, copies[1])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: box_iou(torch.zeros(3, 5), torch.zeros(2, 4)), "boxes1 must have shape"),
        (lambda: box_iou(torch.zeros(3, 4), torch.zeros(4)), "boxes2 must have shape"),
        (lambda: generalized_box_iou(torch.zeros(2, 4), torch.tensor([[0.0, 0, 1, 1], [5, 0, 4, 1]])), "boxes2 .*row 1"),
        (lambda: box_iou(torch.tensor([[0.0, 3, 1, 2]]), torch.zeros(1, 4)), "boxes1 must satisfy"),
        (lambda: box_area([[0, 0, 1, 1]]), "boxes must be a torch.Tensor"),
        (lambda: box_convert(torch.zeros(2, 4), "xyxy", "yxyx"), "out_fmt must be one of"),
        (lambda: box_convert(torch.zeros(2, 4), "ltrb", "xyxy"), "in_fmt must be one of"),
        (lambda: box_convert(torch.zeros(2, 3), "xyxy", "xywh"), "boxes must be a tensor of shape"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_masks_to_boxes_is_torchvision_plus_one(device):
    gen = torch.Generator().manual_seed(7)
    masks = torch.rand(40, 23, 31, generator=gen) < 0.002  # sparse: many small and some empty masks
    masks[0] = True  # the whole image
    masks[1, 5, 9] = True  # a single pixel...
    masks[1, 5, 10:] = False
    masks[2] = False  # an empty mask
    expected = tv.masks_to_boxes(masks.to(device).float())
    expected[:, 2:] += 1
    expected[~masks.flatten(1).any(1)] = 0
    assert masks[1].sum() >= 1 and (~masks.flatten(1).any(1)).sum() >= 1
    torch.testing.assert_close(masks_to_boxes(masks.to(device)), expected)


def test_masks_to_boxes_matches_the_shapes_dataset():
    for index in range(20):
        target = make_sample(index, "train")[1]
        torch.testing.assert_close(masks_to_boxes(target["masks"]), target["boxes"])


def test_masks_to_boxes_hand_case_and_errors():
    mask = torch.zeros(1, 4, 6, dtype=torch.uint8)
    mask[0, 1:3, 2:5] = 1  # rows 1-2, columns 2-4
    assert masks_to_boxes(mask).tolist() == [[2.0, 1.0, 5.0, 3.0]]
    assert masks_to_boxes(torch.zeros(0, 4, 6)).shape == (0, 4)
    assert masks_to_boxes(torch.zeros(2, 0, 6)).tolist() == [[0.0] * 4] * 2
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        masks_to_boxes(torch.zeros(4, 6))


@pytest.mark.parametrize("seed", range(3))
def test_clip_and_remove_small_match_torchvision(device, seed):
    boxes = random_boxes(40, seed, torch.float64, device, corners=(-30, 110), sides=(0, 40), tiny=0.2)
    clipped = clip_boxes_to_image(boxes, (64, 96))
    torch.testing.assert_close(clipped, tv.clip_boxes_to_image(boxes, (64, 96)))
    for min_size in (0.0, 0.5, 5.0):
        assert torch.equal(remove_small_boxes(clipped, min_size), tv.remove_small_boxes(clipped, min_size))
    assert clip_boxes_to_image(boxes.reshape(2, 20, 4), (64, 96)).shape == (2, 20, 4)


def test_remove_small_boxes_keeps_a_side_equal_to_min_size():
    boxes = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1.999, 5]])  # the second is just too narrow
    assert remove_small_boxes(boxes, 2.0).tolist() == [0]
    assert remove_small_boxes(torch.zeros(0, 4), 1.0).shape == (0,)
    with pytest.raises(ValueError, match=r"boxes must be a tensor of shape \[N, 4\]"):
        remove_small_boxes(torch.zeros(3), 1.0)
