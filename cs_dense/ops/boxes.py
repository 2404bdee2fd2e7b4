"""Box geometry: areas, pairwise IoU and GIoU, and conversions between box formats.

Names, signatures and results follow ``torchvision.ops`` so that code written against
one runs against the other. Boxes are ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` absolute
pixels with ``x1 <= x2`` and ``y1 <= y2`` unless a function says otherwise.

One deliberate difference: a pair of boxes whose union has zero area (two degenerate
boxes) has IoU 0 here, where torchvision divides 0 by 0 and returns NaN. COCO's
evaluation code also reports 0 for such pairs, and a NaN would poison every mean or
``max`` it reaches. Non-maximum suppression is unaffected for thresholds ``>= 0``: a
NaN and a 0 both fail ``iou > threshold``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cs_dense.validation import check_tensor, describe

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def check_boxes(boxes: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``boxes`` is a valid ``Tensor[N, 4]`` of xyxy boxes.

    Args:
        boxes (Tensor[N, 4]): candidate boxes, xyxy.
        name: the argument name to quote in the error message.

    Raises:
        ValueError: if ``boxes`` is not a tensor, is not ``[N, 4]``, or has a row with
            ``x2 < x1`` or ``y2 < y1``.
    """
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {describe(boxes)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4], got {list(boxes.shape)}")
    inverted = (boxes[:, 2:] < boxes[:, :2]).any(dim=1)  # [N]
    if inverted.any():
        row = int(inverted.nonzero()[0, 0])
        raise ValueError(
            f"{name} must satisfy x1 <= x2 and y1 <= y2 (xyxy format); "
            f"row {row} is {boxes[row].tolist()}"
        )


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box.

    Args:
        boxes (Tensor[N, 4]): xyxy, pixels, ``x1 <= x2`` and ``y1 <= y2``.

    Returns:
        Tensor[N]: ``(x2 - x1) * (y2 - y1)``; dtype of ``boxes``, except that 16-bit
        dtypes are promoted to 32 bits (as in torchvision) so large areas stay finite.

    Raises:
        ValueError: if ``boxes`` is not ``[N, 4]`` or has an inverted box.
    """
    check_boxes(boxes, "boxes")
    return _area(boxes)


def _area(boxes: Tensor) -> Tensor:
    """Unchecked area of ``[N, 4]`` xyxy boxes, computed in at least 32 bits."""
    boxes = upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def upcast(boxes: Tensor) -> Tensor:
    """Promote 16-bit dtypes to 32 bits, as torchvision does before any area.

    A 256 x 256 box already has an area (65536) beyond float16's largest finite value
    (65504), so areas, intersections and unions are never formed in 16 bits.
    """
    if boxes.is_floating_point():
        return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()
    return boxes if boxes.dtype in (torch.int32, torch.int64) else boxes.int()


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with 0 wherever the denominator is 0.

    Only called where a zero denominator implies a zero numerator (an empty union has
    an empty intersection), so 0 is the limit, not a guess. Replacing the denominator
    rather than the quotient keeps the gradient finite.
    """
    return numerator / torch.where(denominator == 0, torch.ones_like(denominator), denominator)


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas of two sets of (unchecked) xyxy boxes.

    For float32/float64 the arithmetic matches torchvision's (and its NMS kernel's)
    operation for operation, so the IoU is bit-identical. 16-bit boxes are upcast before
    anything is subtracted; torchvision subtracts corners in 16 bits first, so there the
    results differ by float16 rounding (ours rounds less). Coordinates are handled one at
    a time on contiguous ``[N, M]`` planes, which is faster than an ``[N, M, 2]`` tensor;
    the in-place steps act only on fresh temporaries (gradcheck confirms the gradients).

    Args:
        boxes1 (Tensor[N, 4]): xyxy.
        boxes2 (Tensor[M, 4]): xyxy.

    Returns:
        tuple[Tensor[N, M], Tensor[N, M]]: intersection and union areas, in at least
        32 bits (see :func:`upcast`).
    """
    boxes1, boxes2 = upcast(boxes1), upcast(boxes2)
    x1, y1, x2, y2 = boxes1.unbind(dim=1)  # each [N]
    u1, v1, u2, v2 = boxes2.unbind(dim=1)  # each [M]
    # [N, 1] against [M] broadcasts to [N, M]
    width = torch.minimum(x2[:, None], u2).sub_(torch.maximum(x1[:, None], u1)).clamp_(min=0)
    height = torch.minimum(y2[:, None], v2).sub_(torch.maximum(y1[:, None], v1)).clamp_(min=0)
    inter = width.mul_(height)  # [N, M]
    union = (_area(boxes1)[:, None] + _area(boxes2)).sub_(inter)  # [N, M]
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of boxes.

    ``IoU(a, b) = area(a ∩ b) / area(a ∪ b)``; a pair whose union is empty (two
    zero-area boxes) gets 0 (torchvision: NaN).

    Args:
        boxes1 (Tensor[N, 4]): xyxy, pixels, ``x1 <= x2`` and ``y1 <= y2``.
        boxes2 (Tensor[M, 4]): xyxy, pixels, ``x1 <= x2`` and ``y1 <= y2``.

    Returns:
        Tensor[N, M]: IoU in ``[0, 1]``; entry ``[i, j]`` compares ``boxes1[i]`` with
        ``boxes2[j]``. float64 for float64 boxes, float32 otherwise (16-bit and
        integer boxes included, as in torchvision).

    Raises:
        ValueError: if either argument is not ``[*, 4]`` or has an inverted box.
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    return unchecked_box_iou(boxes1, boxes2)


def unchecked_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """:func:`box_iou` without the argument checks, for callers that have made them (NMS
    calls it once per kept box): ``[N, 4] x [M, 4] -> [N, M]``."""
    inter, union = _inter_union(boxes1, boxes2)
    return _safe_divide(inter, union)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalised IoU (Rezatofighi et al., CVPR 2019) of every pair of boxes.

    ``GIoU(a, b) = IoU(a, b) - area(C \\ (a ∪ b)) / area(C)`` where ``C`` is the smallest
    box enclosing both. It lies in ``(-1, 1]`` and, unlike IoU, keeps a useful gradient
    when the boxes do not overlap. A pair whose enclosing box has zero area gets 0
    (torchvision: NaN).

    Args:
        boxes1 (Tensor[N, 4]): xyxy, pixels, ``x1 <= x2`` and ``y1 <= y2``.
        boxes2 (Tensor[M, 4]): xyxy, pixels, ``x1 <= x2`` and ``y1 <= y2``.

    Returns:
        Tensor[N, M]: GIoU; entry ``[i, j]`` compares ``boxes1[i]`` with ``boxes2[j]``;
        dtype as for :func:`box_iou`.

    Raises:
        ValueError: if either argument is not ``[*, 4]`` or has an inverted box.
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    inter, union = _inter_union(boxes1, boxes2)  # [N, M] each
    iou = _safe_divide(inter, union)
    # enclosing box: the outer corners of each pair, [N, 1] against [M] -> [N, M]
    x1, y1, x2, y2 = upcast(boxes1).unbind(dim=1)
    u1, v1, u2, v2 = upcast(boxes2).unbind(dim=1)
    enclose_w = torch.maximum(x2[:, None], u2).sub_(torch.minimum(x1[:, None], u1))
    enclose_h = torch.maximum(y2[:, None], v2).sub_(torch.minimum(y1[:, None], v1))
    enclose = enclose_w.mul_(enclose_h)  # [N, M]
    return iou - _safe_divide(enclose - union, enclose)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between the three common formats.

    * ``"xyxy"``: ``(x1, y1, x2, y2)``, the corners.
    * ``"xywh"``: ``(x1, y1, w, h)``, top-left corner and size (COCO's ``bbox``).
    * ``"cxcywh"``: ``(cx, cy, w, h)``, centre and size (DETR, YOLO).

    This is a change of coordinates only: boxes are not checked for validity.

    Args:
        boxes (Tensor[..., 4]): boxes in ``in_fmt``.
        in_fmt: one of ``"xyxy"``, ``"xywh"``, ``"cxcywh"``.
        out_fmt: one of ``"xyxy"``, ``"xywh"``, ``"cxcywh"``.

    Returns:
        Tensor[..., 4]: the same boxes in ``out_fmt`` (a new tensor, even when the formats
        are equal).

    Raises:
        ValueError: for an unknown format or a last dimension other than 4.
    """
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    if not isinstance(boxes, Tensor) or boxes.dim() == 0 or boxes.shape[-1] != 4:
        shape = describe(boxes)
        raise ValueError(f"boxes must be a tensor of shape [..., 4], got {shape}")
    if in_fmt == out_fmt:
        return boxes.clone()
    xyxy = _to_xyxy(boxes, in_fmt)
    return _from_xyxy(xyxy, out_fmt)


def _to_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    """Convert ``[..., 4]`` boxes from ``fmt`` to xyxy."""
    if fmt == "xyxy":
        return boxes
    a, b, w, h = boxes.unbind(dim=-1)
    if fmt == "xywh":
        return torch.stack([a, b, a + w, b + h], dim=-1)
    return torch.stack([a - 0.5 * w, b - 0.5 * h, a + 0.5 * w, b + 0.5 * h], dim=-1)


def _from_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    """Convert ``[..., 4]`` xyxy boxes to ``fmt``."""
    if fmt == "xyxy":
        return boxes
    x1, y1, x2, y2 = boxes.unbind(dim=-1)
    w, h = x2 - x1, y2 - y1
    if fmt == "xywh":
        return torch.stack([x1, y1, w, h], dim=-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, w, h], dim=-1)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """The tight xyxy box around each mask, under the course's pixel-edge convention.

    Pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so a mask whose
    columns run from ``a`` to ``b`` (inclusive) has ``x1 = a`` and ``x2 = b + 1`` — the
    convention of the shapes dataset and of COCO, under which the box's area
    ``(x2 - x1) * (y2 - y1)`` is at least the mask's pixel count. ``torchvision.ops.masks_to_boxes``
    returns the inclusive index ``b`` instead; the two differ by exactly 1 in ``x2`` and
    ``y2``. An empty mask gives the box ``(0, 0, 0, 0)``, as in torchvision.

    Args:
        masks (Tensor[N, H, W]): any dtype; nonzero means "inside".

    Returns:
        Tensor[N, 4] float32: one box per mask, on the masks' device.

    Raises:
        ValueError: ``masks`` is not a 3-d tensor.
    """
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        shape = describe(masks)
        raise ValueError(f"masks must be a tensor of shape [N, H, W], got {shape}")
    n, height, width = masks.shape
    if masks.numel() == 0:
        return torch.zeros(n, 4, device=masks.device)
    inside = masks != 0
    cols, rows = inside.any(dim=1), inside.any(dim=2)  # [N, W], [N, H]
    # argmax of a bool row finds its first True; on the flipped row, the last one
    x1, y1 = cols.int().argmax(dim=1), rows.int().argmax(dim=1)
    x2, y2 = width - cols.flip(1).int().argmax(dim=1), height - rows.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return boxes * cols.any(dim=1, keepdim=True)  # empty masks -> (0, 0, 0, 0)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip xyxy boxes to the image ``[0, W] x [0, H]``, as ``torchvision.ops.clip_boxes_to_image``.

    Args:
        boxes (Tensor[..., 4]): xyxy, pixels.
        size: the image's ``(H, W)``.

    Returns:
        Tensor[..., 4]: a new tensor; a box wholly outside becomes a zero-width or
        zero-height box on the border.
    """
    check_tensor(boxes, "boxes", last=4)
    height, width = size
    x = boxes[..., 0::2].clamp(0, width)  # [..., 2]: x1, x2
    y = boxes[..., 1::2].clamp(0, height)  # [..., 2]: y1, y2
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the boxes whose width and height are both ``>= min_size``, as torchvision's.

    Args:
        boxes (Tensor[N, 4]): xyxy, pixels.
        min_size: the smallest side kept, in pixels.

    Returns:
        Tensor[K] int64: indices into ``boxes``, increasing.
    """
    check_tensor(boxes, "boxes", ndim=2, last=4, shape="[N, 4]")
    keep = (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)  # [N]
    return torch.nonzero(keep).flatten()
