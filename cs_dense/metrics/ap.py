"""Precision, recall and average precision of one ranked list of predictions (VOC and COCO ways)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cs_dense.validation import check_choice, check_same_length, check_tensor

AP_METHODS = ("voc07", "voc", "coco101")
# pycocotools builds its grid with linspace (not arange) so that every recall step is the
# nearest double; building it the same way keeps comparisons identical.
COCO_REC_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1)


def precision_recall_curve(scores: Tensor, is_tp: Tensor, num_gt: int) -> tuple[Tensor, Tensor]:
    """Precision and recall after each prediction, in decreasing score order.

    Args:
        scores (Tensor[N]): confidence of each prediction.
        is_tp (Tensor[N] bool): whether each prediction is a true positive.
        num_gt: number of (non-ignored) ground truths; recall is ``NaN`` when it is 0.

    Returns:
        tuple[Tensor[N], Tensor[N]]: float64 ``precision = TP / (TP + FP)`` and
        ``recall = TP / num_gt`` after the top 1, 2, ..., N predictions (stable sort).

    Raises:
        ValueError: on mismatched shapes, ``num_gt < 0`` or more true positives than
            ``num_gt``.
    """
    check_tensor(scores, "scores", ndim=1, shape="[N]")
    N = scores.shape[0]
    check_same_length("is_tp", is_tp, N, of="prediction")
    hits = int(is_tp.sum())
    if num_gt < 0 or hits > num_gt:
        raise ValueError(f"num_gt must be >= 0 and >= the number of true positives ({hits}), got {num_gt}")
    order = torch.sort(scores.detach().cpu(), descending=True, stable=True).indices
    tp = is_tp.cpu()[order].double().cumsum(0)  # [N] true positives so far
    precision = tp / torch.arange(1, N + 1, dtype=torch.float64)
    recall = tp / num_gt if num_gt > 0 else torch.full((N,), float("nan"), dtype=torch.float64)
    return precision, recall


def average_precision(scores: Tensor, is_tp: Tensor, num_gt: int, method: str = "coco101") -> float:
    """Average precision of one ranked list of predictions.

    * ``"voc07"``: PASCAL VOC 2007's 11 points, the mean over ``r in {0, 0.1, ..., 1}``
      of the best precision reached at recall ``>= r`` (0 if never reached). The
      recall points are exact tenths (the VOC devkit's ``np.arange`` is off by an ulp
      at some of them).
    * ``"voc"``: VOC 2010+, the exact area under the precision envelope (precision
      made non-increasing in recall).
    * ``"coco101"``: COCO's 101 points ``r in {0, 0.01, ..., 1}``: for each, the
      envelope at the first prediction whose recall is ``>= r`` (``searchsorted``
      side ``"left"``), 0 if recall never reaches ``r``; then the mean.

    Args:
        scores (Tensor[N]): confidence of each prediction.
        is_tp (Tensor[N] bool): whether each prediction is a true positive.
        num_gt: number of (non-ignored) ground truths.
        method: ``"voc07"``, ``"voc"`` or ``"coco101"``.

    Returns:
        float: AP in ``[0, 1]``; ``nan`` when ``num_gt == 0``, where recall and so AP are
        undefined (COCO's ``-1`` sentinel would silently drag a mean down; a NaN shows).

    Raises:
        ValueError: for an unknown ``method`` or the errors of
            :func:`precision_recall_curve`.
    """
    check_choice("method", method, AP_METHODS)
    precision, recall = precision_recall_curve(scores, is_tp, num_gt)
    if num_gt == 0:
        return float("nan")
    precision, recall = precision.numpy(), recall.numpy()
    if method == "voc":
        return area_under_envelope(precision, recall)
    points = np.arange(11) / 10 if method == "voc07" else COCO_REC_THRESHOLDS
    return float(interpolated_precision(precision, recall, points).mean())


def precision_envelope(precision: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Make precision non-increasing along the last axis: at each rank, the best precision
    at that rank or any later one (the "interpolated" precision of VOC and COCO).

    Args:
        precision (ndarray[..., N] | Tensor[..., N]): precision after each prediction.

    Returns:
        the envelope, of the same type, shape and dtype.
    """
    if isinstance(precision, Tensor):
        return precision.flip(-1).cummax(dim=-1).values.flip(-1)
    return np.maximum.accumulate(precision[..., ::-1], axis=-1)[..., ::-1]


def interpolated_precision(precision: np.ndarray, recall: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Envelope precision at the first rank whose recall is ``>=`` each point (0 if none).

    Args:
        precision (ndarray[..., N]): precision after each prediction.
        recall (ndarray[..., N]): non-decreasing recall after each prediction.
        points (ndarray[R]): recall levels.

    Returns:
        ndarray[..., R]: interpolated precision.
    """
    *lead, N = precision.shape
    if N == 0:
        return np.zeros((*lead, len(points)))
    rows = torch.from_numpy(np.ascontiguousarray(recall.reshape(-1, N)))  # [rows, N]
    levels = torch.from_numpy(np.array(points, dtype=np.float64)).expand(rows.shape[0], -1).contiguous()  # [rows, R]
    index = torch.searchsorted(rows, levels).numpy().reshape(*lead, len(points))  # first rank with recall >= level
    reached = np.take_along_axis(precision_envelope(precision), np.minimum(index, N - 1), axis=-1)
    return np.where(index < N, reached, 0.0)


def area_under_envelope(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2010+ AP: sum of recall steps times the envelope precision at each step."""
    recall = np.concatenate([[0.0], recall])
    envelope = precision_envelope(precision)
    return float(np.sum(np.diff(recall) * envelope))

