"""Adversarial examples: the fast gradient sign method and an iterative fooling image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs_dense.explain.maps import _check_inputs, _input, _scores
from cs_dense.validation import check_int, check_real, check_tensor


def fgsm(model: nn.Module, images: Tensor, labels: Tensor, epsilon: float, targeted: bool = False) -> Tensor:
    """Goodfellow et al.'s fast gradient sign method for a multi-label classifier.

    The loss of an image is its binary cross-entropy summed over classes,
    ``L = sum_c BCE(S_c, y_c)``. Untargeted, ``y`` are the true labels and the step
    climbs the loss: ``x + eps * sign(dL/dx)``; targeted, ``y`` are the labels wanted and
    the step descends it: ``x - eps * sign(dL/dx)``. The result is clamped to ``[0, 1]``.

    Args:
        model: in eval mode.
        images (Tensor[B, C, H, W]): in [0, 1].
        labels (Tensor[B, classes]): 0/1 floats.
        epsilon: the step, ``>= 0``, in image units (``4 / 255`` is four grey levels).
        targeted: see above.

    Returns:
        Tensor[B, C, H, W]: detached.
    """
    _check_inputs(model, images, 0)
    epsilon = check_real("epsilon", epsilon, 0.0)
    check_tensor(labels, "labels", ndim=2, shape="[B, classes]", floating=True)
    x = _input(images)
    logits = model(x)
    if labels.shape != logits.shape:
        raise ValueError(f"labels must have the scores' shape {list(logits.shape)}, got {list(labels.shape)}")
    loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits), reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    step = -epsilon if targeted else epsilon
    return (images + step * grad.sign()).clamp(0, 1).detach()


def fooling_image(
    model: nn.Module, image: Tensor, target: int, step_size: float = 1 / 255, max_steps: int = 100
) -> tuple[Tensor, int]:
    """Nudge one image until the classifier says class ``target`` is present.

    While ``S_target <= 0`` (a sigmoid probability of at most one half) and fewer than
    ``max_steps`` steps were taken, step ``x <- clamp(x + step_size * sign(dS_target/dx), 0, 1)``
    (the iterated sign step of Kurakin et al.).

    Args:
        model: in eval mode.
        image (Tensor[C, H, W]): in [0, 1].
        target: the class to make the model see.
        step_size: ``> 0``.
        max_steps: ``>= 0``.

    Returns:
        (Tensor[C, H, W], int): the last image and the number of steps taken; the model
        is fooled iff its ``S_target > 0``, which may not be the case after ``max_steps``.
    """
    check_tensor(image, "image", ndim=3, shape="[C, H, W]", floating=True)
    if not isinstance(target, int) or isinstance(target, bool):
        raise ValueError(f"target must be an int class index, got {target!r}")
    target_ = _check_inputs(model, image[None], target)
    check_real("step_size", step_size, 0.0, open_low=True)
    check_int("max_steps", max_steps, 0)
    x, steps = _input(image[None]), 0
    while True:
        score = _scores(model, x, target_)[0]
        if score.item() > 0 or steps == max_steps:
            return x.detach()[0], steps
        (grad,) = torch.autograd.grad(score, x)
        x = _input((x + step_size * grad.sign()).clamp(0, 1))
        steps += 1
