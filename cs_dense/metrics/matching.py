"""Matching one image's detections to its ground truths, greedily, the way COCO and VOC do.

Conventions:

* Boxes are ``Tensor[N, 4]`` xyxy pixels. Scores: higher is more confident.
* A prediction can match a ground truth when their IoU is ``>=`` the threshold (COCO's
  and VOC's rule; note that NMS suppresses on ``>``).
* Predictions are visited in decreasing score; equal scores keep their input order (a
  stable sort, like pycocotools' ``mergesort``).
* Each prediction takes the still-unmatched ground truth with the highest IoU; among
  equal IoUs the *later* ground truth wins, because pycocotools replaces its running
  best on ``>=``. Ignored ground truths (crowd, VOC "difficult", outside the area range)
  are considered only when no regular one qualifies, and a prediction matched to one is
  neither a true nor a false positive.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cs_dense.ops.boxes import box_iou, check_boxes
from cs_dense.validation import check_same_length

MAX_IOU_THRESHOLD = 1 - 1e-10  # pycocotools caps thresholds just below 1


def greedy_match(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, thresholds: np.ndarray, n_dets: np.ndarray
) -> np.ndarray:
    """COCO's greedy matching for many independent (image, class) problems at once.

    Args:
        ious (ndarray[P, D, G] float64): IoU of each problem's detections, sorted by
            decreasing score, with its ground truths; ``-inf`` marks padding.
        gt_ignore (ndarray[P, A, G] bool): ignored ground truths per area range.
        gt_crowd (ndarray[P, G] bool): crowd ground truths, which may match many times.
        thresholds (ndarray[T] float64): IoU thresholds (matched with ``>=``).
        n_dets (ndarray[P] int): real detections per problem, non-increasing, so that
            the problems still active at rank ``d`` are a prefix.

    Returns:
        ndarray[P, A, T, D] int64: index of the ground truth matched by each detection,
        ``-1`` when unmatched.
    """
    P, D, G = ious.shape
    A, T = gt_ignore.shape[1], len(thresholds)
    match = np.full((P, A, T, D), -1, dtype=np.int64)
    if G == 0:
        return match
    thresholds = np.minimum(thresholds, MAX_IOU_THRESHOLD)[:, None]  # [T, 1]
    matched = np.zeros((P, A, T, G), dtype=bool)
    ignore = gt_ignore[:, :, None, :]  # [P, A, 1, G]
    crowd = gt_crowd[:, None, None, :]  # [P, 1, 1, G]
    for d in range(D):
        p = int(np.count_nonzero(n_dets > d))  # active prefix
        iou = ious[:p, None, None, d, :]  # [p, 1, 1, G]
        free = (iou >= thresholds) & (~matched[:p] | crowd[:p])  # [p, A, T, G]
        regular = free & ~ignore[:p]
        candidates = np.where(regular.any(axis=-1, keepdims=True), regular, free & ignore[:p])
        found = candidates.any(axis=-1)  # [p, A, T]
        # argmax over the reversed axis finds the *last* maximum, as pycocotools does
        value = np.where(candidates, iou, -np.inf)  # [p, A, T, G]
        best = G - 1 - value[..., ::-1].argmax(axis=-1)  # [p, A, T]
        match[:p, :, :, d] = np.where(found, best, -1)
        hit = np.take_along_axis(matched[:p], best[..., None], axis=-1) | found[..., None]
        np.put_along_axis(matched[:p], best[..., None], hit, axis=-1)
    return match


def match_detections(
    pred_boxes: Tensor,
    pred_scores: Tensor,
    gt_boxes: Tensor,
    iou_threshold: float = 0.5,
    gt_ignore: Tensor | None = None,
    *,
    return_ignored: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Greedily match one image's predictions of one class to its ground truths.

    Predictions are visited in decreasing score (stable for ties); each takes the
    unmatched ground truth with the highest IoU if that IoU is ``>= iou_threshold``
    (ties in IoU: the later ground truth), and each ground truth is matched at most once.
    Ignored ground truths (``gt_ignore``) are used only when no regular one qualifies; a
    prediction that lands on one is not a true positive, and should be left out of AP
    rather than counted as a false positive (``return_ignored`` tells which).

    Args:
        pred_boxes (Tensor[N, 4]): xyxy, pixels.
        pred_scores (Tensor[N]): confidence of each prediction.
        gt_boxes (Tensor[M, 4]): xyxy, pixels.
        iou_threshold: minimum IoU for a match (inclusive).
        gt_ignore (Tensor[M] bool | None): ground truths that may absorb a prediction
            without making it a true positive (VOC "difficult", COCO crowd).
        return_ignored: also return which predictions matched an ignored ground truth.

    Returns:
        Tensor[N] bool: ``is_tp`` in the original prediction order, on the device of
        ``pred_scores``; with ``return_ignored``, the pair ``(is_tp, is_ignored)``.

    Raises:
        ValueError: on mismatched or wrongly shaped arguments.
    """
    check_boxes(pred_boxes, "pred_boxes")
    check_boxes(gt_boxes, "gt_boxes")
    N, M = pred_boxes.shape[0], gt_boxes.shape[0]
    check_same_length("pred_scores", pred_scores, N, of="prediction")
    ignore = np.zeros(M, dtype=bool)
    if gt_ignore is not None:
        check_same_length("gt_ignore", gt_ignore, M, of="ground truth")
        ignore = gt_ignore.cpu().numpy() != 0
    order = torch.sort(pred_scores.detach().cpu(), descending=True, stable=True).indices  # [N]
    ious = box_iou(pred_boxes.detach().double(), gt_boxes.detach().double()).cpu().numpy()[order.numpy()]  # [N, M]
    no_crowd = np.zeros((1, M), dtype=bool)
    # one problem, one area range, one threshold: [1, 1, 1, N] -> [N]
    match = greedy_match(ious[None], ignore[None, None], no_crowd, np.array([iou_threshold]), np.array([N]))[0, 0, 0]
    on_ignored = (match >= 0) & ignore[np.maximum(match, 0)] if M else np.zeros(N, dtype=bool)
    is_tp = _unsort((match >= 0) & ~on_ignored, order).to(pred_scores.device)
    return (is_tp, _unsort(on_ignored, order).to(pred_scores.device)) if return_ignored else is_tp


def _unsort(values: np.ndarray, order: Tensor) -> Tensor:
    """Put ``values``, given in the order ``order``, back in the original order."""
    result = torch.empty(len(values), dtype=torch.bool)
    result[order] = torch.from_numpy(values)
    return result

