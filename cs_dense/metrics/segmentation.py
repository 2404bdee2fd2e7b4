"""Semantic segmentation metrics, all computed from one confusion matrix.

The confusion matrix is the sufficient statistic: accumulate it over a whole split (it
adds across batches), then read every metric from it. Entry ``[t, p]`` counts pixels of
true class ``t`` predicted as class ``p`` (rows = truth, columns = prediction, as in
scikit-learn), so for class ``c``:

* true positives ``TP = M[c, c]``; false negatives ``FN`` = rest of row ``c``; false
  positives ``FP`` = rest of column ``c``;
* ``IoU_c = TP / (TP + FP + FN)`` (the Jaccard index of the two pixel sets);
* ``Dice_c = 2 TP / (2 TP + FP + FN)`` (the F1 score; ``Dice = 2 IoU / (1 + IoU)``).

A class absent from both truth and prediction has ``0 / 0``: its IoU and Dice are NaN,
and the means skip NaNs (the convention of the PASCAL VOC and Cityscapes evaluations),
so a class that never occurs neither helps nor hurts. A class that is predicted but never
present has IoU 0 and does count.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cs_dense.validation import describe


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """Count pixels by (true class, predicted class).

    Args:
        preds (Tensor[...] integer): predicted class per pixel (e.g. ``logits.argmax(1)``).
        targets (Tensor[...] integer): true class per pixel, same shape as ``preds``.
        num_classes: C; labels are ``0 .. C - 1``.
        ignore_index: a target label whose pixels are left out (e.g. 255 in PASCAL VOC).

    Returns:
        Tensor[C, C] int64 on the inputs' device: entry ``[t, p]`` = number of pixels with
        target ``t`` and prediction ``p``.

    Raises:
        ValueError: shapes differ, a dtype is not integer, ``num_classes < 1``, or a label
            is outside ``0 .. C - 1`` (other than ``ignore_index`` in ``targets``).
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    for name, x in (("preds", preds), ("targets", targets)):
        if not isinstance(x, Tensor) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            what = describe(x)
            raise ValueError(f"{name} must be an integer tensor of class labels (argmax the logits first), got {what}")
    if preds.shape != targets.shape:
        raise ValueError(f"preds and targets must have the same shape, got {list(preds.shape)} and {list(targets.shape)}")
    preds, targets = preds.reshape(-1).long(), targets.reshape(-1).long()
    if ignore_index is not None:
        keep = targets != ignore_index
        preds, targets = preds[keep], targets[keep]
    for name, x in (("preds", preds), ("targets", targets)):
        if x.numel() and (x.min() < 0 or x.max() >= num_classes):
            bad = x[(x < 0) | (x >= num_classes)][0].item()
            raise ValueError(f"{name} holds label {bad}, outside 0..{num_classes - 1} (num_classes={num_classes})")
    flat = targets * num_classes + preds  # one bin per (t, p) pair
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def _check_confusion(confusion: Tensor) -> Tensor:
    if not isinstance(confusion, Tensor) or confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        shape = describe(confusion)
        raise ValueError(f"confusion must be a square [C, C] tensor from confusion_matrix, got {shape}")
    if (confusion < 0).any():
        raise ValueError("confusion has negative counts")
    return confusion.double()


def pixel_accuracy(confusion: Tensor) -> float:
    """The share of pixels whose class is right: trace / total (NaN for an empty matrix)."""
    m = _check_confusion(confusion)
    total = m.sum().item()
    return m.trace().item() / total if total else math.nan


def _tp_fp_fn(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    tp = m.diagonal()
    return tp, m.sum(0) - tp, m.sum(1) - tp  # column sums minus TP, row sums minus TP


def per_class_iou(confusion: Tensor) -> Tensor:
    """IoU of each class, ``TP / (TP + FP + FN)``: Tensor[C] float64, NaN for absent classes."""
    tp, fp, fn = _tp_fp_fn(_check_confusion(confusion))
    return tp / (tp + fp + fn)  # 0 / 0 = NaN marks a class absent from truth and prediction


def mean_iou(confusion: Tensor) -> float:
    """The mean of :func:`per_class_iou` over the classes that occur (NaN if none does)."""
    iou = per_class_iou(confusion)
    return iou.nanmean().item()


def dice(confusion: Tensor) -> Tensor:
    """Dice (F1) of each class, ``2 TP / (2 TP + FP + FN)``: Tensor[C] float64, NaN for absent classes."""
    tp, fp, fn = _tp_fp_fn(_check_confusion(confusion))
    return 2 * tp / (2 * tp + fp + fn)
