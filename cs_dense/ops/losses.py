"""Losses PyTorch does not ship: the soft multi-class Dice loss and the focal loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cs_dense.validation import check_choice, check_real, check_tensor, describe


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


#: Focal loss reductions, as in ``torchvision.ops.sigmoid_focal_loss``.
FOCAL_REDUCTIONS = ("none", "mean", "sum")


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Focal loss on independent sigmoid outputs (Lin et al., "Focal Loss for Dense Object
    Detection", ICCV 2017, eq. 5), the same function as ``torchvision.ops.sigmoid_focal_loss``.

    With ``p = sigmoid(x)`` and ``p_t = p`` for a positive target, ``1 - p`` for a negative
    one, each element costs

        ``FL = -alpha_t * (1 - p_t) ** gamma * log(p_t)``

    where ``alpha_t = alpha`` for positives and ``1 - alpha`` for negatives. ``(1 - p_t) ** gamma``
    shrinks the loss of examples that are already right (``p_t`` near 1), so thousands of
    easy background anchors no longer outweigh the few hard ones. ``log(p_t)`` is computed
    as a binary cross-entropy with logits, so logits of +-100 give finite values and
    gradients (also for ``0 < gamma < 1``, where torchvision's gradient of a saturated logit
    is NaN). ``gamma = 0`` and ``alpha < 0`` give plain binary cross-entropy.

    Args:
        inputs (Tensor[...]): logits, floating point.
        targets (Tensor[...]): same shape, 0 or 1 (soft targets in between are allowed).
        alpha: weight of positives in ``[0, 1]``; any negative value switches weighting off.
        gamma: focusing exponent, ``>= 0``.
        reduction: ``"none"`` (elementwise), ``"mean"`` or ``"sum"``.

    Returns:
        Tensor: the shape of ``inputs`` for ``"none"``, else a scalar.

    Raises:
        ValueError: shapes differ, ``inputs`` is not floating point, ``alpha > 1``,
            ``gamma < 0`` or an unknown reduction.
    """
    check_tensor(inputs, "inputs", floating=True)
    check_tensor(targets, "targets")
    if targets.shape != inputs.shape:
        raise ValueError(f"targets must have the shape of inputs {list(inputs.shape)}, got {describe(targets)}")
    check_real("alpha", alpha, None, 1.0)
    check_real("gamma", gamma, 0.0)
    check_choice("reduction", reduction, FOCAL_REDUCTIONS)
    targets = targets.to(inputs.dtype)
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    # (1 - p_t) ** gamma with 0 < gamma < 1 has an infinite derivative at 1 - p_t = 0, which a
    # saturated logit (|x| > ~17 in float32) reaches exactly; torchvision's gradient is NaN there.
    # Clamping at the dtype's smallest normal number changes no value above it and gives the
    # saturated entries a zero gradient (the true one is below e**(-17 gamma)).
    loss = ce * (1 - p_t).clamp(min=torch.finfo(p_t.dtype).tiny) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
