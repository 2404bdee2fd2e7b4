"""Single-stage detectors: YOLO's grid targets and loss, SSD's default boxes, matching and
hard-negative mining, RetinaNet's focal-loss objective, and a RetinaNet-style detector
small enough for a CPU.

A single-stage detector predicts classes and boxes for a dense set of reference positions
in one pass, with no proposal stage and no per-region pooling:

* YOLO (Redmon et al., "You Only Look Once", CVPR 2016) divides the image into an
  ``S x S`` grid; the cell holding an object's centre predicts it (:func:`yolo_targets`,
  :func:`yolo_loss`).
* SSD (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016) tiles every feature
  map with default boxes of several scales and shapes (:func:`default_boxes`), matches
  them to the ground truth (:func:`ssd_match`), and keeps three negatives per positive,
  the ones with the highest loss (:func:`hard_negative_mining`, :func:`ssd_loss`).
* RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) keeps every
  anchor and lets the focal loss (:func:`~cs_dense.ops.sigmoid_focal_loss`) shrink the easy
  ones (:func:`retinanet_loss`); a prior on the classifier's bias keeps the first steps
  stable (:func:`prior_bias`). :class:`SingleStageDetector` is one on the stride-8
  backbone of :class:`~cs_dense.models.TwoStageDetector`.

Where torchvision implements a step (``DefaultBoxGenerator``, ``SSDMatcher``,
``SSD.compute_loss``, ``RetinaNetHead.compute_loss``), the function here gives the same
values; each docstring says where and why it departs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs_dense.models.anchors import IGNORED, NEGATIVE, AnchorGenerator, BoxCoder, match_anchors
from cs_dense.models.two_stage import BACKBONE_STRIDE, check_image_normalisation, small_backbone, stack_detector_images
from cs_dense.ops.boxes import box_iou, check_boxes, clip_boxes_to_image, remove_small_boxes
from cs_dense.ops.losses import sigmoid_focal_loss
from cs_dense.ops.nms import batched_nms
from cs_dense.validation import check_int, check_positive_numbers, check_real, check_tensor, describe

#: YOLOv1's weights: box coordinates count 5 times, empty cells' confidence half.
YOLO_LAMBDA_COORD = 5.0
YOLO_LAMBDA_NOOBJ = 0.5
#: SSD's box-coder weights (as torchvision's SSD): centre offsets in tenths of the box,
#: log sizes in fifths.
SSD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
#: RetinaNet's matching thresholds: IoU >= 0.5 is object, < 0.4 background, between ignored.
RETINA_FG_IOU = 0.5
RETINA_BG_IOU = 0.4
#: Groups of the detector towers' GroupNorm (torchvision's RetinaNet v2 uses 32 too).
TOWER_GROUPS = 32


def _check_targets(boxes: Tensor, labels: Tensor, num_classes: int | None = None) -> None:
    check_boxes(boxes, "boxes")
    check_tensor(labels, "labels", ndim=1, shape="[N]", dtype=torch.int64)
    if labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"labels must have one entry per box ({boxes.shape[0]}), got {describe(labels)}")
    if labels.numel() and labels.min() < 1:
        raise ValueError(f"labels must be object classes >= 1 (0 is background), got {labels.min().item()}")
    if num_classes is not None and labels.numel() and labels.max() > num_classes:
        raise ValueError(f"labels must be in 1..{num_classes}, got {labels.max().item()}")


# --------------------------------------------------------------------------- YOLO


def yolo_targets(boxes: Tensor, labels: Tensor, image_size: tuple[int, int], grid_size: int, num_classes: int) -> Tensor:
    """YOLOv1's training target for one image, with one box per cell (``B = 1``).

    The cell ``(i, j)`` (row, column) whose square holds an object's centre ``(cx, cy)`` is
    responsible for it: ``j = floor(cx * S / W)``, ``i = floor(cy * S / H)``. Conventions:

    * a centre exactly on a cell border belongs to the cell to its right (below);
    * ``cx = W`` (``cy = H``) belongs to the last column (row);
    * two objects in one cell: the one with the smaller box area wins (a small object has
      no other cell that could find it), on equal areas the one listed first; the other
      is lost to this target.

    Channels of a responsible cell: ``tx = cx * S / W - j`` and ``ty`` (the centre inside
    the cell, in ``[0, 1]``), ``sqrt(w / W)`` and ``sqrt(h / H)`` (the square root makes an
    error of a few pixels cost more on a small box than on a large one), objectness 1, and
    the one-hot class (label ``l`` sets channel ``4 + l``). Every other cell is all zeros.

    Args:
        boxes (Tensor[N, 4]): xyxy in pixels, centres inside the image.
        labels (Tensor[N] int64): classes in ``1..num_classes``.
        image_size: ``(H, W)``.
        grid_size: ``S``, cells per side.
        num_classes: ``C``; YOLO has no background class, objectness plays its part.

    Returns:
        Tensor[S, S, 5 + C] in the dtype of ``boxes``.

    Raises:
        ValueError: bad shapes or dtypes, a label out of range, a centre outside the image.
    """
    _check_targets(boxes, labels)
    check_int("grid_size", grid_size, 1)
    check_int("num_classes", num_classes, 1)
    if labels.numel() and labels.max() > num_classes:
        raise ValueError(f"labels must be in 1..{num_classes}, got {labels.max().item()}")
    height, width = image_size
    check_int("image_size[0]", height, 1)
    check_int("image_size[1]", width, 1)
    s = grid_size
    target = boxes.new_zeros(s, s, 5 + num_classes)
    if boxes.shape[0] == 0:
        return target
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    outside = (cx < 0) | (cx > width) | (cy < 0) | (cy > height)
    if outside.any():
        k = int(outside.nonzero()[0])
        raise ValueError(f"box {k} has its centre ({cx[k].item():g}, {cy[k].item():g}) outside the {width}x{height} image")
    gx, gy = cx * s / width, cy * s / height  # centres in cell units
    col = gx.floor().long().clamp(max=s - 1)
    row = gy.floor().long().clamp(max=s - 1)
    # winner per cell: sort by area (stable: equal areas keep list order), then by cell
    by_area = torch.sort(w * h, stable=True).indices
    by_cell = by_area[torch.sort((row * s + col)[by_area], stable=True).indices]
    cell = (row * s + col)[by_cell]
    first = torch.ones_like(cell, dtype=torch.bool)
    first[1:] = cell[1:] != cell[:-1]
    win = by_cell[first]
    values = torch.stack(
        [gx[win] - col[win], gy[win] - row[win], (w[win] / width).sqrt(), (h[win] / height).sqrt(), torch.ones_like(gx[win])],
        dim=1,
    )
    target[row[win], col[win], :5] = values
    target[row[win], col[win], 4 + labels[win]] = 1
    return target


def yolo_loss(
    pred: Tensor, target: Tensor, lambda_coord: float = YOLO_LAMBDA_COORD, lambda_noobj: float = YOLO_LAMBDA_NOOBJ
) -> Tensor:
    """YOLOv1's sum-squared loss (Redmon et al. 2016, eq. 3) with one box per cell.

    With ``obj`` the target's objectness channel (1 in responsible cells, 0 elsewhere), the
    loss of a batch is, summed over cells and averaged over images:

        ``lambda_coord * obj * [(x - x')^2 + (y - y')^2 + (sw - sw')^2 + (sh - sh')^2]``
        ``+ obj * (c - c')^2 + lambda_noobj * (1 - obj) * (c - c')^2``
        ``+ obj * sum_k (p_k - p_k')^2``

    where primes are predictions, ``sw = sqrt(w / W)`` and ``c`` the objectness. Predictions
    are compared as they are (YOLOv1's last layer is linear). The paper's confidence target
    is the IoU of the predicted box with the object; the course uses 1, the target's
    objectness, as later YOLOs do.

    Args:
        pred (Tensor[N, S, S, 5 + C]): floating point.
        target (Tensor[N, S, S, 5 + C]): from :func:`yolo_targets`, stacked; objectness 0 or 1.
        lambda_coord, lambda_noobj: the weights, ``>= 0``.

    Returns:
        Tensor[]: the loss, differentiable with respect to ``pred``.
    """
    check_tensor(pred, "pred", ndim=4, shape="[N, S, S, 5 + C]", floating=True)
    check_tensor(target, "target", ndim=4, shape="[N, S, S, 5 + C]", floating=True)
    if pred.shape != target.shape or pred.shape[-1] < 6:
        raise ValueError(f"pred and target must have one shape [N, S, S, 5 + C] with C >= 1, got "
                         f"{describe(pred)} and {describe(target)}")
    check_real("lambda_coord", lambda_coord, 0.0)
    check_real("lambda_noobj", lambda_noobj, 0.0)
    obj = target[..., 4]
    if not ((obj == 0) | (obj == 1)).all():
        raise ValueError("target's objectness channel (index 4) must hold only 0 and 1")
    squared = (pred - target) ** 2
    coord = squared[..., :4].sum(-1)
    classes = squared[..., 5:].sum(-1)
    per_cell = obj * (lambda_coord * coord + squared[..., 4] + classes) + (1 - obj) * lambda_noobj * squared[..., 4]
    return per_cell.sum() / pred.shape[0]


# --------------------------------------------------------------------------- SSD


def ssd_scales(num_maps: int, min_ratio: float = 0.15, max_ratio: float = 0.9) -> list[float]:
    """SSD's box scales, as fractions of the image side: ``num_maps + 1`` of them.

    ``s_k`` grows linearly from ``min_ratio`` to ``max_ratio`` over the maps, and 1.0 is
    appended so the last map has an ``s_{k+1}`` (torchvision's convention; with a single
    map the scales are ``[min_ratio, max_ratio]``).
    """
    check_int("num_maps", num_maps, 1)
    check_real("min_ratio", min_ratio, 0.0, open_low=True)
    check_real("max_ratio", max_ratio, min_ratio)
    if num_maps == 1:
        return [min_ratio, max_ratio]
    return [min_ratio + (max_ratio - min_ratio) * k / (num_maps - 1.0) for k in range(num_maps)] + [1.0]


def default_boxes(
    feature_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    aspect_ratios: Sequence[Sequence[float]],
    min_ratio: float = 0.15,
    max_ratio: float = 0.9,
    scales: Sequence[float] | None = None,
    steps: Sequence[int] | None = None,
    clip: bool = True,
) -> Tensor:
    """SSD's default boxes for a list of feature maps: torchvision's ``DefaultBoxGenerator``.

    Map ``k`` of size ``(f_h, f_w)`` has scale ``s_k`` (:func:`ssd_scales`, or ``scales``)
    and, at every position, ``2 + 2 * len(aspect_ratios[k])`` shapes ``(w, h)`` as fractions
    of the image: ``(s_k, s_k)``, ``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k * s_{k+1})``, then for
    each ratio ``r`` the pair ``(s_k sqrt(r), s_k / sqrt(r))`` and its transpose. So ``r`` is
    width / height (notebook 04's anchors use height / width). Each shape is clamped to
    ``[0, 1]`` when ``clip`` (the box itself is not clipped to the image). Centres sit in the
    middle of the cells: ``((j + 0.5) / f_w, (i + 0.5) / f_h)``, with ``f = image / step``
    when ``steps`` are given (notebook 04's anchors sit on the cells' corners).

    Order: map by map; within a map, position by position (row-major); within a position,
    the shapes in the order above.

    Args:
        feature_sizes: ``(f_h, f_w)`` of each map.
        image_size: ``(H, W)`` in pixels.
        aspect_ratios: the ratios of each map (``[2]`` adds 2:1 and 1:2 boxes).
        min_ratio, max_ratio: range of the automatic scales.
        scales: ``len(feature_sizes) + 1`` explicit scales instead.
        steps: per map, the pixel stride that sets the centres' spacing.
        clip: clamp each width and height to the image.

    Returns:
        Tensor[D, 4] float32: xyxy in pixels.
    """
    num_maps = len(feature_sizes)
    if num_maps == 0 or len(aspect_ratios) != num_maps:
        raise ValueError(f"need one entry of aspect_ratios per feature map, got {len(aspect_ratios)} for {num_maps} maps")
    if steps is not None and len(steps) != num_maps:
        raise ValueError(f"steps must have one entry per feature map ({num_maps}), got {len(steps)}")
    if scales is None:
        scales = ssd_scales(num_maps, min_ratio, max_ratio)
    elif len(scales) != num_maps + 1:
        raise ValueError(f"scales must have len(feature_sizes) + 1 = {num_maps + 1} entries, got {len(scales)}")
    height, width = image_size
    boxes = []
    for k, (f_h, f_w) in enumerate(feature_sizes):
        check_int(f"feature_sizes[{k}][0]", f_h, 1)
        check_int(f"feature_sizes[{k}][1]", f_w, 1)
        ratios = check_positive_numbers(f"aspect_ratios[{k}]", aspect_ratios[k]) if len(aspect_ratios[k]) else ()
        s_k, s_next = scales[k], scales[k + 1]
        shapes = [[s_k, s_k], [math.sqrt(s_k * s_next)] * 2]
        for r in ratios:
            shapes += [[s_k * math.sqrt(r), s_k / math.sqrt(r)], [s_k / math.sqrt(r), s_k * math.sqrt(r)]]
        wh = torch.tensor(shapes, dtype=torch.float32)  # [P, 2]
        if clip:
            wh = wh.clamp(0, 1)
        x_cells, y_cells = (f_w, f_h) if steps is None else (width / steps[k], height / steps[k])
        xs = ((torch.arange(f_w) + 0.5) / x_cells).float()
        ys = ((torch.arange(f_h) + 0.5) / y_cells).float()
        ys, xs = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # [f_h * f_w, 2]
        centres = centres[:, None].expand(-1, len(shapes), 2).reshape(-1, 2)
        sizes = wh.repeat(f_h * f_w, 1)
        boxes.append(torch.cat([centres - 0.5 * sizes, centres + 0.5 * sizes], dim=1))
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return torch.cat(boxes) * scale


def ssd_match(quality: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """SSD's matching of default boxes (columns) to ground truths (rows): torchvision's ``SSDMatcher``.

    A default box is matched to the ground truth it overlaps most (the first on ties) if
    that IoU is ``>= iou_threshold``, else it is background (-1). Then every ground truth
    also claims its own best default box (the first on ties), whatever the IoU, so no
    object goes unmatched. Two ground truths with the same best box: the later one (higher
    index) gets it, the earlier one keeps only its IoU-threshold matches. A ground truth that
    overlaps nothing still claims default box 0 (the first of all-zero IoUs), as torchvision
    does; with default boxes tiling the image this does not happen.

    Args:
        quality (Tensor[M, D]): IoU of M ground truths with D default boxes.
        iou_threshold: in ``[0, 1]``.

    Returns:
        Tensor[D] int64: ground-truth index, or -1. ``M = 0``: all -1.
    """
    check_tensor(quality, "quality", ndim=2, shape="[M, D]", floating=True)
    check_real("iou_threshold", iou_threshold, 0.0, 1.0)
    m, d = quality.shape
    if m == 0 or d == 0:
        return torch.full((d,), NEGATIVE, dtype=torch.int64, device=quality.device)
    best, matches = quality.max(dim=0)
    matches = torch.where(best >= iou_threshold, matches, NEGATIVE)
    best_box = quality.argmax(dim=1)  # [M]
    claimed = torch.full_like(matches, -1).scatter_reduce(
        0, best_box, torch.arange(m, device=quality.device), reduce="amax", include_self=True
    )
    return torch.where(claimed >= 0, claimed, matches)


def hard_negative_mining(cls_loss: Tensor, labels: Tensor, neg_to_pos_ratio: int = 3) -> Tensor:
    """The negatives SSD trains on: per image, the ``neg_to_pos_ratio * P`` with the highest loss.

    ``P`` is the image's number of positives (``labels > 0``). If the image has fewer
    negatives than that, all of them are taken; an image without positives contributes no
    negative at all. Ties in the loss go to the lower index.

    Args:
        cls_loss (Tensor[N, D]): each default box's classification loss.
        labels (Tensor[N, D] int64): 0 for background, the class ``>= 1`` for positives.
        neg_to_pos_ratio: integer ``>= 0``.

    Returns:
        Tensor[N, D] bool: the chosen negatives (never a positive).
    """
    check_tensor(cls_loss, "cls_loss", ndim=2, shape="[N, D]", floating=True)
    check_tensor(labels, "labels", ndim=2, shape="[N, D]", dtype=torch.int64)
    if labels.shape != cls_loss.shape:
        raise ValueError(f"labels must have the shape of cls_loss {list(cls_loss.shape)}, got {describe(labels)}")
    check_int("neg_to_pos_ratio", neg_to_pos_ratio, 0)
    negative = labels == 0
    quota = neg_to_pos_ratio * (labels > 0).sum(dim=1, keepdim=True)  # [N, 1]
    ranked = cls_loss.detach().masked_fill(~negative, -math.inf)
    order = ranked.sort(dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return negative & (rank < quota)


def _matched_boxes(matched_idxs: Tensor, targets: Sequence[Mapping[str, Tensor]], key: str) -> Tensor:
    """``targets[n][key][matched_idxs[n, d]]`` where matched, zeros elsewhere: [N, D, ...]."""
    rows = []
    for n, target in enumerate(targets):
        values = target[key]
        index = matched_idxs[n].clamp(min=0)
        picked = values[index] if values.shape[0] else values.new_zeros((index.shape[0], *values.shape[1:]))
        rows.append(picked)
    return torch.stack(rows)


def _check_dense_inputs(
    cls_logits: Tensor, box_deltas: Tensor, references: Tensor, matched_idxs: Tensor, targets: Sequence[Mapping[str, Tensor]]
) -> None:
    check_tensor(cls_logits, "cls_logits", ndim=3, shape="[N, D, K]", floating=True)
    n, d, _ = cls_logits.shape
    check_tensor(box_deltas, "box_deltas", ndim=3, last=4, shape=f"[{n}, {d}, 4]", floating=True)
    check_boxes(references, "anchors")
    check_tensor(matched_idxs, "matched_idxs", ndim=2, shape=f"[{n}, {d}]", dtype=torch.int64)
    if box_deltas.shape[:2] != (n, d) or references.shape[0] != d or matched_idxs.shape != (n, d):
        raise ValueError(
            f"box_deltas [N, D, 4], anchors [D, 4] and matched_idxs [N, D] must agree with cls_logits [{n}, {d}, K]; got "
            f"{describe(box_deltas)}, {describe(references)}, {describe(matched_idxs)}"
        )
    if len(targets) != n:
        raise ValueError(f"need one target dict per image ({n}), got {len(targets)}")
    for i, target in enumerate(targets):
        if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
        _check_targets(target["boxes"], target["labels"])
        count = target["boxes"].shape[0]
        if (matched_idxs[i] >= count).any():
            raise ValueError(f"matched_idxs[{i}] refers to a ground truth >= {count}, the number of boxes of image {i}")


def ssd_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    priors: Tensor,
    matched_idxs: Tensor,
    targets: Sequence[Mapping[str, Tensor]],
    neg_to_pos_ratio: int = 3,
) -> dict[str, Tensor]:
    """SSD's loss (Liu et al. 2016, eq. 1): softmax cross-entropy on the positives and the mined
    negatives, smooth L1 (``beta = 1``) on the positives' deltas, both divided by the batch's
    number of positives (at least 1).

    Box targets are encoded with :data:`SSD_BOX_WEIGHTS`. The value equals torchvision's
    ``SSD.compute_loss`` except in one case: when an image has fewer than
    ``neg_to_pos_ratio * P`` negatives, torchvision's mining picks positives among its
    "negatives" and their cross-entropy counts twice; here it counts once
    (:func:`hard_negative_mining` returns negatives only).

    Args:
        cls_logits (Tensor[N, D, C + 1]): class scores, background in column 0.
        box_deltas (Tensor[N, D, 4]): predicted deltas.
        priors (Tensor[D, 4]): the default boxes, xyxy.
        matched_idxs (Tensor[N, D] int64): from :func:`ssd_match`: ground-truth index or -1.
        targets: per image ``{"boxes": Tensor[M, 4], "labels": Tensor[M] int64 >= 1}``.
        neg_to_pos_ratio: negatives kept per positive.

    Returns:
        ``{"bbox_regression": Tensor[], "classification": Tensor[]}``.
    """
    _check_dense_inputs(cls_logits, box_deltas, priors, matched_idxs, targets)
    num_classes = cls_logits.shape[2] - 1
    for i, target in enumerate(targets):
        if target["labels"].numel() and target["labels"].max() > num_classes:
            raise ValueError(f"targets[{i}] has label {target['labels'].max().item()} but cls_logits has "
                             f"{num_classes} classes after background (C + 1 = {num_classes + 1} columns)")
    if (matched_idxs < NEGATIVE).any():
        raise ValueError("matched_idxs must hold ground-truth indices or -1 (background); SSD ignores no box")
    positive = matched_idxs >= 0  # [N, D]
    labels = torch.where(positive, _matched_boxes(matched_idxs, targets, "labels"), 0)
    num_pos = max(1, int(positive.sum()))
    coder = BoxCoder(SSD_BOX_WEIGHTS)
    n, d, _ = box_deltas.shape
    gt = _matched_boxes(matched_idxs, targets, "boxes")[positive]
    refs = priors.to(box_deltas.dtype).expand(n, d, 4)[positive]
    box_loss = F.smooth_l1_loss(box_deltas[positive], coder.encode(gt.to(refs.dtype), refs), reduction="sum", beta=1.0)
    ce = F.cross_entropy(cls_logits.flatten(0, 1), labels.flatten(), reduction="none").view(n, d)
    mined = hard_negative_mining(ce, labels, neg_to_pos_ratio)
    cls_loss = ce[positive].sum() + ce[mined].sum()
    return {"bbox_regression": box_loss / num_pos, "classification": cls_loss / num_pos}


# --------------------------------------------------------------------------- RetinaNet


def prior_bias(prior_probability: float) -> float:
    """The bias that makes a sigmoid output ``prior_probability`` at the start: ``-log((1 - pi) / pi)``.

    RetinaNet (section 4.1) starts every class score at ``pi = 0.01``, so the many
    background anchors begin with a small loss instead of swamping the first updates.
    """
    check_real("prior_probability", prior_probability, 0.0, 1.0, open_low=True)
    if prior_probability >= 1:
        raise ValueError(f"prior_probability must be in (0, 1), got {prior_probability!r}")
    return -math.log((1 - prior_probability) / prior_probability)


def retinanet_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    matched_idxs: Tensor,
    targets: Sequence[Mapping[str, Tensor]],
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[str, Tensor]:
    """RetinaNet's loss: focal loss over every non-ignored anchor and class, L1 on the positives'
    deltas; torchvision's ``RetinaNetHead.compute_loss``.

    Class ``l`` is sigmoid column ``l - 1`` (there is no background column: background is
    "every column 0"). A positive anchor (``matched_idxs >= 0``) has target 1 in its
    object's column; negatives (-1) all zeros; ignored anchors (-2) add nothing. Boxes are
    encoded with unit weights. Each image's two sums are divided by that image's number of
    positives (at least 1), then averaged over the images; the paper divides the batch's
    sum by the batch's positives, which weighs crowded images more.

    Args:
        cls_logits (Tensor[N, A, K]): one logit per object class.
        box_deltas (Tensor[N, A, 4]).
        anchors (Tensor[A, 4]): xyxy.
        matched_idxs (Tensor[N, A] int64): ground-truth index, -1 background, -2 ignored
            (as :func:`~cs_dense.models.match_anchors` gives them).
        targets: per image ``{"boxes", "labels"}``, labels in ``1..K``.
        alpha, gamma: of the focal loss (``gamma = 0, alpha = -1`` is plain BCE).

    Returns:
        ``{"classification": Tensor[], "bbox_regression": Tensor[]}``.
    """
    _check_dense_inputs(cls_logits, box_deltas, anchors, matched_idxs, targets)
    n, a, k = cls_logits.shape
    for i, target in enumerate(targets):
        if target["labels"].numel() and target["labels"].max() > k:
            raise ValueError(f"targets[{i}] has label {target['labels'].max().item()} but cls_logits has K = {k} classes")
    if ((matched_idxs < 0) & (matched_idxs != NEGATIVE) & (matched_idxs != IGNORED)).any():
        raise ValueError("matched_idxs must hold ground-truth indices, -1 (background) or -2 (ignored)")
    positive = matched_idxs >= 0
    per_image_pos = positive.sum(dim=1).clamp(min=1).to(cls_logits.dtype)  # [N]
    labels = torch.where(positive, _matched_boxes(matched_idxs, targets, "labels"), 0)
    one_hot = F.one_hot(labels, k + 1)[..., 1:].to(cls_logits.dtype)  # column l - 1; background all 0
    focal = sigmoid_focal_loss(cls_logits, one_hot, alpha=alpha, gamma=gamma)  # [N, A, K]
    valid = (matched_idxs != IGNORED).to(cls_logits.dtype)
    cls_loss = (focal.sum(dim=2) * valid).sum(dim=1) / per_image_pos
    gt = _matched_boxes(matched_idxs, targets, "boxes").to(box_deltas.dtype)
    refs = anchors.to(box_deltas.dtype).expand(n, a, 4)
    box_targets = BoxCoder().encode(torch.where(positive[..., None], gt, refs).flatten(0, 1), refs.flatten(0, 1)).view(n, a, 4)
    l1 = ((box_deltas - box_targets).abs().sum(dim=2) * positive).sum(dim=1) / per_image_pos
    return {"classification": cls_loss.mean(), "bbox_regression": l1.mean()}


@dataclass(frozen=True)
class SingleStageConfig:
    """Settings of :class:`SingleStageDetector` for the shapes images.

    Attributes:
        num_classes: classes including background (4 for the shapes), as in
            :class:`~cs_dense.models.DetectorConfig`; the head has ``num_classes - 1``
            sigmoid outputs per anchor.
        anchor_sizes, aspect_ratios: the anchors (height / width ratios) on the stride-8 map.
        channels, width: of the backbone (:func:`~cs_dense.models.small_backbone`).
        tower_depth: 3x3 conv + GroupNorm (:data:`TOWER_GROUPS` groups) + ReLU layers in
            each of the class and box towers, before the output conv.
        prior_probability: the class bias starts at :func:`prior_bias` of it; ``None``
            leaves the bias at 0 (an ablation).
        alpha, gamma: of the focal loss; ``gamma = 0, alpha = -1`` trains with plain BCE.
        score_thresh: detections must score more than this.
        topk_candidates: the most (anchor, class) candidates kept before NMS, per image.
        nms_thresh: per-class NMS suppresses at IoU above this.
        detections_per_img: the most detections kept per image.
        image_mean, image_std: per-channel normalisation applied inside the model.
    """

    num_classes: int = 4
    anchor_sizes: tuple[float, ...] = (16, 24, 32, 48)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    channels: int = 64
    width: int = 32
    tower_depth: int = 2
    prior_probability: float | None = 0.01
    alpha: float = 0.25
    gamma: float = 2.0
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        check_int("num_classes", self.num_classes, 2)
        check_positive_numbers("anchor_sizes", self.anchor_sizes)
        check_positive_numbers("aspect_ratios", self.aspect_ratios)
        for name in ("channels", "width", "topk_candidates", "detections_per_img"):
            check_int(name, getattr(self, name), 1)
        if self.channels % TOWER_GROUPS:
            raise ValueError(f"channels must be a multiple of {TOWER_GROUPS} (the towers' GroupNorm groups), got {self.channels}")
        check_int("tower_depth", self.tower_depth, 0)
        if self.prior_probability is not None:
            prior_bias(self.prior_probability)  # validates
        check_real("alpha", self.alpha, None, 1.0)
        check_real("gamma", self.gamma, 0.0)
        check_real("score_thresh", self.score_thresh, 0.0, 1.0)
        check_real("nms_thresh", self.nms_thresh, 0.0, 1.0)
        check_image_normalisation(self.image_mean, self.image_std)

    @property
    def stride(self) -> int:
        """The feature map's stride in pixels: the backbone's."""
        return BACKBONE_STRIDE


def conv_tower(channels: int, depth: int, outputs: int) -> nn.Sequential:
    """``depth`` layers of 3x3 conv + GroupNorm + ReLU at ``channels``, then a 3x3 conv to ``outputs``;
    weights normal(0, 0.01), biases 0 (RetinaNet's initialisation)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(TOWER_GROUPS, channels), nn.ReLU(inplace=True),
        ]
    layers.append(nn.Conv2d(channels, outputs, 3, padding=1))
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class SingleStageDetector(nn.Module):
    """A RetinaNet with one stride-8 feature map: backbone, a class tower and a box tower
    (GroupNorm in the towers, as torchvision's RetinaNet v2; without it the recipe of
    notebook 06 reached mAP@0.5 0.74 - 0.87 in 100 s and collapsed at twice the learning rate).

    ``forward(images, targets)`` in training returns ``{"classification", "bbox_regression"}``
    (:func:`retinanet_loss` after matching anchors at IoU 0.5 / 0.4 with every object's best
    anchors kept); in eval mode ``forward(images)`` returns one ``{"boxes", "scores", "labels"}``
    dict per image. Images are a list of Tensor[3, H, W] of one size (multiples of the
    stride), values in [0, 1].
    """

    def __init__(self, config: SingleStageConfig = SingleStageConfig()):
        super().__init__()
        self.config = config
        self.backbone = small_backbone(config.channels, config.width)
        self.anchor_generator = AnchorGenerator((config.anchor_sizes,), (config.aspect_ratios,))
        anchors_per_position = self.anchor_generator.num_anchors_per_location()[0]
        self.num_classes = config.num_classes - 1
        self.class_tower = conv_tower(config.channels, config.tower_depth, anchors_per_position * self.num_classes)
        self.box_tower = conv_tower(config.channels, config.tower_depth, anchors_per_position * 4)
        if config.prior_probability is not None:
            nn.init.constant_(self.class_tower[-1].bias, prior_bias(config.prior_probability))
        self.coder = BoxCoder()
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    def head(self, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Class logits [B, D, K], box deltas [B, D, 4] and the anchors [D, 4] of a batch
        [B, 3, H, W]; anchors ordered as :class:`~cs_dense.models.AnchorGenerator` orders them."""
        feature = self.backbone((batch - self.mean) / self.std)
        b = batch.shape[0]
        # [B, A * K, Hf, Wf] -> [B, Hf, Wf, A * K] -> [B, Hf * Wf * A, K]: position-major, anchor-minor
        logits = self.class_tower(feature).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes)
        deltas = self.box_tower(feature).permute(0, 2, 3, 1).reshape(b, -1, 4)
        anchors = self.anchor_generator(batch, [feature])[0]
        return logits, deltas, anchors

    def match(self, anchors: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> Tensor:
        """Matched ground truth per anchor (-1 background, -2 ignored) for each image: [B, D]."""
        return torch.stack(
            [match_anchors(box_iou(t["boxes"].to(anchors.dtype), anchors), RETINA_FG_IOU, RETINA_BG_IOU) for t in targets]
        )

    def forward(self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        batch = stack_detector_images(images, self.config.stride)
        logits, deltas, anchors = self.head(batch)
        if self.training:
            matched = self.match(anchors, targets)
            return retinanet_loss(logits, deltas, anchors, matched, targets, self.config.alpha, self.config.gamma)
        size = tuple(batch.shape[-2:])
        return [self.postprocess(logit, delta, anchors, size) for logit, delta in zip(logits, deltas)]

    def postprocess(self, logits: Tensor, deltas: Tensor, anchors: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        """Detections of one image: every (anchor, class) scoring above ``score_thresh``, the best
        ``topk_candidates`` of them decoded and clipped, per-class NMS, the best ``detections_per_img``."""
        config = self.config
        scores = torch.sigmoid(logits).flatten()  # [D * K], anchor-major
        keep = torch.nonzero(scores > config.score_thresh).flatten()
        top = scores[keep].topk(min(config.topk_candidates, keep.numel())).indices
        keep = keep[top]
        anchor_idx = torch.div(keep, self.num_classes, rounding_mode="floor")
        labels = keep % self.num_classes + 1
        boxes = clip_boxes_to_image(self.coder.decode(deltas[anchor_idx], anchors[anchor_idx]), image_size)
        scores = scores[keep]
        big = remove_small_boxes(boxes, 1e-2)
        boxes, scores, labels = boxes[big], scores[big], labels[big]
        keep = batched_nms(boxes, scores, labels, config.nms_thresh)[: config.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def easy_negative_share(
    model: SingleStageDetector, images: Tensor, targets: Sequence[Mapping[str, Tensor]], alpha: float, gamma: float,
    easy: float = 0.9,
) -> dict[str, float]:
    """How much of a batch's classification loss comes from easy negatives, for a given loss.

    The model's class logits on ``images`` are scored with :func:`sigmoid_focal_loss`
    (``alpha``, ``gamma``; ``-1, 0`` is plain cross-entropy) against its own anchor matching,
    over every (anchor, class) entry that is not ignored. An easy negative is an entry
    whose target is 0 and whose probability of the right answer ``1 - p`` exceeds ``easy``.

    Args:
        model: evaluated as it is (no gradients; its mode is left unchanged).
        images (Tensor[B, 3, H, W]): on the model's device.
        targets: per image ``{"boxes", "labels"}``.
        alpha, gamma: the loss to measure with.
        easy: the ``p_t`` above which a negative counts as easy.

    Returns:
        ``{"positives", "negatives"}`` (entry counts), ``"loss"`` (the batch's summed
        classification loss) and ``"easy_share"`` (the fraction of it from easy negatives).
    """
    check_real("easy", easy, 0.0, 1.0)
    with torch.no_grad():
        logits, _, anchors = model.head(images)
        matched = model.match(anchors, targets)
        positive = matched >= 0
        labels = torch.where(positive, _matched_boxes(matched, targets, "labels"), 0)
        one_hot = F.one_hot(labels, logits.shape[2] + 1)[..., 1:].to(logits.dtype)
        loss = sigmoid_focal_loss(logits, one_hot, alpha=alpha, gamma=gamma)
        valid = (matched != IGNORED)[..., None].expand_as(loss)
        is_easy = valid & (one_hot == 0) & (1 - torch.sigmoid(logits) > easy)
        total = loss[valid].sum()
    return {
        "positives": int(one_hot[valid].sum()),
        "negatives": int((one_hot == 0)[valid].sum()),
        "loss": total.item(),
        "easy_share": (loss[is_easy].sum() / total).item() if total > 0 else 0.0,
    }
