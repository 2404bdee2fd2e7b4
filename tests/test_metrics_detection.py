"""cs_dense.metrics (matching, AP, COCO mAP) against pycocotools' COCOeval, slow loop references and hand cases."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from reference_loops import loop_iou, random_boxes

from cs_dense.metrics import (
    average_precision,
    match_detections,
    mean_average_precision,
    precision_envelope,
    precision_recall_curve,
)

SUMMARY_KEYS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]
COCO_TOLERANCE = 1e-6  # the brief's bar; in practice the numbers agree to round-off (~1e-15)


# ---------------------------------------------------------------- slow references


def loop_match(pred_boxes, pred_scores, gt_boxes, iou_threshold, gt_ignore):
    """Greedy matching one prediction at a time: regular ground truths first, then ignored ones."""
    p, g, s = pred_boxes.tolist(), gt_boxes.tolist(), pred_scores.tolist()
    ignore = gt_ignore.tolist()
    taken: set[int] = set()
    is_tp, is_ignored = [False] * len(p), [False] * len(p)
    for i in sorted(range(len(p)), key=lambda i: -s[i]):  # Python's sort is stable
        best = None
        for want_ignored in (False, True):
            best_iou = iou_threshold
            for j in range(len(g)):
                if j in taken or ignore[j] != want_ignored:
                    continue
                iou = loop_iou(p[i], g[j])
                if iou >= best_iou:  # >= keeps the later of equal IoUs, as pycocotools
                    best, best_iou = j, iou
            if best is not None:
                break
        if best is not None:
            taken.add(best)
            is_tp[i], is_ignored[i] = not ignore[best], ignore[best]
    return is_tp, is_ignored


def loop_voc_ap(is_tp_sorted: list[bool], num_gt: int) -> float:
    """VOC 2010+ AP written the devkit's way: sentinels, envelope, sum over recall changes."""
    tp = np.cumsum(is_tp_sorted)
    fp = np.cumsum([not t for t in is_tp_sorted])
    mrec = np.concatenate([[0.0], tp / num_gt, [1.0]])
    mpre = np.concatenate([[0.0], tp / (tp + fp), [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def loop_voc07_ap(is_tp_sorted: list[bool], num_gt: int) -> float:
    """11-point AP: mean over r = k/10 of the best precision at recall >= r."""
    tp = np.cumsum(is_tp_sorted)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / num_gt
    return sum(max([p for p, r in zip(precision, recall) if r >= k / 10], default=0.0) for k in range(11)) / 11


# ---------------------------------------------------------------- hand cases: AP


# Ranked list TP, TP, FP, TP, FP with 3 ground truths:
#   precision 1, 1, 2/3, 3/4, 3/5     recall 1/3, 2/3, 2/3, 1, 1
#   envelope (best precision from here on) 1, 1, 3/4, 3/4, 3/5
# voc (area under the envelope): 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4 = 11/12
# voc07: r = 0 .. 0.6 (7 points) reach precision 1; r = 0.7 .. 1.0 (4 points) only
#        ranks 4-5 reach them, best 3/4  ->  (7 + 4 * 3/4) / 11 = 10/11
# coco101: r = 0.00 .. 0.33 (34 points) -> rank 1 (recall 1/3), envelope 1
#          r = 0.34 .. 0.66 (33 points) -> rank 2 (recall 2/3), envelope 1
#          r = 0.67 .. 1.00 (34 points) -> rank 4 (recall 1),   envelope 3/4
#          -> (34 + 33 + 34 * 3/4) / 101 = 92.5 / 101
HAND_SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
HAND_TP = torch.tensor([True, True, False, True, False])


def test_precision_recall_curve_by_hand():
    precision, recall = precision_recall_curve(HAND_SCORES, HAND_TP, num_gt=3)
    torch.testing.assert_close(precision, torch.tensor([1, 1, 2 / 3, 3 / 4, 3 / 5], dtype=torch.float64))
    torch.testing.assert_close(recall, torch.tensor([1 / 3, 2 / 3, 2 / 3, 1, 1], dtype=torch.float64))
    # the order of the inputs does not matter: the curve follows decreasing score
    shuffled = torch.tensor([3, 0, 4, 2, 1])
    torch.testing.assert_close(precision_recall_curve(HAND_SCORES[shuffled], HAND_TP[shuffled], 3)[0], precision)


@pytest.mark.parametrize(("method", "expected"), [("voc", 11 / 12), ("voc07", 10 / 11), ("coco101", 92.5 / 101)])
def test_average_precision_by_hand(method, expected):
    assert average_precision(HAND_SCORES, HAND_TP, num_gt=3, method=method) == pytest.approx(expected, abs=1e-12)


def test_average_precision_edge_cases():
    assert math.isnan(average_precision(torch.tensor([0.5]), torch.tensor([False]), num_gt=0))
    assert average_precision(torch.zeros(0), torch.zeros(0, dtype=torch.bool), num_gt=4) == 0.0
    assert average_precision(torch.tensor([0.9, 0.8]), torch.tensor([True, True]), num_gt=2, method="voc") == 1.0
    # a perfect ranking that finds only half the objects: COCO gives 0 beyond recall 0.5
    assert average_precision(torch.tensor([0.9]), torch.tensor([True]), num_gt=2) == pytest.approx(51 / 101)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_slow_references(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randperm(40, generator=g).double()
    is_tp = torch.rand(40, generator=g) < 0.4
    num_gt = int(is_tp.sum()) + 3
    ranked = is_tp[scores.argsort(descending=True)].tolist()
    assert average_precision(scores, is_tp, num_gt, "voc") == pytest.approx(loop_voc_ap(ranked, num_gt), abs=1e-12)
    assert average_precision(scores, is_tp, num_gt, "voc07") == pytest.approx(loop_voc07_ap(ranked, num_gt), abs=1e-12)


def test_average_precision_bad_input():
    with pytest.raises(ValueError, match=r"method must be one of \('voc07', 'voc', 'coco101'\)"):
        average_precision(HAND_SCORES, HAND_TP, 3, method="voc12")
    with pytest.raises(ValueError, match="num_gt must be"):
        average_precision(HAND_SCORES, HAND_TP, num_gt=2)  # 3 true positives
    with pytest.raises(ValueError, match="is_tp must be a tensor of shape"):
        average_precision(HAND_SCORES, HAND_TP[:3], 3)


# ---------------------------------------------------------------- match_detections


def test_match_detections_by_hand():
    # gt A = (0,0)-(10,10), gt B = (20,0)-(30,10).
    # p0 (score .6) = A exactly; p1 (score .9) = (0,0)-(10,5): IoU 0.5 with A, at the
    # threshold -> matches first (higher score); p0 then finds A taken -> FP.
    # p2 (score .7) = (20,0)-(30,10) = B -> TP. p3 overlaps nothing -> FP.
    gts = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    preds = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 0, 30, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.6, 0.9, 0.7, 0.8])
    assert match_detections(preds, scores, gts).tolist() == [False, True, True, False]
    # just above the threshold, p1 no longer matches and p0 takes A
    assert match_detections(preds, scores, gts, iou_threshold=0.5 + 1e-9).tolist() == [True, False, True, False]


def test_match_detections_ignored_ground_truth():
    # A is ignored (e.g. VOC "difficult"): p0 lands on it -> not a TP, reported as ignored.
    # p1 overlaps both A (IoU 1) and regular B (IoU 0.5): regular ground truths come first.
    gts = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])
    preds = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    is_tp, is_ignored = match_detections(preds, torch.tensor([0.5, 0.9]), gts, gt_ignore=torch.tensor([True, False]), return_ignored=True)
    assert is_tp.tolist() == [False, True]
    assert is_ignored.tolist() == [True, False]


@pytest.mark.parametrize("seed", range(6))
def test_match_detections_matches_slow_loop_reference(device, seed):
    g = torch.Generator().manual_seed(seed)
    gt_boxes = random_boxes(int(torch.randint(0, 8, (1,), generator=g)), g, torch.float64, corners=(0, 50), sides=(2, 32))
    jittered = gt_boxes.repeat(2, 1) + torch.randn(2 * len(gt_boxes), 4, generator=g, dtype=torch.float64) * 4
    jittered = torch.cat([torch.minimum(jittered[:, :2], jittered[:, 2:]), torch.maximum(jittered[:, :2], jittered[:, 2:])], dim=1)
    pred_boxes = torch.cat([jittered, random_boxes(5, g, torch.float64, corners=(0, 50), sides=(2, 32))])
    scores = (torch.rand(len(pred_boxes), generator=g) * 4).round() / 4  # many ties: stability matters
    ignore = torch.rand(len(gt_boxes), generator=g) < 0.3
    is_tp, is_ignored = match_detections(pred_boxes.to(device), scores.to(device), gt_boxes.to(device), 0.4, ignore.to(device), return_ignored=True)
    expected_tp, expected_ignored = loop_match(pred_boxes, scores, gt_boxes, 0.4, ignore)
    assert is_tp.device.type == device
    assert is_tp.tolist() == expected_tp and is_ignored.tolist() == expected_ignored


def test_match_detections_empty():
    assert match_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(3, 4)).shape == (0,)
    assert match_detections(torch.ones(2, 4), torch.ones(2), torch.zeros(0, 4)).tolist() == [False, False]


def test_match_detections_bad_input():
    with pytest.raises(ValueError, match="pred_scores must be a tensor of shape \\[2\\]"):
        match_detections(torch.zeros(2, 4), torch.zeros(3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="gt_boxes must have shape"):
        match_detections(torch.zeros(2, 4), torch.zeros(2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="gt_ignore must be a tensor of shape \\[1\\]"):
        match_detections(torch.zeros(2, 4), torch.zeros(2), torch.zeros(1, 4), gt_ignore=torch.zeros(2, dtype=torch.bool))


# ---------------------------------------------------------------- COCO scenarios


def make_scenario(seed: int, iou_type: str = "bbox"):
    """A seeded little dataset with COCO's awkward corners, in the course convention.

    Images with 0..8 objects of three classes spanning small / medium / large; jittered
    duplicate detections, some with the wrong class; random false positives; depending
    on the seed: crowd regions, explicit ``area`` fields, heavily tied scores, integer
    coordinates (so equal IoUs happen), an image with more than 100 detections of one
    class, a class only predicted (4), a class never predicted (5).
    """
    rng = np.random.default_rng(seed)
    height, width = (96, 128) if iou_type == "segm" else (320, 400)
    crowd, explicit_area, tied, crowded = seed % 4 == 1, seed % 3 == 2, seed % 5 == 3, seed % 6 == 4
    integer = seed % 3 == 0
    gt_classes = [1, 2, 3] + ([5] if seed % 8 == 5 else [])
    pred_classes = [1, 2, 3] + ([4] if seed % 7 == 6 else [])
    preds, targets = [], []
    for i in range(int(rng.integers(1, 6))):
        m = int(rng.integers(0, 9)) if i else int(rng.integers(1, 9))
        gt = _random_objects(rng, m, height, width)
        gt = gt.round() if integer else gt
        target = {"boxes": gt, "labels": torch.tensor(rng.choice(gt_classes, m), dtype=torch.int64)}
        if crowd:
            target["iscrowd"] = torch.tensor(rng.random(m) < 0.25, dtype=torch.int64)
        if explicit_area:
            target["area"] = _areas(gt) * torch.tensor(rng.uniform(0.4, 1.0, m), dtype=torch.float32)
        boxes, labels = _detections(rng, gt, target["labels"], pred_classes, height, width, int(rng.integers(0, 5)))
        scores = torch.tensor(rng.random(len(boxes)), dtype=torch.float32)
        if crowded and i == 0:  # 120 confident junk detections of class 1 push real ones past rank 100
            boxes = torch.cat([boxes, _random_objects(rng, 120, height, width)])
            labels = torch.cat([labels, torch.ones(120, dtype=torch.int64)])
            scores = torch.cat([scores / 2, torch.tensor(0.5 + rng.random(120) / 2, dtype=torch.float32)])
        boxes = boxes.round() if integer else boxes
        if tied:
            scores = (scores * 4).round() / 4
        pred = {"boxes": boxes, "scores": scores, "labels": labels}
        if iou_type == "segm":
            target["masks"] = _box_masks(rng, gt, height, width)
            pred["masks"] = _box_masks(rng, boxes, height, width)
        preds.append(pred)
        targets.append(target)
    return preds, targets, (height, width)


def _random_objects(rng: np.random.Generator, n: int, height: int, width: int) -> torch.Tensor:
    """Boxes whose sides are log-uniform in [4, 250] px (so all three COCO sizes occur)."""
    size = np.exp(rng.uniform(np.log(4), np.log(250), (n, 2)))
    size = np.minimum(size, [width - 1, height - 1])
    corner = rng.uniform(0, 1, (n, 2)) * ([width, height] - size)
    return torch.tensor(np.concatenate([corner, corner + size], axis=1), dtype=torch.float32)


def _detections(rng, gt, gt_labels, classes, height, width, n_random):
    """0-3 jittered copies of each object (15% with a wrong class) plus random boxes."""
    boxes, labels = [], []
    for box, label in zip(gt.tolist(), gt_labels.tolist()):
        for _ in range(int(rng.integers(0, 4))):
            w, h = box[2] - box[0], box[3] - box[1]
            centre = np.array([box[0] + w / 2, box[1] + h / 2]) + rng.normal(0, 0.12, 2) * [w, h]
            half = np.array([w, h]) * np.exp(rng.normal(0, 0.15, 2)) / 2
            boxes.append(np.clip(np.r_[centre - half, centre + half], 0, [width, height, width, height]))
            labels.append(label if rng.random() > 0.15 else int(rng.choice(classes)))
    extra = _random_objects(rng, n_random, height, width).numpy()
    boxes = np.concatenate([np.array(boxes).reshape(-1, 4), extra])
    labels = labels + list(rng.choice(classes, n_random))
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def _areas(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _box_masks(rng, boxes, height, width) -> torch.Tensor:
    """An ellipse or a rectangle filling (roughly) each box, as uint8 [N, H, W]."""
    ys, xs = np.mgrid[:height, :width] + 0.5
    masks = []
    for x1, y1, x2, y2 in boxes.tolist():
        if rng.random() < 0.5:
            inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        else:
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max((x2 - x1) / 2, 0.5), max((y2 - y1) / 2, 0.5)
            inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        masks.append(inside)
    return torch.tensor(np.array(masks, dtype=np.uint8).reshape(-1, height, width))


def coco_dicts(preds, targets, size, iou_type):
    """Ground truth and results in COCO's JSON layout, built here independently of cs_dense."""
    height, width = size
    labels = sorted({int(c) for item in preds + targets for c in item["labels"]})
    annotations = []
    for i, target in enumerate(targets):
        for j, (box, label) in enumerate(zip(target["boxes"].double().tolist(), target["labels"].tolist())):
            x1, y1, x2, y2 = box
            if "area" in target:
                area = float(target["area"][j])
            elif iou_type == "segm":
                area = float(target["masks"][j].sum())
            else:
                area = (x2 - x1) * (y2 - y1)
            ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": int(target.get("iscrowd", torch.zeros(j + 1))[j])}
            if iou_type == "segm":
                ann["segmentation"] = _rle(target["masks"][j])
            annotations.append(ann)
    gt = {"images": [{"id": i + 1, "height": height, "width": width} for i in range(len(targets))], "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in labels]}
    results = []
    for i, pred in enumerate(preds):
        for j, (box, score, label) in enumerate(zip(pred["boxes"].double().tolist(), pred["scores"].tolist(), pred["labels"].tolist())):
            x1, y1, x2, y2 = box
            result = {"image_id": i + 1, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            if iou_type == "segm":
                result["segmentation"] = _rle(pred["masks"][j])
            results.append(result)
    return gt, results


def _rle(mask: torch.Tensor) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def run_cocoeval(gt_dict, results, iou_type, iou_thresholds=None, max_dets=None):
    """pycocotools' full pipeline, quietly."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.array(iou_thresholds)
        if max_dets is not None:
            evaluator.params.maxDets = list(max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def expected_from_cocoeval(evaluator) -> dict:
    """Our result keys, read from COCOeval's stats and its precision / recall arrays."""
    expected = dict(zip(SUMMARY_KEYS, evaluator.stats.tolist()))
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]  # [T, R, K, A, M], [T, K, A, M]

    def mean(x):
        return float(np.mean(x[x > -1])) if (x > -1).any() else -1.0

    expected["map_per_class"] = {c: mean(precision[:, :, k, 0, -1]) for k, c in enumerate(evaluator.params.catIds)}
    expected["mar_100_per_class"] = {c: mean(recall[:, k, 0, -1]) for k, c in enumerate(evaluator.params.catIds)}
    return expected


def assert_same_metrics(ours: dict, expected: dict, keys=SUMMARY_KEYS):
    for key in keys:
        assert ours[key] == pytest.approx(expected[key], abs=COCO_TOLERANCE), key
    for key in ("map_per_class", "mar_100_per_class"):
        assert ours[key].keys() == expected[key].keys(), key
        for label, value in expected[key].items():
            assert ours[key][label] == pytest.approx(value, abs=COCO_TOLERANCE), (key, label)


@pytest.mark.parametrize("seed", range(60))
def test_mean_average_precision_matches_pycocotools_bbox(seed):
    preds, targets, size = make_scenario(seed)
    ours = mean_average_precision(preds, targets)
    assert_same_metrics(ours, expected_from_cocoeval(run_cocoeval(*coco_dicts(preds, targets, size, "bbox"), "bbox")))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5, 6])
def test_mean_average_precision_matches_pycocotools_segm(seed):
    preds, targets, size = make_scenario(seed, "segm")
    ours = mean_average_precision(preds, targets, iou_type="segm")
    assert_same_metrics(ours, expected_from_cocoeval(run_cocoeval(*coco_dicts(preds, targets, size, "segm"), "segm")))


def test_mean_average_precision_custom_thresholds_and_caps_match_pycocotools():
    # A threshold of 1.0 exercises pycocotools' cap at 1 - 1e-10: copies of the ground
    # truth stretched by 1e-10 px have IoU just below 1 and still match.
    preds, targets, size = make_scenario(11)
    stretched = targets[0]["boxes"].double() + torch.tensor([0, 0, 1e-10, 0], dtype=torch.float64)
    preds[0]["boxes"] = torch.cat([stretched, preds[0]["boxes"][len(stretched) :].double()])
    thresholds, caps = [0.3, 0.5, 0.9, 1.0], (1, 5, 20)
    ours = mean_average_precision(preds, targets, iou_thresholds=thresholds, max_dets=caps)
    evaluator = run_cocoeval(*coco_dicts(preds, targets, size, "bbox"), "bbox", thresholds, caps)
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
    mean = lambda x: float(np.mean(x[x > -1]))  # noqa: E731
    assert ours["map"] == pytest.approx(mean(precision[:, :, :, 0, -1]), abs=COCO_TOLERANCE)
    assert ours["map_50"] == pytest.approx(mean(precision[1, :, :, 0, -1]), abs=COCO_TOLERANCE)
    assert ours["map_75"] == -1.0  # 0.75 is not among the thresholds
    for m, cap in enumerate(caps):
        assert ours[f"mar_{cap}"] == pytest.approx(mean(recall[:, :, 0, m]), abs=COCO_TOLERANCE)
    assert "mar_20_per_class" in ours


def test_mean_average_precision_by_hand():
    # One image, two objects of class 1: A found exactly (score .9), B missed, one false
    # positive between them (score .8). Ranked: TP, FP -> precision 1, 1/2; recall 1/2, 1/2.
    # At every threshold: 101-point AP = 51 points at precision 1 (r <= 0.5) / 101; recall 1/2.
    target = {"boxes": torch.tensor([[0.0, 0, 100, 100], [200, 200, 300, 300]]), "labels": torch.tensor([1, 1])}
    pred = {"boxes": torch.tensor([[0.0, 0, 100, 100], [400, 0, 450, 50]]), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}
    result = mean_average_precision([pred], [target])
    assert result["map"] == pytest.approx(51 / 101) and result["mar_100"] == pytest.approx(0.5)
    assert result["map_large"] == pytest.approx(51 / 101)  # both objects are 100 x 100 > 96^2
    assert result["map_small"] == result["map_medium"] == -1.0  # no ground truth of those sizes
    assert result["mar_1"] == pytest.approx(0.5) and result["map_per_class"] == {1: pytest.approx(51 / 101)}


def test_equal_ious_go_to_the_later_ground_truth_as_in_pycocotools():
    # G1 = (0,0)-(10,10), G2 = (4,0)-(14,10). D1 = (2,0)-(12,10) overlaps each by 80 of 120
    # (IoU 2/3, a tie); D2 = G1 overlaps G2 by 60 of 140 (IoU 0.43). pycocotools gives D1
    # the later G2, so D2 can still take G1: two true positives, AP@0.5 = 1. Taking the
    # first would leave D2 unmatched.
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10]]), "labels": torch.tensor([1, 1])}
    pred = {"boxes": torch.tensor([[2.0, 0, 12, 10], [0, 0, 10, 10]]), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}
    assert match_detections(pred["boxes"], pred["scores"], target["boxes"]).tolist() == [True, True]
    ours = mean_average_precision([pred], [target])
    assert ours["map_50"] == 1.0
    assert_same_metrics(ours, expected_from_cocoeval(run_cocoeval(*coco_dicts([pred], [target], (20, 20), "bbox"), "bbox")))


def test_mean_average_precision_crowd_absorbs_detections():
    # A crowd region covering the whole image: detections inside it are neither TP nor FP,
    # however many there are, so the only real object decides the score.
    target = {"boxes": torch.tensor([[0.0, 0, 200, 200], [10, 10, 50, 50]]), "labels": torch.tensor([1, 1]), "iscrowd": torch.tensor([1, 0])}
    boxes = torch.tensor([[10.0, 10, 50, 50], [100, 100, 150, 150], [120, 20, 180, 60], [60, 60, 90, 190]])
    pred = {"boxes": boxes, "scores": torch.tensor([0.5, 0.9, 0.8, 0.7]), "labels": torch.ones(4, dtype=torch.int64)}
    assert mean_average_precision([pred], [target])["map"] == pytest.approx(1.0)


def test_mean_average_precision_empty_inputs():
    empty_pred = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    empty_target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    result = mean_average_precision([empty_pred], [empty_target])
    assert all(result[k] == -1.0 for k in SUMMARY_KEYS) and result["map_per_class"] == {}
    assert mean_average_precision([], [], class_metrics=False)["map"] == -1.0
    # ground truth but no detections: AP and AR are 0, not undefined
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])}
    assert mean_average_precision([empty_pred], [target])["map_per_class"] == {2: 0.0}


@pytest.mark.parametrize(
    ("preds", "targets", "kwargs", "match"),
    [
        ([{}], [], {}, "preds and targets must have one entry per image"),
        ([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}], [{"boxes": torch.zeros(0, 4), "labels": torch.ones(0)}], {}, r"preds\[0\] is missing key 'scores'"),
        ([{"boxes": torch.zeros(2, 4), "scores": torch.ones(1), "labels": torch.ones(2)}], [{"boxes": torch.zeros(0, 4), "labels": torch.ones(0)}], {}, r"preds\[0\]\['scores'\] must be a tensor of shape \[2\]"),
        ([{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1)}], [{"boxes": torch.zeros(1, 5), "labels": torch.ones(1)}], {}, r"targets\[0\]\['boxes'\] must have shape"),
        ([{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1)}], [{"boxes": torch.zeros(1, 4), "labels": torch.ones(1), "iscrowd": torch.ones(3)}], {}, r"targets\[0\]\['iscrowd'\]"),
        ([{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1)}], [{"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}], {"iou_type": "segm"}, r"preds\[0\] is missing key 'masks'"),
        ([{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1), "masks": torch.rand(1, 4, 4)}], [{"boxes": torch.zeros(1, 4), "labels": torch.ones(1), "masks": torch.ones(1, 4, 4)}], {"iou_type": "segm"}, r"preds\[0\]\['masks'\] must be bool or integer"),
        ([], [], {"iou_type": "keypoints"}, "iou_type must be one of"),
        ([], [], {"area_ranges": {"small": (0, 1)}}, "area_ranges must contain 'all'"),
        ([], [], {"max_dets": (0, 10)}, "max_dets must be positive integers"),
    ],
)
def test_mean_average_precision_bad_input(preds, targets, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mean_average_precision(preds, targets, **kwargs)


def test_mean_average_precision_does_not_modify_inputs():
    preds, targets, _ = make_scenario(1)
    before = [{k: v.clone() for k, v in item.items()} for item in preds + targets]
    mean_average_precision(preds, targets)
    for item, copy in zip(preds + targets, before):
        assert all(torch.equal(item[k], copy[k]) for k in copy)


def test_precision_envelope_is_the_best_precision_at_or_after_each_rank():
    precision = [1.0, 0.5, 2 / 3, 0.5, 0.6, 0.5]
    expected = [max(precision[i:]) for i in range(len(precision))]  # the definition, by hand
    assert expected == [1.0, 2 / 3, 2 / 3, 0.6, 0.6, 0.5]
    assert precision_envelope(np.array(precision)).tolist() == expected
    torch.testing.assert_close(precision_envelope(torch.tensor(precision, dtype=torch.float64)),
                               torch.tensor(expected, dtype=torch.float64))
    rows = np.array([precision, precision[::-1]])
    assert precision_envelope(rows)[1].tolist() == [max(precision[::-1][i:]) for i in range(6)]
