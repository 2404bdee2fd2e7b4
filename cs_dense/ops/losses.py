"""Segmentation losses that PyTorch does not ship: the soft multi-class Dice loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cs_dense.validation import describe


def dice_loss(
    logits: Tensor, target: Tensor, *, smooth: float = 1.0, ignore_index: int | None = None, weight: Tensor | None = None
) -> Tensor:
    """Soft multi-class Dice loss (Milletari et al. 2016, "V-Net"; Sudre et al. 2017).

    With ``p = softmax(logits)`` over the class dimension and ``y`` the one-hot target,
    per class ``c`` and summed over every pixel of the batch:

        ``dice_c = (2 * sum(p_c * y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth)``

    and the loss is ``1 - mean_c dice_c`` (a weighted mean when ``weight`` is given).
    Every class counts equally however few pixels it has, which is why Dice helps with
    small objects where per-pixel cross-entropy is dominated by the background. ``smooth``
    keeps a class that is absent from the batch and not predicted at ``dice_c`` close to
    1 (with ``smooth=0`` it scores 0, because its softmax probabilities are small but never
    exactly 0), and softens the gradient of tiny classes.

    Args:
        logits (Tensor[B, C, H, W]): raw scores (no softmax applied), floating point, C >= 2.
        target (Tensor[B, H, W] int64): class per pixel in ``0 .. C - 1``.
        smooth: added to numerator and denominator, ``>= 0``.
        ignore_index: a target label whose pixels count for no class.
        weight (Tensor[C], optional): non-negative per-class weights for the mean.

    Returns:
        Tensor[]: the loss, in ``[0, 1]``, differentiable with respect to ``logits``.

    Raises:
        ValueError: wrong shapes or dtypes, a label out of range, ``smooth < 0``, or bad weights.
    """
    if not isinstance(logits, Tensor) or logits.dim() < 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor [B, C, ...], got {describe(logits)}")
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"logits need at least 2 classes in dim 1, got shape {list(logits.shape)}")
    if not isinstance(target, Tensor) or target.dtype != torch.int64:
        raise ValueError(f"target must be an int64 tensor of class labels, got {describe(target)}")
    expected = logits.shape[:1] + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(f"target must have shape {list(expected)} for logits {list(logits.shape)}, got {list(target.shape)}")
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    labels = torch.where(valid, target, 0)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise ValueError(f"target holds label {bad}, outside 0..{num_classes - 1}")
    if weight is not None:
        if not isinstance(weight, Tensor) or weight.shape != (num_classes,) or (weight < 0).any() or weight.sum() <= 0:
            raise ValueError(f"weight must be a non-negative Tensor[{num_classes}] with a positive sum, got {describe(weight)}")

    probs = logits.softmax(dim=1) * valid.unsqueeze(1)  # ignored pixels count for no class
    one_hot = F.one_hot(labels, num_classes).movedim(-1, 1).to(probs.dtype) * valid.unsqueeze(1)
    dims = [0, *range(2, logits.dim())]  # everything but the class dimension
    intersection = (probs * one_hot).sum(dims)  # [C]
    cardinality = probs.sum(dims) + one_hot.sum(dims)  # [C]
    per_class = (2 * intersection + smooth) / (cardinality + smooth)
    if weight is None:
        return 1 - per_class.mean()
    weight = weight.to(per_class)
    return 1 - (weight * per_class).sum() / weight.sum()
