"""Scoring explanation maps: against the objects (pointing game, IoU of the map's top
pixels with the object's mask, a centre-of-image baseline), and against the model (the
cascading weight randomisation of Adebayo et al.'s sanity checks)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from cs_dense.validation import check_int, check_tensor


def class_masks(target: dict, num_classes: int = 3) -> Tensor:
    """Per class, the union of that class's instance masks: Tensor[num_classes, H, W] bool
    (row ``k`` for dataset label ``k + 1``)."""
    masks, labels = target["masks"].bool(), target["labels"]
    out = torch.zeros(num_classes, *masks.shape[-2:], dtype=torch.bool, device=masks.device)
    for mask, label in zip(masks, labels.tolist()):
        if not 1 <= label <= num_classes:
            raise ValueError(f"labels must be in 1..{num_classes}, got {label}")
        out[label - 1] |= mask
    return out


def _check_pair(maps: Tensor, masks: Tensor) -> None:
    check_tensor(maps, "maps", ndim=3, shape="[N, H, W]")
    if not isinstance(masks, Tensor) or masks.shape != maps.shape:
        raise ValueError(f"masks must be a tensor of the maps' shape {list(maps.shape)}, got {masks!r}")


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Zhang et al.'s pointing game without tolerance: is each map's maximum inside its mask?

    Ties go to the first maximum in raster order (a constant map points at pixel (0, 0)).

    Args:
        maps (Tensor[N, H, W]): larger is more important.
        masks (Tensor[N, H, W]): nonzero inside the object.

    Returns:
        Tensor[N] bool.
    """
    _check_pair(maps, masks)
    peak = maps.flatten(1).argmax(dim=1)
    return masks.flatten(1).ne(0).gather(1, peak[:, None])[:, 0]


def top_area_iou(maps: Tensor, masks: Tensor) -> Tensor:
    """IoU of each mask with the map's ``|mask|`` highest pixels (ties in raster order).

    Taking as many pixels as the object has makes maps of different scales comparable with
    no threshold to tune; a perfect ranking scores 1.

    Args:
        maps (Tensor[N, H, W]).
        masks (Tensor[N, H, W]): nonzero inside; each non-empty.

    Returns:
        Tensor[N] float64.
    """
    _check_pair(maps, masks)
    inside = masks.flatten(1).ne(0)
    area = inside.sum(dim=1)
    if (area == 0).any():
        raise ValueError("every mask must be non-empty")
    order = torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    chosen = rank < area[:, None]
    inter = (chosen & inside).sum(dim=1).double()
    return inter / (2 * area.double() - inter)


def centre_baseline(size) -> Tensor:
    """A map that knows nothing about the image: minus the distance of each pixel centre
    to the image centre, Tensor[H, W] float32 (its maximum is the central pixel(s))."""
    height, width = (check_int("size[0]", size[0], 1), check_int("size[1]", size[1], 1))
    ys = torch.arange(height, dtype=torch.float32) + 0.5 - height / 2
    xs = torch.arange(width, dtype=torch.float32) + 0.5 - width / 2
    return -torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)


def cascading_randomization(model: nn.Module, layers: list[str], seed: int = 0) -> list[tuple[str, nn.Module]]:
    """Adebayo et al.'s cascading randomisation: copies of ``model`` with more and more of
    its layers re-initialised, from the top.

    Copy ``i`` has ``layers[0] .. layers[i]`` re-initialised (every submodule with a
    ``reset_parameters``, so convolutions, BatchNorm (its statistics too) and linear
    layers), seeded by ``seed`` and the layer's position; ``model`` is untouched.

    Args:
        model: the trained model.
        layers: dotted names of submodules, top (output side) first, e.g.
            ``["classifier", "features.4", ..., "features.0"]``.
        seed: the re-initialisation's seed.

    Returns:
        list of ``(name, copy)``, one per layer, each copy in eval mode.
    """
    names = dict(model.named_modules())
    unknown = [name for name in layers if name not in names or name == ""]
    if unknown:
        raise ValueError(f"layers must name submodules of the model, got unknown {unknown}")
    current, out = copy.deepcopy(model), []
    for i, name in enumerate(layers):
        current = copy.deepcopy(current)
        with torch.random.fork_rng():
            torch.manual_seed(seed * 1000 + i)
            for module in current.get_submodule(name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        out.append((name, current.eval()))
    return out
