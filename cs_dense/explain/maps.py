"""Maps of where a classifier looks: saliency, CAM, Grad-CAM, guided backpropagation and
the deconvnet rule, guided Grad-CAM.

Every function explains the *unnormalised* score ``S_c`` (the logit) of one class per
image and needs the model in ``eval()`` mode: in training mode BatchNorm normalises each
channel with the statistics of the batch, so one image's score depends on every other image
of the batch and its gradient leaks into theirs. None of them leaves gradients on the
model's parameters or hooks on its modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs_dense.validation import check_choice, check_tensor, describe

#: Rules of :func:`guided_backprop` for the backward pass of a ReLU.
BACKPROP_RULES = ("guided", "deconvnet")


def _check_inputs(model: nn.Module, images: Tensor, target) -> Tensor:
    """Validate the common arguments; the target class of each image as Tensor[B] int64."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {describe(model)}")
    if model.training:
        raise ValueError(
            "model is in training mode: BatchNorm would mix the images of the batch; call model.eval() first"
        )
    check_tensor(images, "images", ndim=4, shape="[B, C, H, W]", floating=True)
    batch = images.shape[0]
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((batch,), target, dtype=torch.int64)
    if not isinstance(target, Tensor) or target.dtype != torch.int64 or target.shape != (batch,):
        raise ValueError(f"target must be an int or an int64 tensor of shape [{batch}], got {target!r}")
    return target.to(images.device)


def _scores(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    """``S_target`` of each image, Tensor[B], after checking the class indices."""
    logits = model(images)
    if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
        raise ValueError(f"model must return scores of shape [B, classes], got {describe(logits)}")
    if len(target) and (target.min() < 0 or target.max() >= logits.shape[1]):
        raise ValueError(f"target classes must be in 0..{logits.shape[1] - 1}, got {target.tolist()}")
    return logits.gather(1, target[:, None])[:, 0]


def _input(images: Tensor) -> Tensor:
    """A fresh leaf copy of the images to differentiate with respect to."""
    return images.detach().clone().requires_grad_(True)


def saliency_map(model: nn.Module, images: Tensor, target) -> Tensor:
    """Simonyan et al.'s saliency: ``max over channels of |dS_c / dI|``.

    Args:
        model: in eval mode, mapping ``[B, C, H, W]`` to scores ``[B, classes]``.
        images (Tensor[B, C, H, W]): floating.
        target: the class to explain, one int for all images or Tensor[B] int64.

    Returns:
        Tensor[B, H, W], non-negative.
    """
    target = _check_inputs(model, images, target)
    x = _input(images)
    (grad,) = torch.autograd.grad(_scores(model, x, target).sum(), x)
    return grad.abs().amax(dim=1)


def class_activation_map(model: nn.Module, images: Tensor, target) -> Tensor:
    """Zhou et al.'s class activation map ``M_c = sum_k w_kc f_k`` at the features' resolution.

    The model must end as ``classifier(features(x).mean((2, 3)))`` with ``classifier`` an
    ``nn.Linear``; then ``M_c.mean() + b_c == S_c``.

    Args:
        model: with ``features`` (images to ``[B, K, h, w]``) and ``classifier`` (``nn.Linear(K, classes)``).
        images (Tensor[B, C, H, W]).
        target: one int or Tensor[B] int64.

    Returns:
        Tensor[B, h, w], computed without gradients.
    """
    target = _check_inputs(model, images, target)
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    if not isinstance(features, nn.Module) or not isinstance(classifier, nn.Linear):
        raise ValueError("model must have a `features` module and an nn.Linear `classifier`, as ShapesClassifier")
    with torch.no_grad():
        maps = features(images)
        if len(target) and (target.min() < 0 or target.max() >= classifier.out_features):
            raise ValueError(f"target classes must be in 0..{classifier.out_features - 1}, got {target.tolist()}")
        return torch.einsum("bk,bkhw->bhw", classifier.weight[target], maps)


def grad_cam(model: nn.Module, layer: nn.Module, images: Tensor, target, size: Sequence[int] | None = None) -> Tensor:
    """Selvaraju et al.'s Grad-CAM at the output of ``layer``.

    ``alpha_k`` is the spatial mean of ``dS_c / dA_k`` over the layer's output ``A``, and the
    map ``ReLU(sum_k alpha_k A_k)``, optionally resized bilinearly (``align_corners=False``).

    Args:
        model: in eval mode.
        layer: a submodule of ``model`` that runs once per forward and outputs ``[B, K, h, w]``.
        images (Tensor[B, C, H, W]).
        target: one int or Tensor[B] int64.
        size: ``(H', W')`` to resize to, or ``None`` for the layer's ``(h, w)``.

    Returns:
        Tensor[B, h, w] or Tensor[B, H', W'], non-negative, detached.
    """
    target = _check_inputs(model, images, target)
    if not any(module is layer for module in model.modules()):
        raise ValueError(f"layer must be a submodule of the model, got {describe(layer)}")
    outputs = []
    handle = layer.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    try:
        scores = _scores(model, _input(images), target)
    finally:
        handle.remove()
    if len(outputs) != 1 or not isinstance(outputs[0], Tensor) or outputs[0].ndim != 4:
        raise ValueError(f"layer must run once per forward and output [B, K, h, w]; it ran {len(outputs)} times")
    activations = outputs[0]
    (grads,) = torch.autograd.grad(scores.sum(), activations)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # alpha_k: [B, K, 1, 1]
    cam = F.relu((weights * activations).sum(dim=1)).detach()
    if size is not None:
        cam = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return cam


def guided_backprop(model: nn.Module, images: Tensor, target, rule: str = "guided") -> Tensor:
    """The gradient of ``S_c`` with respect to the images, through modified ReLU backward passes.

    At every ``nn.ReLU`` module, with ``x`` its input and ``g`` the gradient arriving from above:

    * ``"guided"`` (Springenberg et al.): pass ``g`` where ``x > 0`` **and** ``g > 0``;
    * ``"deconvnet"`` (Zeiler and Fergus): pass ``g`` where ``g > 0``, whatever ``x`` was.

    The plain gradient passes ``g`` where ``x > 0``. Other layers are unchanged.

    Args:
        model: in eval mode; every ReLU an ``nn.ReLU`` module, not in-place.
        images (Tensor[B, C, H, W]).
        target: one int or Tensor[B] int64.
        rule: one of :data:`BACKPROP_RULES`.

    Returns:
        Tensor[B, C, H, W]: signed, detached.
    """
    target = _check_inputs(model, images, target)
    check_choice("rule", rule, BACKPROP_RULES)
    relus = [module for module in model.modules() if isinstance(module, nn.ReLU)]
    if any(module.inplace for module in relus):
        raise ValueError("the model has an in-place nn.ReLU; backward hooks need ReLU(inplace=False)")

    def hook(module, grad_input, grad_output):
        # grad_input is the plain ReLU backward, g * (x > 0); grad_output is g itself
        return (F.relu(grad_input[0] if rule == "guided" else grad_output[0]),)

    handles = [module.register_full_backward_hook(hook) for module in relus]
    try:
        x = _input(images)
        (grad,) = torch.autograd.grad(_scores(model, x, target).sum(), x)
    finally:
        for handle in handles:
            handle.remove()
    return grad


def guided_grad_cam(model: nn.Module, layer: nn.Module, images: Tensor, target) -> Tensor:
    """Guided Grad-CAM: guided backpropagation times Grad-CAM resized to the images.

    Returns:
        Tensor[B, C, H, W].
    """
    cam = grad_cam(model, layer, images, target, size=images.shape[-2:])
    return guided_backprop(model, images, target) * cam[:, None]
