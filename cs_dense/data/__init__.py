"""Data for the course: the synthetic shapes dataset, the detection-dict format, COCO export,
real-dataset adapters.

Every dataset returns ``(image, target)`` with ``image`` a float32 ``Tensor[3, H, W]`` in
[0, 1] and ``target`` a dict in torchvision's detection convention (``boxes`` xyxy
pixels under the +1 convention, ``labels``, optionally ``masks``, ...). Nothing here
downloads anything: the shapes are generated, real datasets are read from folders the
user already has.
"""

from cs_dense.data.coco import export_coco, to_coco_gt, to_coco_results
from cs_dense.data.paths import find_data_dir
from cs_dense.data.real import VOC_CLASSES, CocoDetectionAdapter, VOCDetectionAdapter
from cs_dense.data.shapes import (
    CLASSES,
    COLOR_NAMES,
    PALETTE,
    SPLITS,
    ShapeObject,
    ShapesConfig,
    ShapesDataset,
    collate_fn,
    load_split,
    make_sample,
    render_scene,
    scene_objects,
    stack_images,
)

__all__ = [
    "CLASSES",
    "COLOR_NAMES",
    "PALETTE",
    "SPLITS",
    "VOC_CLASSES",
    "CocoDetectionAdapter",
    "ShapeObject",
    "ShapesConfig",
    "ShapesDataset",
    "VOCDetectionAdapter",
    "collate_fn",
    "export_coco",
    "load_split",
    "find_data_dir",
    "make_sample",
    "render_scene",
    "scene_objects",
    "stack_images",
    "to_coco_gt",
    "to_coco_results",
]
