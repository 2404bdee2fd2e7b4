"""COCO-format export: ground truth and results that ``pycocotools`` reads as they are.

The course keeps targets as tensors (boxes xyxy pixels, labels, optional instance masks);
COCO files keep one JSON record per object. The mapping:

* ``bbox`` is ``[x, y, width, height]`` (xywh) in float64 pixels.
* ``area`` is ``target["area"]`` when present, else the mask's pixel count, else the box
  area (:func:`cs_dense.data.detections.target_areas`). COCOeval bins objects into
  small / medium / large by this number, not by the box.
* ``segmentation`` is compressed RLE from ``pycocotools.mask.encode``, its ``counts``
  decoded to text so the record is JSON.
* Image ids are ``target["image_id"]`` when present, else 1, 2, ... in order.
  Annotation ids are 1, 2, ...: never 0, because COCOeval stores "matched to id 0" and
  "unmatched" with the same 0 and would silently lose that match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from torch import Tensor
from torchvision.ops import box_convert

from cs_dense.data.detections import check_detection_dict, target_areas


def to_coco_gt(
    targets: Sequence[Mapping[str, Any]],
    image_sizes: Sequence[tuple[int, int]],
    categories: Sequence[str] | Sequence[Mapping[str, Any]],
    include_masks: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Turn course-convention targets into a COCO ground-truth dict.

    Args:
        targets: one dict per image: ``boxes`` (Tensor[M, 4] xyxy pixels), ``labels``
            (Tensor[M] int), optionally ``masks`` (Tensor[M, H, W] bool/uint8), ``area``
            (Tensor[M]), ``iscrowd`` (Tensor[M]) and ``image_id`` (int).
        image_sizes: ``(height, width)`` of each image.
        categories: class names indexed by label (index 0, the background, is skipped),
            or explicit COCO category dicts with at least ``id`` and ``name``.
        include_masks: write ``segmentation`` for targets that have ``masks``.

    Returns:
        dict with ``images``, ``annotations`` and ``categories`` lists, JSON-ready.

    Raises:
        ValueError: on unequal lengths, a malformed target (naming its index and key), a
            label without a category, a mask of the wrong size, or a repeated image id.
    """
    if len(targets) != len(image_sizes):
        sizes = len(targets), len(image_sizes)
        raise ValueError(f"targets and image_sizes must have one entry per image, got {sizes[0]} and {sizes[1]}")
    category_list = _categories(categories)
    known = {c["id"] for c in category_list}
    images, annotations, seen_ids = [], [], set()
    for i, (target, size) in enumerate(zip(targets, image_sizes)):
        check_detection_dict("targets", i, target, require_masks=False)
        image = {"id": int(target.get("image_id", i + 1)), "height": int(size[0]), "width": int(size[1])}
        if image["id"] in seen_ids:
            raise ValueError(f"targets[{i}]['image_id'] repeats image id {image['id']}")
        seen_ids.add(image["id"])
        images.append(image)
        labels = [int(c) for c in target["labels"]]
        if not set(labels) <= known:
            raise ValueError(f"targets[{i}]['labels'] has labels {sorted(set(labels) - known)} without a category")
        segmentations = None
        if include_masks and "masks" in target:
            segmentations = _rles(target["masks"], size, f"targets[{i}]['masks']")
        crowd = [int(c) for c in target.get("iscrowd", [0] * len(labels))]
        for j, (bbox, area) in enumerate(zip(_xywh_lists(target["boxes"]), target_areas(target).tolist())):
            annotation = {"id": len(annotations) + 1, "image_id": image["id"], "category_id": labels[j]}
            annotation |= {"bbox": bbox, "area": area, "iscrowd": crowd[j]}
            if segmentations is not None:
                annotation["segmentation"] = segmentations[j]
            annotations.append(annotation)
    return {"images": images, "annotations": annotations, "categories": category_list}


def to_coco_results(
    preds: Sequence[Mapping[str, Tensor]],
    image_ids: Sequence[int],
    include_masks: bool = False,
) -> list[dict[str, Any]]:
    """Turn per-image predictions into a COCO results list (for ``COCO.loadRes``).

    Every record carries a ``bbox``, so pycocotools computes each detection's area as
    ``w * h`` even in mask evaluation, as :func:`cs_dense.metrics.mean_average_precision`
    assumes.

    Args:
        preds: one dict per image: ``boxes`` (Tensor[N, 4] xyxy), ``scores`` (Tensor[N]),
            ``labels`` (Tensor[N] int), and with ``include_masks`` ``masks``
            (Tensor[N, H, W] bool/uint8).
        image_ids: the COCO image id of each entry of ``preds``.
        include_masks: also write ``segmentation`` (compressed RLE).

    Returns:
        list of dicts ``{image_id, category_id, bbox, score[, segmentation]}``.

    Raises:
        ValueError: on unequal lengths or a malformed prediction (naming index and key).
    """
    if len(preds) != len(image_ids):
        raise ValueError(f"preds and image_ids must have one entry per image, got {len(preds)} and {len(image_ids)}")
    results = []
    for i, (pred, image_id) in enumerate(zip(preds, image_ids)):
        check_detection_dict("preds", i, pred, require_masks=include_masks)
        masks = pred["masks"] if include_masks else None
        segmentations = _rles(masks, tuple(masks.shape[1:]), f"preds[{i}]['masks']") if masks is not None else None
        rows = zip(_xywh_lists(pred["boxes"]), pred["scores"].tolist(), pred["labels"].tolist())
        for j, (bbox, score, label) in enumerate(rows):
            result = {"image_id": int(image_id), "category_id": int(label), "bbox": bbox, "score": float(score)}
            if segmentations is not None:
                result["segmentation"] = segmentations[j]
            results.append(result)
    return results


def export_coco(dataset: Any, path: str | Path, include_masks: bool = True) -> Path:
    """Write a dataset's ground truth as a COCO JSON file that ``pycocotools.coco.COCO`` loads.

    Args:
        dataset: indexable with ``len``, items ``(image Tensor[3, H, W], target)`` in the
            course convention (e.g. :class:`cs_dense.data.ShapesDataset`), and a
            ``classes`` attribute naming the labels (index 0 = background).
        path: the JSON file to write; parent folders are created.
        include_masks: write instance masks as RLE ``segmentation``.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: if ``dataset`` has no ``classes``, or as :func:`to_coco_gt`.
    """
    classes = getattr(dataset, "classes", None)
    if classes is None:
        raise ValueError("dataset must have a `classes` attribute naming the labels (index 0 = background)")
    targets, sizes = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        targets.append(target)
        sizes.append(tuple(image.shape[-2:]))
    coco = to_coco_gt(targets, sizes, classes, include_masks=include_masks)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path


def _categories(categories: Sequence[str] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """COCO category dicts from names (label = index, 0 skipped) or from dicts."""
    if all(isinstance(c, str) for c in categories):
        return [{"id": label, "name": name} for label, name in enumerate(categories) if label > 0]
    if all(isinstance(c, Mapping) and "id" in c and "name" in c for c in categories):
        return [dict(c, id=int(c["id"])) for c in categories]
    raise ValueError("categories must be a sequence of names or of dicts with 'id' and 'name'")


def _xywh_lists(boxes: Tensor) -> list[list[float]]:
    """xyxy tensor -> COCO ``[x, y, w, h]`` lists, widths formed in float64."""
    return box_convert(boxes.detach().cpu().double(), "xyxy", "xywh").tolist()


def _rles(masks: Tensor, size: tuple[int, int], name: str) -> list[dict[str, Any]]:
    """Compressed RLE of each mask, with ``counts`` as text for JSON.

    Args:
        masks (Tensor[N, H, W]): nonzero = foreground.
        size: the expected ``(H, W)``.
        name: how to name ``masks`` in an error.
    """
    if masks.dim() != 3 or tuple(masks.shape[1:]) != (int(size[0]), int(size[1])):
        raise ValueError(f"{name} must have shape [N, {size[0]}, {size[1]}], got {list(masks.shape)}")
    # pycocotools wants column-major uint8 [H, W, N]
    stacked = np.asfortranarray(masks.detach().cpu().ne(0).numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(stacked) if len(masks) else []
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]
