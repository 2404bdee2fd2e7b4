"""cs_dense.data.coco: COCO export checked by hand and by reading it back with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cs_dense.data.coco import export_coco, to_coco_gt, to_coco_results
from cs_dense.metrics import mean_average_precision

CLASSES = ("background", "circle", "square", "triangle")
# pycocotools' annToMask trips a NumPy 2 deprecation inside the library, not in our code
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def load_coco(dataset: dict) -> COCO:
    """A pycocotools COCO object from a dict, after a JSON round trip (as from a file)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(dataset))
        coco.createIndex()
    return coco


def masked_target(seed: int, height: int = 24, width: int = 32) -> dict:
    """A target with rectangle masks whose boxes are the masks' tight boxes."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    masks = torch.zeros(n, height, width, dtype=torch.uint8)
    boxes = []
    for j in range(n):
        x1, y1 = int(rng.integers(0, width - 4)), int(rng.integers(0, height - 4))
        x2, y2 = int(rng.integers(x1 + 1, width + 1)), int(rng.integers(y1 + 1, height + 1))
        masks[j, y1:y2, x1:x2] = 1
        masks[j, y1, x1] = 0 if (x2 - x1) * (y2 - y1) > 1 else 1  # not a plain rectangle
        boxes.append([x1, y1, x2, y2])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(rng.integers(1, 4, n)), "masks": masks}


class ListDataset:
    """The smallest dataset export_coco accepts: indexable, sized, with class names."""

    classes = CLASSES

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


# ---------------------------------------------------------------- by hand


def test_to_coco_gt_by_hand():
    # xyxy (10, 20, 50, 80) -> xywh [10, 20, 40, 60], box area 40 * 60 = 2400.
    # The second image gives an explicit area (e.g. the visible pixels), which wins.
    targets = [
        {"boxes": torch.tensor([[10.0, 20, 50, 80]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[0.0, 0, 4, 2], [1, 1, 2, 2]]), "labels": torch.tensor([1, 3]), "area": torch.tensor([5.0, 1.0]), "iscrowd": torch.tensor([0, 1])},
    ]
    gt = to_coco_gt(targets, [(100, 120), (10, 10)], CLASSES)
    assert gt["images"] == [{"id": 1, "height": 100, "width": 120}, {"id": 2, "height": 10, "width": 10}]
    assert gt["categories"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]
    assert gt["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [10.0, 20.0, 40.0, 60.0], "area": 2400.0, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0.0, 0.0, 4.0, 2.0], "area": 5.0, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [1.0, 1.0, 1.0, 1.0], "area": 1.0, "iscrowd": 1},
    ]


def test_to_coco_gt_area_from_masks_image_ids_and_category_dicts():
    # Without an area field, the area is the mask's pixel count: a 3 x 2 box with one
    # pixel cleared -> 5, not the box's 6.
    mask = torch.zeros(1, 5, 5, dtype=torch.uint8)
    mask[0, 1:3, 1:4] = 1
    mask[0, 1, 1] = 0
    target = {"boxes": torch.tensor([[1.0, 1, 4, 3]]), "labels": torch.tensor([7]), "masks": mask, "image_id": 42}
    categories = [{"id": 7, "name": "blob", "supercategory": "thing"}]
    gt = to_coco_gt([target], [(5, 5)], categories, include_masks=False)
    assert gt["images"][0]["id"] == 42 and gt["annotations"][0]["image_id"] == 42
    assert gt["annotations"][0]["area"] == 5.0 and "segmentation" not in gt["annotations"][0]
    assert gt["categories"] == categories


def test_to_coco_results_by_hand():
    preds = [{"boxes": torch.tensor([[10.0, 20, 50, 80]]), "scores": torch.tensor([0.25]), "labels": torch.tensor([3])}, {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert to_coco_results(preds, [5, 6]) == [{"image_id": 5, "category_id": 3, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.25}]


# ---------------------------------------------------------------- round trips through pycocotools


def test_ground_truth_round_trip_through_pycocotools():
    targets = [masked_target(seed) for seed in range(4)]
    coco = load_coco(to_coco_gt(targets, [(24, 32)] * 4, CLASSES))
    for image_id, target in enumerate(targets, start=1):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(target["boxes"])
        for ann, box, label, mask in zip(anns, target["boxes"].tolist(), target["labels"].tolist(), target["masks"]):
            assert np.array_equal(coco.annToMask(ann), mask.numpy())
            x, y, w, h = ann["bbox"]
            assert [x, y, x + w, y + h] == box and ann["category_id"] == label
            assert ann["area"] == float(mask.sum())


def test_results_round_trip_through_pycocotools_load_res():
    targets = [masked_target(seed) for seed in range(3)]
    coco = load_coco(to_coco_gt(targets, [(24, 32)] * 3, CLASSES))
    preds = [dict(t, scores=torch.linspace(0.9, 0.1, len(t["boxes"]))) for t in targets]
    with contextlib.redirect_stdout(io.StringIO()):
        results = coco.loadRes(json.loads(json.dumps(to_coco_results(preds, [1, 2, 3], include_masks=True))))
    for image_id, pred in enumerate(preds, start=1):
        anns = results.loadAnns(results.getAnnIds(imgIds=[image_id]))
        for ann, mask, score in zip(anns, pred["masks"], pred["scores"].tolist()):
            assert np.array_equal(results.annToMask(ann), mask.numpy())
            assert ann["score"] == score


def test_export_coco_with_a_list_dataset(tmp_path):
    items = [(torch.zeros(3, 24, 32), masked_target(seed)) for seed in range(3)]
    path = export_coco(ListDataset(items), tmp_path / "sub" / "gt.json")
    assert path == tmp_path / "sub" / "gt.json"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2, 3]
    assert coco.imgs[1]["height"] == 24 and coco.imgs[1]["width"] == 32
    assert len(coco.anns) == sum(len(t["boxes"]) for _, t in items)
    assert json.loads(path.read_text()) == to_coco_gt([t for _, t in items], [(24, 32)] * 3, CLASSES)


def test_export_coco_with_the_shapes_dataset(tmp_path):
    shapes = pytest.importorskip("cs_dense.data.shapes")
    dataset = shapes.ShapesDataset("val", length=4)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(export_coco(dataset, tmp_path / "shapes.json")))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(dataset.classes[1:])
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert coco.imgs[target["image_id"]]["height"] == image.shape[1]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[target["image_id"]]))
        for ann, box, mask, area in zip(anns, target["boxes"].tolist(), target["masks"], target["area"].tolist()):
            assert np.array_equal(coco.annToMask(ann), mask.numpy())
            x, y, w, h = ann["bbox"]
            assert [x, y, x + w, y + h] == pytest.approx(box) and ann["area"] == area


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_exported_files_give_pycocotools_our_numbers(iou_type):
    # The workflow the course shows: export, evaluate with pycocotools, compare with ours.
    targets = [masked_target(seed) for seed in range(5)]
    g = torch.Generator().manual_seed(0)
    preds = []
    for t in targets:
        shift = torch.randint(-2, 3, (len(t["boxes"]), 2), generator=g)
        masks = torch.stack([m.roll((int(dy), int(dx)), dims=(0, 1)) for m, (dx, dy) in zip(t["masks"], shift.tolist())])
        preds.append({"boxes": (t["boxes"] + shift.repeat(1, 2)).clamp(min=0), "scores": torch.rand(len(masks), generator=g), "labels": t["labels"], "masks": masks})
    coco = load_coco(to_coco_gt(targets, [(24, 32)] * 5, CLASSES))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(to_coco_results(preds, [1, 2, 3, 4, 5], include_masks=True)), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = mean_average_precision(preds, targets, iou_type=iou_type)
    keys = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]
    assert [ours[k] for k in keys] == pytest.approx(evaluator.stats.tolist(), abs=1e-6)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: to_coco_gt([], [(1, 1)], CLASSES), "targets and image_sizes must have one entry per image"),
        (lambda: to_coco_gt([{"boxes": torch.zeros(1, 4)}], [(1, 1)], CLASSES), r"targets\[0\] is missing key 'labels'"),
        (lambda: to_coco_gt([{"boxes": torch.zeros(1, 4), "labels": torch.tensor([9])}], [(1, 1)], CLASSES), r"targets\[0\]\['labels'\] has labels \[9\] without a category"),
        (lambda: to_coco_gt([masked_target(0)], [(10, 10)], CLASSES), r"targets\[0\]\['masks'\] must have shape \[N, 10, 10\]"),
        (lambda: to_coco_gt([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "image_id": 3}] * 2, [(1, 1)] * 2, CLASSES), r"targets\[1\]\['image_id'\] repeats image id 3"),
        (lambda: to_coco_gt([], [], [1, 2]), "categories must be a sequence of names or of dicts"),
        (lambda: to_coco_results([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}], [1]), r"preds\[0\] is missing key 'scores'"),
        (lambda: to_coco_results([{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1)}], [1], include_masks=True), r"preds\[0\] is missing key 'masks'"),
        (lambda: to_coco_results([], [1]), "preds and image_ids must have one entry per image"),
        (lambda: export_coco([(torch.zeros(3, 2, 2), {})], "unused.json"), "dataset must have a `classes` attribute"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
