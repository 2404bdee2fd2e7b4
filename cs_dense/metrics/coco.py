"""COCO-style mean average precision and recall, equal to pycocotools' ``COCOeval``.

:func:`mean_average_precision` reproduces ``COCOeval`` (bbox and segm) to within
floating-point round-off; the rules it copies are listed in its docstring. Its work is
vectorised: IoUs for all same-class pairs at once, the greedy matching of
:mod:`cs_dense.metrics.matching` stepped over detection rank for all images, classes, area
ranges and IoU thresholds together, and one sort per class for the accumulation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_convert

from cs_dense.data.detections import check_detection_dict, target_areas
from cs_dense.metrics.ap import COCO_REC_THRESHOLDS, interpolated_precision
from cs_dense.metrics.matching import greedy_match

IOU_TYPES = ("bbox", "segm")
# pycocotools builds its grids with linspace (not arange) so that 0.75 is the nearest double.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
COCO_AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
COCO_MAX_DETS = (1, 10, 100)

_PRECISION_EPS = np.spacing(1)  # pycocotools divides by tp + fp + eps
_PADDED_ELEMENTS = 2**22  # matching works on padded [groups, D, G] blocks of about this size
_POWERS_OF_TWO = 2 ** np.arange(48)


@dataclass
class _Flat:
    """Detections or ground truths of all images, one row each (numpy, CPU).

    ``boxes`` are COCO ``xywh`` float64, ``extra`` is the score (detections) or the
    crowd flag (ground truths), ``local`` the row within its image.
    """

    image: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    extra: np.ndarray
    local: np.ndarray

    def take(self, index: np.ndarray) -> _Flat:
        """The rows ``index``."""
        return _Flat(*(getattr(self, f.name)[index] for f in fields(self)))



def _validate_image(i: int, pred: Mapping, target: Mapping, iou_type: str) -> None:
    """Validate one image's prediction and target dicts (see :func:`check_detection_dict`)."""
    check_detection_dict("preds", i, pred, require_masks=iou_type == "segm")
    check_detection_dict("targets", i, target, require_masks=iou_type == "segm")
    if iou_type == "segm" and pred["masks"].shape[1:] != target["masks"].shape[1:]:
        sizes = list(pred["masks"].shape[1:]), list(target["masks"].shape[1:])
        raise ValueError(f"preds[{i}]['masks'] are {sizes[0]} (H, W) but targets[{i}]['masks'] are {sizes[1]}")


def _xywh(boxes: Tensor) -> np.ndarray:
    """xyxy tensor -> COCO xywh float64 numpy, widths as ``x2 - x1`` in float64."""
    return box_convert(boxes.detach().cpu().double().reshape(-1, 4), "xyxy", "xywh").numpy()


def _flatten(items: Sequence[Mapping], is_pred: bool) -> _Flat:
    """Stack every image's rows into one :class:`_Flat`."""
    integers, extra = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=float if is_pred else bool)
    empty = _Flat(integers, integers, np.zeros((0, 4)), np.zeros(0), extra, integers)
    parts = [empty] + [_flatten_one(i, item, is_pred) for i, item in enumerate(items)]
    return _Flat(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(empty)))


def _flatten_one(i: int, item: Mapping, is_pred: bool) -> _Flat:
    """One image's rows: xywh boxes, areas, and scores (detections) or crowd flags."""
    n = item["boxes"].shape[0]
    xywh = _xywh(item["boxes"])
    if is_pred:
        area = xywh[:, 2] * xywh[:, 3]  # what pycocotools' loadRes stores for any result with a bbox
        extra = torch.as_tensor(item["scores"]).detach().cpu().double().numpy()
    else:
        area = target_areas(item).numpy()
        extra = torch.as_tensor(item.get("iscrowd", torch.zeros(n))).cpu().numpy() != 0
    labels = torch.as_tensor(item["labels"]).cpu().numpy().astype(np.int64)
    return _Flat(np.full(n, i, dtype=np.int64), labels, xywh, area, extra, np.arange(n))


def _stable_order(*keys: np.ndarray) -> np.ndarray:
    """Indices sorting lexicographically by ``keys`` (first key most significant), stably."""
    order = np.arange(len(keys[0]))
    for key in reversed(keys):
        order = order[np.argsort(key[order], kind="stable")]
    return order


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """Position of each row within its run of equal (sorted, contiguous) group keys."""
    if not len(groups):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    run_length = np.diff(np.r_[starts, len(groups)])
    return np.arange(len(groups)) - np.repeat(starts, run_length)


# ---------------------------------------------------------------- COCO mAP: IoU of pairs


def _same_group_pairs(
    det_group: np.ndarray, gt_group: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair that shares a group, in detection order.

    Returns:
        tuple of ndarray[P]: detection row, ground-truth row, and the ground truth's
        rank within its group (its column in the padded IoU block).
    """
    gt_order = np.argsort(gt_group, kind="stable")
    gt_count = np.bincount(gt_group, minlength=n_groups)
    gt_start = np.cumsum(gt_count) - gt_count
    repeats = gt_count[det_group]  # pairs per detection
    pair_det = np.repeat(np.arange(len(det_group)), repeats)
    gt_rank = np.arange(repeats.sum()) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    pair_gt = gt_order[gt_start[det_group[pair_det]] + gt_rank]
    return pair_det, pair_gt, gt_rank


def _pair_box_ious(det_xywh: np.ndarray, gt_xywh: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired boxes, operation for operation as pycocotools' ``bbIou``.

    COCO works from ``xywh``, so the right edge is ``x + w``; a crowd ground truth
    divides by the detection's area instead of the union (a detection inside a crowd
    region counts as covered).

    Args:
        det_xywh (ndarray[P, 4]), gt_xywh (ndarray[P, 4]): float64 boxes.
        crowd (ndarray[P] bool): whether each pair's ground truth is a crowd.

    Returns:
        ndarray[P] float64.
    """
    dx, dy, dw, dh = det_xywh.T
    gx, gy, gw, gh = gt_xywh.T
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    det_area = dw * dh
    union = np.where(crowd, det_area, det_area + gw * gh - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def _pair_mask_ious(
    dets: _Flat,
    gts: _Flat,
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    preds: Sequence[Mapping],
    targets: Sequence[Mapping],
) -> np.ndarray:
    """IoU of paired masks (pixel counts, crowd rule as for boxes), image by image."""
    ious = np.zeros(len(pair_det))
    image = dets.image[pair_det]  # non-decreasing: detections are sorted by image
    for i in np.unique(image):
        span = slice(np.searchsorted(image, i), np.searchsorted(image, i, side="right"))
        det_rows, det_of_pair = np.unique(dets.local[pair_det[span]], return_inverse=True)
        gt_rows, gt_of_pair = np.unique(gts.local[pair_gt[span]], return_inverse=True)
        det_masks = _binary_rows(preds[i]["masks"], det_rows)  # [d, H*W]
        gt_masks = _binary_rows(targets[i]["masks"], gt_rows)  # [g, H*W]
        inter = (det_masks @ gt_masks.T).double().numpy()[det_of_pair, gt_of_pair]  # [pairs]
        det_area = det_masks.sum(1).double().numpy()[det_of_pair]
        gt_area = gt_masks.sum(1).double().numpy()[gt_of_pair]
        union = np.where(gts.extra[pair_gt[span]], det_area, det_area + gt_area - inter)
        ious[span] = np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)
    return ious


def _binary_rows(masks: Tensor, rows: np.ndarray) -> Tensor:
    """Selected masks as flattened 0/1 floats, float32 while pixel counts stay exact."""
    flat = masks.detach()[torch.from_numpy(rows).to(masks.device)].flatten(1).ne(0).cpu()
    exact = torch.float32 if flat.shape[1] < 2**24 else torch.float64
    return flat.to(exact)


# ---------------------------------------------------------------- COCO mAP: matching


def _group_chunks(n_dets: np.ndarray, n_gts: np.ndarray) -> list[np.ndarray]:
    """Split the groups that need matching into blocks of similar shape.

    Groups are bucketed by the bit length of their detection and ground-truth counts,
    so padding wastes at most 4x, and buckets are cut to about ``_PADDED_ELEMENTS``
    IoU entries. Within a block, groups come in non-increasing detection count.
    """
    active = np.flatnonzero((n_dets > 0) & (n_gts > 0))
    d_bits = np.searchsorted(_POWERS_OF_TWO, n_dets[active], side="right")
    g_bits = np.searchsorted(_POWERS_OF_TWO, n_gts[active], side="right")
    order = _stable_order(g_bits, d_bits, -n_dets[active])
    chunks = []
    for bucket in np.split(order, np.flatnonzero(np.diff(g_bits[order] * 64 + d_bits[order])) + 1):
        if len(bucket):
            per_chunk = max(1, _PADDED_ELEMENTS >> int(d_bits[bucket[0]] + g_bits[bucket[0]]))
            chunks += [active[bucket[s : s + per_chunk]] for s in range(0, len(bucket), per_chunk)]
    return chunks


def _match_all(
    det_group: np.ndarray,
    det_rank: np.ndarray,
    gt_group: np.ndarray,
    gt_crowd: np.ndarray,
    gt_ignore: np.ndarray,
    pair_ious: tuple[np.ndarray, ...],
    thresholds: np.ndarray,
    n_groups: int,
) -> np.ndarray:
    """Run :func:`greedy_match` over all groups, block by block.

    Args:
        det_group, det_rank (ndarray[D]): group of each detection and its score rank there.
        gt_group (ndarray[G]), gt_crowd (ndarray[G] bool), gt_ignore (ndarray[G, A] bool).
        pair_ious: ``(pair_det, pair_gt, gt_rank, iou)`` from :func:`_same_group_pairs`.
        thresholds (ndarray[T]): IoU thresholds.
        n_groups: number of groups.

    Returns:
        ndarray[D, A, T] int64: ground-truth row matched by each detection, or -1.
    """
    pair_det, pair_gt, pair_rank, iou = pair_ious
    A, T = gt_ignore.shape[1], len(thresholds)
    gt_rank = np.empty(len(gt_group), dtype=np.int64)  # column of each gt in its group
    gt_rank[np.argsort(gt_group, kind="stable")] = _rank_within(np.sort(gt_group, kind="stable"))
    n_dets, n_gts = np.bincount(det_group, minlength=n_groups), np.bincount(gt_group, minlength=n_groups)
    gt_row_of = np.full((n_groups, max(1, n_gts.max(initial=0))), -1)
    gt_row_of[gt_group, gt_rank] = np.arange(len(gt_group))  # [group, rank] -> gt row
    matches = np.full((len(det_group), A, T), -1, dtype=np.int64)
    for chunk in _group_chunks(n_dets, n_gts):
        slot = np.full(n_groups, -1)
        slot[chunk] = np.arange(len(chunk))
        ious = np.full((len(chunk), n_dets[chunk].max(), n_gts[chunk].max()), -np.inf)
        keep = slot[det_group[pair_det]] >= 0
        ious[slot[det_group[pair_det[keep]]], det_rank[pair_det[keep]], pair_rank[keep]] = iou[keep]
        ignore = np.zeros((len(chunk), A, ious.shape[2]), dtype=bool)
        crowd = np.zeros((len(chunk), ious.shape[2]), dtype=bool)
        in_chunk = slot[gt_group] >= 0
        ignore[slot[gt_group[in_chunk]], :, gt_rank[in_chunk]] = gt_ignore[in_chunk]
        crowd[slot[gt_group[in_chunk]], gt_rank[in_chunk]] = gt_crowd[in_chunk]
        local = greedy_match(ious, ignore, crowd, thresholds, n_dets[chunk])  # [chunk, A, T, D]
        rows = np.flatnonzero(slot[det_group] >= 0)
        found = local[slot[det_group[rows]], :, :, det_rank[rows]]  # [rows, A, T] local ranks
        groups = np.broadcast_to(det_group[rows, None, None], found.shape)
        matches[rows] = np.where(found >= 0, gt_row_of[groups, np.maximum(found, 0)], -1)
    return matches


# ---------------------------------------------------------------- COCO mAP: accumulation


def _curve_points(
    tp: np.ndarray, fp: np.ndarray, n_regular: np.ndarray, rec_thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision and final recall of one class for every area and threshold.

    Args:
        tp, fp (ndarray[N, A, T] bool): detections in decreasing score order.
        n_regular (ndarray[A]): non-ignored ground truths per area range (> 0 or masked later).
        rec_thresholds (ndarray[R]).

    Returns:
        tuple[ndarray[A, T, R], ndarray[A, T]]: precision at each recall point, recall.
    """
    tp_sum = np.cumsum(tp, axis=0, dtype=np.float64).transpose(1, 2, 0)  # [A, T, N]
    fp_sum = np.cumsum(fp, axis=0, dtype=np.float64).transpose(1, 2, 0)
    with np.errstate(divide="ignore", invalid="ignore"):  # ranges without ground truth: masked by the caller
        recall = tp_sum / n_regular[:, None, None]
    precision = tp_sum / (fp_sum + tp_sum + _PRECISION_EPS)
    final_recall = recall[..., -1] if recall.shape[-1] else np.zeros(recall.shape[:2])
    return interpolated_precision(precision, recall, rec_thresholds), final_recall


def accumulate(
    scores: np.ndarray,
    det_class: np.ndarray,
    det_rank: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    n_regular: np.ndarray,
    rec_thresholds: np.ndarray,
    max_dets: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate: precision ``[T, R, K, A, M]``, recall ``[T, K, A, M]``; -1 if undefined.

    Detections of a class are ranked across images by a stable sort of their scores,
    starting from (image order, rank within image), which is pycocotools' tie order.

    Args:
        scores, det_class, det_rank (ndarray[D]): detections sorted by (image, class, rank).
        tp, fp (ndarray[D, A, T] bool): outcome of each detection.
        n_regular (ndarray[K, A]): non-ignored ground truths per class and area range.
        rec_thresholds (ndarray[R]); max_dets: sorted per-image detection caps.
    """
    K, A = n_regular.shape
    T, R, M = tp.shape[2], len(rec_thresholds), len(max_dets)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    defined = n_regular > 0  # [K, A]
    for k in np.flatnonzero(defined.any(axis=1)):
        rows = np.flatnonzero(det_class == k)
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        for m, max_det in enumerate(max_dets):
            top = rows[det_rank[rows] < max_det]
            points, final = _curve_points(tp[top], fp[top], n_regular[k], rec_thresholds)  # [A, T, R], [A, T]
            precision[:, :, k, :, m] = np.where(defined[k], points.transpose(1, 2, 0), -1)
            recall[:, k, :, m] = np.where(defined[k], final.T, -1)
    return precision, recall


def _mean_defined(values: np.ndarray) -> float:
    """Mean over entries > -1, or -1 when there are none (COCOeval.summarize)."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def _summarize(
    precision: np.ndarray,
    recall: np.ndarray,
    thresholds: np.ndarray,
    area_names: list[str],
    max_dets: tuple[int, ...],
    classes: np.ndarray,
    class_metrics: bool,
) -> dict:
    """The COCO summary numbers (and per-class ones) as a flat dict of Python floats."""
    every, last = area_names.index("all"), len(max_dets) - 1
    result = {"map": _mean_defined(precision[:, :, :, every, last])}
    for t in (0.5, 0.75):
        rows = np.flatnonzero(np.isclose(thresholds, t, rtol=0, atol=1e-12))
        result[f"map_{round(t * 100)}"] = _mean_defined(precision[rows][:, :, :, every, last])
    named = [(a, name) for a, name in enumerate(area_names) if a != every]
    result |= {f"map_{name}": _mean_defined(precision[:, :, :, a, last]) for a, name in named}
    result |= {f"mar_{m}": _mean_defined(recall[:, :, every, i]) for i, m in enumerate(max_dets)}
    result |= {f"mar_{name}": _mean_defined(recall[:, :, a, last]) for a, name in named}
    if class_metrics:
        labels = [int(c) for c in classes]
        per_class_ap = precision[:, :, :, every, last]  # [T, R, K]
        per_class_ar = recall[:, :, every, last]  # [T, K]
        result["map_per_class"] = {c: _mean_defined(per_class_ap[:, :, k]) for k, c in enumerate(labels)}
        result[f"mar_{max_dets[-1]}_per_class"] = {c: _mean_defined(per_class_ar[:, k]) for k, c in enumerate(labels)}
    return result


# ---------------------------------------------------------------- COCO mAP: entry point


def _settings(
    iou_type: str,
    iou_thresholds: Sequence[float] | None,
    rec_thresholds: Sequence[float] | None,
    max_dets: Sequence[int],
    area_ranges: Mapping[str, tuple[float, float]] | None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], list[str], np.ndarray]:
    """Validate the evaluation parameters; fill in COCO's defaults."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    ious = COCO_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64).ravel()
    recs = COCO_REC_THRESHOLDS if rec_thresholds is None else np.asarray(rec_thresholds, dtype=np.float64).ravel()
    if not len(max_dets) or any(int(m) != m or m < 1 for m in max_dets):
        raise ValueError(f"max_dets must be positive integers, got {max_dets}")
    ranges = COCO_AREA_RANGES if area_ranges is None else dict(area_ranges)
    if "all" not in ranges:
        raise ValueError(f"area_ranges must contain 'all', got {list(ranges)}")
    bounds = np.array([ranges[name] for name in ranges], dtype=np.float64).reshape(-1, 2)  # [A, 2]
    return ious, recs, tuple(sorted(int(m) for m in max_dets)), list(ranges), bounds


def mean_average_precision(
    preds: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    iou_type: str = "bbox",
    iou_thresholds: Sequence[float] | None = None,
    rec_thresholds: Sequence[float] | None = None,
    max_dets: Sequence[int] = COCO_MAX_DETS,
    area_ranges: Mapping[str, tuple[float, float]] | None = None,
    class_metrics: bool = True,
) -> dict:
    """COCO-style mean average precision and recall, equal to pycocotools' COCOeval.

    For every (image, class): keep the ``max(max_dets)`` highest-scoring detections;
    for every area range and IoU threshold, match greedily (module docstring), with
    pycocotools' rules:

    * crowd ground truths (``iscrowd``) are ignored, may absorb any number of
      detections, and their IoU is intersection / detection area;
    * a ground truth is ignored outside the area range, judged by its ``area`` (see
      :func:`target_areas`: the ``area`` field when given, as COCO does, not the box);
    * a detection matched to an ignored ground truth is dropped, and so is an unmatched
      detection whose own area is outside the range. A detection's area is its *box*
      area in both modes, because pycocotools' ``loadRes`` computes ``w * h`` for every
      result that carries a ``bbox`` (ours do, as do detectron2's);
    * thresholds are capped at ``1 - 1e-10``; matching uses ``>=``.

    Then per class, area and cap: rank detections over all images (stable sort by
    score; ties in image order, then rank), precision ``TP / (TP + FP + eps)``, its
    envelope, and 101-point interpolation. A class without (non-ignored) ground truth
    in a range gives -1 there, which the means skip. ``map_small`` etc. and the
    per-class values use the largest cap (pycocotools hard-codes 100 in ``summarize``).

    Args:
        preds: one dict per image: ``boxes`` (Tensor[N, 4] xyxy), ``scores``
            (Tensor[N]), ``labels`` (Tensor[N] int), and for ``"segm"`` ``masks``
            (Tensor[N, H, W] bool/uint8).
        targets: one dict per image: ``boxes`` (Tensor[M, 4] xyxy), ``labels``
            (Tensor[M] int), optionally ``iscrowd`` (Tensor[M]), ``area`` (Tensor[M]),
            and for ``"segm"`` ``masks`` (Tensor[M, H, W]).
        iou_type: ``"bbox"`` or ``"segm"`` (mask IoU).
        iou_thresholds: default COCO's 0.50:0.05:0.95.
        rec_thresholds: default COCO's 0:0.01:1.
        max_dets: per-image caps, default (1, 10, 100).
        area_ranges: ``{name: (low, high)}`` inclusive, must contain ``"all"``;
            default COCO's all / small / medium / large.
        class_metrics: also return per-class values.

    Returns:
        dict of Python floats (-1.0 where undefined): ``map``, ``map_50``, ``map_75``,
        ``map_<area>``, ``mar_<cap>`` for each cap, ``mar_<area>``; with
        ``class_metrics``, ``map_per_class`` and ``mar_<largest cap>_per_class``, each
        ``{label: float}`` over every label seen in ``preds`` or ``targets``.

    Raises:
        ValueError: on unequal lengths, or naming the image index and key of a missing
            or malformed entry, or a bad parameter.
    """
    thresholds, recs, max_dets, area_names, bounds = _settings(
        iou_type, iou_thresholds, rec_thresholds, max_dets, area_ranges
    )
    if len(preds) != len(targets):
        raise ValueError(f"preds and targets must have one entry per image, got {len(preds)} and {len(targets)}")
    for i, (pred, target) in enumerate(zip(preds, targets)):
        _validate_image(i, pred, target, iou_type)
    dets, gts = _flatten(preds, is_pred=True), _flatten(targets, is_pred=False)
    classes = np.unique(np.concatenate([dets.label, gts.label]))  # [K]
    dets, det_rank = _top_detections(dets, max_dets[-1])
    det_class, gt_class = np.searchsorted(classes, dets.label), np.searchsorted(classes, gts.label)
    # a group is one (image, class) pair; both tables are sorted by it
    keys = np.unique(np.concatenate([dets.image * len(classes) + det_class, gts.image * len(classes) + gt_class]))
    det_group = np.searchsorted(keys, dets.image * len(classes) + det_class)
    gt_group = np.searchsorted(keys, gts.image * len(classes) + gt_class)
    pair_det, pair_gt, pair_rank = _same_group_pairs(det_group, gt_group, len(keys))
    if iou_type == "bbox":
        iou = _pair_box_ious(dets.boxes[pair_det], gts.boxes[pair_gt], gts.extra[pair_gt])
    else:
        iou = _pair_mask_ious(dets, gts, pair_det, pair_gt, preds, targets)
    gt_ignore = gts.extra[:, None] | _outside(gts.area, bounds)  # [G, A]: crowd or out of range
    pairs = (pair_det, pair_gt, pair_rank, iou)
    matches = _match_all(det_group, det_rank, gt_group, gts.extra, gt_ignore, pairs, thresholds, len(keys))
    tp, fp = _outcomes(matches, gt_ignore, _outside(dets.area, bounds))
    n_regular = np.stack([np.bincount(gt_class[~ignored], minlength=len(classes)) for ignored in gt_ignore.T], axis=1)
    precision, recall = accumulate(dets.extra, det_class, det_rank, tp, fp, n_regular, recs, max_dets)
    return _summarize(precision, recall, thresholds, area_names, max_dets, classes, class_metrics)


def _top_detections(dets: _Flat, max_det: int) -> tuple[_Flat, np.ndarray]:
    """The ``max_det`` best detections of each (image, label), sorted by (image, label, rank).

    Returns:
        tuple: the kept detections, and the rank of each within its (image, label).
    """
    order = _stable_order(dets.image, dets.label, -dets.extra)
    _, group = np.unique(np.stack([dets.image[order], dets.label[order]]), axis=1, return_inverse=True)
    rank = _rank_within(group.ravel())
    return dets.take(order[rank < max_det]), rank[rank < max_det]


def _outside(areas: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``[N, A]`` bool: area outside each inclusive range ``bounds[a] = (low, high)``."""
    return (areas[:, None] < bounds[:, 0]) | (areas[:, None] > bounds[:, 1])


def _outcomes(matches: np.ndarray, gt_ignore: np.ndarray, det_outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives from matches; ignored detections are neither.

    A detection is ignored when it matched an ignored ground truth, or matched nothing
    and its own area is outside the range.

    Args:
        matches (ndarray[D, A, T]): matched ground-truth row or -1.
        gt_ignore (ndarray[G, A] bool); det_outside (ndarray[D, A] bool).

    Returns:
        tuple[ndarray[D, A, T] bool, ndarray[D, A, T] bool]: ``tp``, ``fp``.
    """
    found = matches >= 0
    if not len(gt_ignore):
        return found, ~found & ~det_outside[:, :, None]
    areas = np.arange(gt_ignore.shape[1])[:, None]  # [A, 1] against matches [D, A, T]
    on_ignored = found & gt_ignore[np.maximum(matches, 0), areas]
    return found & ~on_ignored, ~found & ~det_outside[:, :, None]
