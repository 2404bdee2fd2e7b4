"""The course's detection dicts: what a prediction and a target hold, checked in one place.

A *prediction* is ``{"boxes": Tensor[N, 4] xyxy, "scores": Tensor[N], "labels": Tensor[N]}``
(plus ``"masks": Tensor[N, H, W]`` for instance segmentation); a *target* is
``{"boxes": Tensor[M, 4], "labels": Tensor[M]}`` with optional ``"iscrowd"``, ``"area"``
and ``"masks"``. The metrics, the COCO export and the datasets all use these.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from cs_dense.ops.boxes import check_boxes
from cs_dense.validation import check_same_length, describe


def target_areas(target: Mapping[str, Tensor]) -> Tensor:
    """The area COCO attaches to each ground truth, as ``to_coco_gt`` writes it.

    ``target["area"]`` when present; otherwise the mask's pixel count when the target
    has ``masks`` (COCO's definition: the area of the segmentation); otherwise the box
    area. COCOeval compares this number, not the box, with the area ranges.

    Args:
        target: dict with ``boxes`` (Tensor[M, 4] xyxy) and optionally ``area``
            (Tensor[M]) and ``masks`` (Tensor[M, H, W]).

    Returns:
        Tensor[M] float64 on the CPU.
    """
    if "area" in target:
        return torch.as_tensor(target["area"]).detach().cpu().double().reshape(-1)
    if "masks" in target:
        return target["masks"].detach().cpu().flatten(1).ne(0).sum(1).double()
    boxes = target["boxes"].detach().cpu().double()
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


_REQUIRED_KEYS = {"preds": ("boxes", "scores", "labels"), "targets": ("boxes", "labels")}
_VECTOR_KEYS = {"preds": ("scores", "labels"), "targets": ("labels", "iscrowd", "area")}


def check_detection_dict(kind: str, i: int, item: Mapping, require_masks: bool) -> None:
    """Raise ``ValueError`` naming ``kind[i]`` and the key of a missing or malformed entry.

    Args:
        kind: ``"preds"`` (needs ``boxes``, ``scores``, ``labels``) or ``"targets"``
            (needs ``boxes``, ``labels``; ``iscrowd`` and ``area`` are checked if given).
        i: the image index, for the message.
        item: the dict to check.
        require_masks: whether ``masks`` (bool/integer Tensor[N, H, W]) must be present.
    """
    if not isinstance(item, Mapping):
        raise ValueError(f"{kind}[{i}] must be a dict, got {describe(item)}")
    for key in _REQUIRED_KEYS[kind] + (("masks",) if require_masks else ()):
        if key not in item:
            raise ValueError(f"{kind}[{i}] is missing key {key!r}")
    check_boxes(item["boxes"], f"{kind}[{i}]['boxes']")
    n = item["boxes"].shape[0]
    for key in _VECTOR_KEYS[kind]:
        if key in item:
            check_same_length(f"{kind}[{i}][{key!r}]", torch.as_tensor(item[key]), n, of="box")
    masks = item["masks"] if require_masks else None
    if masks is not None and not (isinstance(masks, Tensor) and masks.dim() == 3 and masks.shape[0] == n):
        raise ValueError(f"{kind}[{i}]['masks'] must be a tensor of shape [{n}, H, W], got {describe(masks)}")
    if masks is not None and masks.is_floating_point():
        raise ValueError(f"{kind}[{i}]['masks'] must be bool or integer (threshold soft masks), got {masks.dtype}")

