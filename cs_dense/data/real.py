"""Adapters that give real datasets the shapes dataset's interface, from local folders.

Each adapter wraps a torchvision dataset and returns ``(image, target)`` with ``image`` a
float32 ``Tensor[3, H, W]`` in [0, 1] and ``target`` in the same torchvision detection
convention as :func:`cs_dense.data.shapes.make_sample`, so a notebook written for the
shapes can run on COCO or VOC by swapping the dataset. Boxes follow the course
convention: float xyxy pixels where pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``.

The course never downloads data: the adapters only read folders the user already has,
and a missing folder or file raises ``FileNotFoundError`` naming it.
"""

from __future__ import annotations

import contextlib
import io
import operator
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import CocoDetection, VOCDetection
from torchvision.datasets.voc import DATASET_YEAR_DICT
from torchvision.ops import box_convert
from torchvision.transforms.functional import pil_to_tensor

#: The 20 PASCAL VOC classes in the standard order, after "background" (label 0).
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_YEARS: tuple[str, ...] = tuple(str(year) for year in range(2007, 2013))

Transforms = Callable[[Tensor, dict[str, Any]], tuple[Any, Any]]


def _require(path: Path, what: str, folder: bool) -> None:
    """Raise ``FileNotFoundError`` naming ``path`` unless it is an existing folder/file."""
    if not (path.is_dir() if folder else path.is_file()):
        kind = "folder" if folder else "file"
        raise FileNotFoundError(
            f"{what}: no such {kind} {str(path)!r}. The course never downloads datasets; "
            f"point it at a copy you already have."
        )


def _to_tensor(image: Image.Image) -> Tensor:
    """A PIL image as ``Tensor[3, H, W]`` float32 in [0, 1]."""
    return pil_to_tensor(image.convert("RGB")).float() / 255


class CocoDetectionAdapter(Dataset):
    """A COCO-format dataset (images folder + annotation JSON) in the course convention.

    Category ids are mapped to contiguous labels 1..K in increasing id order (for the 80
    COCO categories this is the usual mapping). Crowd annotations are kept, with
    ``iscrowd = 1``, so that evaluation can ignore them as COCO does.

    Args:
        root: folder holding the images (``file_name`` in the JSON is relative to it).
        ann_file: the COCO annotation JSON.
        transforms: optional ``transforms(image, target) -> (image, target)``.

    Attributes:
        classes (tuple[str, ...]): ``"background"`` then the category names, by label.
        category_ids (tuple[int, ...]): COCO id of label ``k`` is ``category_ids[k - 1]``.
        has_masks (bool): whether every annotation has a segmentation; if not (a
            detection-only file), targets have no ``masks`` nor ``semantic``.
        coco: the ``pycocotools.coco.COCO`` object, e.g. for evaluation.

    Target keys (N annotations of the image, in file order):
        ``boxes`` (Tensor[N, 4] float32): xyxy pixels, from COCO's ``[x, y, w, h]``.
        ``labels`` (Tensor[N] int64): 1..K.
        ``masks`` (Tensor[N, H, W] uint8): 0/1, decoded from polygons or RLE.
        ``semantic`` (Tensor[H, W] int64): label per pixel, 0 for none; where masks
        overlap the later annotation wins.
        ``area`` (Tensor[N] float32): COCO's ``area`` field (``w * h`` if absent).
        ``iscrowd`` (Tensor[N] int64), ``image_id`` (int): the COCO image id.

    Raises:
        FileNotFoundError: if ``root`` or ``ann_file`` does not exist.
    """

    def __init__(
        self, root: str | Path, ann_file: str | Path, transforms: Transforms | None = None
    ) -> None:
        root, ann_file = Path(root), Path(ann_file)
        _require(root, "root", folder=True)
        _require(ann_file, "ann_file", folder=False)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self._dataset = CocoDetection(str(root), str(ann_file))
        self.coco = self._dataset.coco
        self.transforms = transforms
        self.category_ids = tuple(sorted(self.coco.getCatIds()))
        self.classes = ("background", *(self.coco.cats[i]["name"] for i in self.category_ids))
        self._label_of = {category: k + 1 for k, category in enumerate(self.category_ids)}
        self.has_masks = all(ann.get("segmentation") for ann in self.coco.anns.values())

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        pil_image, anns = self._dataset[index]
        image = _to_tensor(pil_image)
        _, height, width = image.shape
        n = len(anns)
        xywh = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float32).reshape(n, 4)
        labels = [self._label_of[ann["category_id"]] for ann in anns]
        target: dict[str, Any] = {
            "boxes": box_convert(xywh, "xywh", "xyxy"),  # [N, 4]
            "labels": torch.tensor(labels, dtype=torch.int64),
            "area": torch.tensor(
                [ann.get("area", ann["bbox"][2] * ann["bbox"][3]) for ann in anns], dtype=torch.float32
            ),
            "iscrowd": torch.tensor([ann.get("iscrowd", 0) for ann in anns], dtype=torch.int64),
            "image_id": int(self._dataset.ids[index]),
        }
        if self.has_masks:
            masks = np.zeros((n, height, width), dtype=np.uint8)
            with warnings.catch_warnings():
                # pycocotools' decoder predates NumPy 2's copy keyword and says so on
                # every call; the masks it returns are correct.
                warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
                for k, ann in enumerate(anns):
                    masks[k] = self.coco.annToMask(ann)
            semantic = torch.zeros(height, width, dtype=torch.int64)
            target["masks"] = torch.from_numpy(masks)
            for mask, label in zip(target["masks"], target["labels"]):
                semantic[mask.bool()] = label
            target["semantic"] = semantic
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target


class VOCDetectionAdapter(Dataset):
    """PASCAL VOC detection (``root/VOCdevkit/VOC<year>/...``) in the course convention.

    VOC's XML gives 1-based inclusive pixel coordinates: a box on pixel columns
    ``xmin..xmax`` counted from 1. In the course convention (pixel ``(i, j)`` covers
    ``[j, j+1) x [i, i+1)``, counted from 0) that box is::

        x1 = xmin - 1,  y1 = ymin - 1,  x2 = xmax,  y2 = ymax

    VOC detection has no instance masks, so targets have no ``masks`` nor ``semantic``.

    Args:
        root: folder containing ``VOCdevkit`` (as for ``torchvision.datasets.VOCDetection``).
        year: ``"2007"`` ... ``"2012"``.
        image_set: ``"train"``, ``"trainval"``, ``"val"``, or ``"test"`` for 2007.
        transforms: optional ``transforms(image, target) -> (image, target)``.

    Attributes:
        classes (tuple[str, ...]): :data:`VOC_CLASSES`, label ``k`` is ``classes[k]``.

    Target keys (N objects of the image, in file order):
        ``boxes`` (Tensor[N, 4] float32): xyxy pixels, converted as above.
        ``labels`` (Tensor[N] int64): 1..20.
        ``difficult`` (Tensor[N] bool): VOC's flag; VOC evaluation ignores these objects.
        ``area`` (Tensor[N] float32): box area (there are no masks).
        ``iscrowd`` (Tensor[N] int64): zeros.
        ``image_id`` (int): position of the image in the image set.

    Raises:
        ValueError: on an unknown ``year`` or ``image_set``.
        FileNotFoundError: if the VOC folder or the image-set list does not exist.
    """

    def __init__(
        self,
        root: str | Path,
        year: str = "2012",
        image_set: str = "train",
        transforms: Transforms | None = None,
    ) -> None:
        if year not in VOC_YEARS:
            raise ValueError(f"year must be one of {VOC_YEARS}, got {year!r}")
        image_sets = ("train", "trainval", "val") + (("test",) if year == "2007" else ())
        if image_set not in image_sets:
            raise ValueError(f"image_set must be one of {image_sets} for year {year}, got {image_set!r}")
        root = Path(root)
        _require(root, "root", folder=True)
        key = "2007-test" if image_set == "test" else year
        voc_root = root / DATASET_YEAR_DICT[key]["base_dir"]
        _require(voc_root, "VOC folder", folder=True)
        _require(voc_root / "ImageSets" / "Main" / f"{image_set}.txt", "image set list", folder=False)
        self._dataset = VOCDetection(str(root), year=year, image_set=image_set, download=False)
        self.transforms = transforms
        self.classes = VOC_CLASSES

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        index = operator.index(index)
        index += len(self) if index < 0 else 0  # image_id is the non-negative position
        pil_image, annotation = self._dataset[index]
        objects: Sequence[dict[str, Any]] = annotation["annotation"].get("object", [])
        for obj in objects:
            if obj["name"] not in VOC_CLASSES[1:]:
                raise ValueError(
                    f"unknown VOC class {obj['name']!r} in {self._dataset.annotations[index]}"
                )
        n = len(objects)
        corners = [[float(obj["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")] for obj in objects]
        boxes = torch.tensor(corners, dtype=torch.float32).reshape(n, 4)
        # 1-based inclusive -> 0-based half-open: only the top-left corner moves.
        boxes -= torch.tensor([1.0, 1.0, 0.0, 0.0])
        labels = [VOC_CLASSES.index(obj["name"]) for obj in objects]
        difficult = [int(obj.get("difficult", 0)) == 1 for obj in objects]
        target = {
            "boxes": boxes,
            "labels": torch.tensor(labels, dtype=torch.int64),
            "difficult": torch.tensor(difficult, dtype=torch.bool),
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.zeros(n, dtype=torch.int64),
            "image_id": int(index),
        }
        image = _to_tensor(pil_image)
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target
