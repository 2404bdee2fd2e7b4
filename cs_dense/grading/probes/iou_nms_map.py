"""Cross-check probes of notebook 03, IoU, NMS and mAP."""

from __future__ import annotations

import torch

from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.metrics import average_precision, match_detections, mean_average_precision, precision_recall_curve
from cs_dense.ops import batched_nms, box_area, box_iou, nms

_METHODS = ("voc07", "voc", "coco101")
#: Thresholds that are exact binary fractions: with integer corners no IoU rounds onto one.
_NMS_THRESHOLDS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.0, 1.0)
_MATCH_THRESHOLDS = tuple(k / 20 for k in range(6, 20))  # 0.30, 0.35, ..., 0.95
_COCO_THRESHOLDS = tuple(k / 20 for k in range(10, 20))  # 0.50, 0.55, ..., 0.95
#: Object counts coprime to 10: a recall k / n never lands on a sampled recall point but 0 and 1.
_COUNTS = (3, 7, 9, 11, 13, 17, 19, 21, 23, 27, 29, 31, 33, 37)
_MAP_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")


def _pick(gen: torch.Generator, values: tuple):
    return values[randint(gen, 0, len(values))]


def _distinct_scores(gen: torch.Generator, n: int) -> torch.Tensor:
    return (torch.randperm(n, generator=gen).float() + 1) / (n + 1)


def _random_boxes(gen: torch.Generator, n: int, scale: float) -> torch.Tensor:
    """Centres in [0, scale], sides in [0.01, 0.41] * scale, float64."""
    centre = torch.rand(n, 2, generator=gen, dtype=torch.float64) * scale
    half = (0.005 + 0.2 * torch.rand(n, 2, generator=gen, dtype=torch.float64)) * scale
    return torch.cat([centre - half, centre + half], dim=1)


def _box_iou(gen: torch.Generator) -> list[Case]:
    cases = []
    for dtype in (torch.float32, torch.float64):
        for scale in (100.0, 5000.0):
            n, m = randint(gen, 1, 30), randint(gen, 1, 30)
            boxes1, boxes2 = _random_boxes(gen, n, scale), _random_boxes(gen, m, scale)
            boxes2[: min(n, m) // 2] = boxes1[: min(n, m) // 2]  # identical pairs
            centre, quarter = (boxes1[0, :2] + boxes1[0, 2:]) / 2, (boxes1[0, 2:] - boxes1[0, :2]) / 4
            boxes2[-1] = torch.cat([centre - quarter, centre + quarter])  # a box inside another
            boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
            cases.append(Case(f"random boxes {n} x {m}, scale {scale:g}, {dtype}", (boxes1, boxes2),
                              expected=box_iou(boxes1.double(), boxes2.double()).to(dtype)))
    some = _random_boxes(gen, 3, 100.0).float()
    empty = torch.zeros(0, 4)
    cases.append(Case("no boxes on the left: shape [0, 3]", (empty, some), expected=box_iou(empty, some)))
    cases.append(Case("no boxes on the right: shape [3, 0]", (some, empty), expected=box_iou(some, empty)))
    return cases


def _clustered_boxes(gen: torch.Generator, n: int) -> torch.Tensor:
    """n boxes with integer corners, in clusters, some exact duplicates (int64)."""
    centres = torch.randint(20, 180, (max(1, n // 5), 2), generator=gen)
    centre = centres[torch.randint(0, len(centres), (n,), generator=gen)] + torch.randint(-6, 7, (n, 2), generator=gen)
    size = torch.randint(8, 41, (n, 2), generator=gen)
    boxes = torch.cat([centre - size // 2, centre - size // 2 + size], dim=1)
    copies = torch.randint(0, n, (n // 10,), generator=gen)
    boxes[torch.randint(0, n, (n // 10,), generator=gen)] = boxes[copies]
    return boxes


def _half_overlaps(gen: torch.Generator, pairs: int) -> torch.Tensor:
    """Pairs of integer boxes, far apart, each pair overlapping with IoU exactly 0.5."""
    boxes = []
    for k in range(pairs):
        x, y, h = 100 * k + randint(gen, 0, 20), randint(gen, 0, 50), randint(gen, 5, 30)
        boxes += [[x, y, x + 30, y + h], [x + 10, y, x + 40, y + h]]  # 20 h / 40 h
    return torch.tensor(boxes, dtype=torch.float32)


def _nms(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        n = randint(gen, 1, 120)
        dtype = (torch.float32, torch.float64)[trial % 2]
        threshold = _pick(gen, _NMS_THRESHOLDS)
        boxes, scores = _clustered_boxes(gen, n).to(dtype), _distinct_scores(gen, n).to(dtype)
        cases.append(Case(f"{n} clustered boxes, threshold {threshold}, {dtype}", (boxes, scores, threshold),
                          expected=nms(boxes, scores, threshold)))
    boxes = _half_overlaps(gen, 3)
    scores = _distinct_scores(gen, 6)
    cases.append(Case("pairs with IoU exactly 0.5 at threshold 0.5: nothing suppressed", (boxes, scores, 0.5),
                      expected=nms(boxes, scores, 0.5)))
    cases.append(Case("no boxes", (torch.zeros(0, 4), torch.zeros(0), 0.5), expected=torch.zeros(0, dtype=torch.int64)))
    return cases


def _batched_nms(gen: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(4):
        n, classes = randint(gen, 1, 120), randint(gen, 1, 5)
        threshold = _pick(gen, _NMS_THRESHOLDS[:5])
        boxes, scores = _clustered_boxes(gen, n).float(), _distinct_scores(gen, n)
        idxs = torch.randint(0, classes, (n,), generator=gen)
        cases.append(Case(f"{n} clustered boxes of {classes} classes, threshold {threshold}",
                          (boxes, scores, idxs, threshold), expected=batched_nms(boxes, scores, idxs, threshold)))
    twins = _half_overlaps(gen, 2)[[0, 0, 2, 2]]
    scores, idxs = _distinct_scores(gen, 4), torch.tensor([0, 1, 3, 3])
    cases.append(Case("identical boxes: of two classes both stay, of one class one", (twins, scores, idxs, 0.5),
                      expected=batched_nms(twins, scores, idxs, 0.5)))
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    cases.append(Case("no boxes", empty, expected=torch.zeros(0, dtype=torch.int64)))
    return cases


def _ambiguous(iou: torch.Tensor, thresholds: tuple[float, ...]) -> torch.Tensor:
    """[N] bool from an IoU table [N, M]: an IoU on a threshold (up to rounding), or two ground
    truths tied at an IoU that can match (the tie-break is not part of the exercise)."""
    near = torch.isclose(iou[..., None], torch.tensor(thresholds, dtype=torch.float64), rtol=0, atol=1e-12)
    usable = iou >= min(thresholds) - 1e-12
    tie = torch.isclose(iou[:, :, None], iou[:, None, :], rtol=0, atol=1e-12)
    tie &= usable[:, :, None] & usable[:, None, :] & ~torch.eye(iou.shape[1], dtype=torch.bool)
    return near.flatten(1).any(-1) | tie.flatten(1).any(-1)


def _integer_boxes(corners: torch.Tensor) -> torch.Tensor:
    """Corners in any order to xyxy boxes of positive size."""
    return torch.cat([corners[:, :2].minimum(corners[:, 2:]), corners[:, :2].maximum(corners[:, 2:]) + 1], dim=1)


def _match_detections(gen: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(5):
        m = randint(gen, 1, 9)
        corner = torch.randint(0, 200, (m, 2), generator=gen)
        gts = torch.cat([corner, corner + torch.randint(8, 60, (m, 2), generator=gen)], dim=1)
        near = gts[torch.randint(0, m, (3 * m,), generator=gen)] + torch.randint(-7, 8, (3 * m, 4), generator=gen)
        far_corner = torch.randint(0, 200, (3, 2), generator=gen)
        far = torch.cat([far_corner, far_corner + torch.randint(8, 60, (3, 2), generator=gen)], dim=1)
        preds = _integer_boxes(torch.cat([near, far]))
        preds = preds[~_ambiguous(box_iou(preds.double(), gts.double()), _MATCH_THRESHOLDS)].float()
        scores, threshold = _distinct_scores(gen, len(preds)), _pick(gen, _MATCH_THRESHOLDS)
        cases.append(Case(f"{len(preds)} predictions, {m} objects, threshold {threshold}",
                          (preds, scores, gts.float()), {"iou_threshold": threshold},
                          expected=match_detections(preds, scores, gts.float(), threshold)))
    pairs = _half_overlaps(gen, 2)
    preds, gts, scores = pairs[0::2], pairs[1::2], _distinct_scores(gen, 2)
    cases.append(Case("IoU exactly 0.5 at the default threshold 0.5 is a match", (preds, scores, gts),
                      expected=match_detections(preds, scores, gts)))
    cases.append(Case("no ground truth: every prediction is false", (preds, scores, torch.zeros(0, 4)),
                      expected=torch.zeros(2, dtype=torch.bool)))
    cases.append(Case("no predictions", (torch.zeros(0, 4), torch.zeros(0), gts),
                      expected=torch.zeros(0, dtype=torch.bool)))
    return cases


def _precision_recall_curve(gen: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(4):
        num_gt, n = _pick(gen, _COUNTS), randint(gen, 1, 60)
        hits = torch.rand(n, generator=gen) < torch.rand((), generator=gen)
        hits &= hits.cumsum(0) <= num_gt
        scores = _distinct_scores(gen, n)
        cases.append(Case(f"{n} detections, {num_gt} objects", (scores, hits, num_gt),
                          expected=precision_recall_curve(scores, hits, num_gt)))
    # ties: a stable sort keeps equal scores in their input order
    n = randint(gen, 6, 30)
    scores = torch.randint(0, 4, (n,), generator=gen).float() / 4
    hits = torch.rand(n, generator=gen) < 0.5
    cases.append(Case(f"{n} detections with only 4 distinct scores (stable order)", (scores, hits, int(hits.sum()) + 2),
                      expected=precision_recall_curve(scores, hits, int(hits.sum()) + 2)))
    nothing = (torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3)
    cases.append(Case("no detections: two empty float64 tensors", nothing, expected=precision_recall_curve(*nothing)))
    return cases


def _average_precision(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        num_gt, n, method = _pick(gen, _COUNTS), randint(gen, 1, 60), _METHODS[trial % 3]
        hits = torch.rand(n, generator=gen) < torch.rand((), generator=gen)
        hits &= hits.cumsum(0) <= num_gt  # never more true positives than objects
        scores = _distinct_scores(gen, n)
        cases.append(Case(f"{n} detections, {num_gt} objects, {method}", (scores, hits, num_gt), {"method": method},
                          expected=average_precision(scores, hits, num_gt, method)))
    for method in _METHODS:
        # ranked: a false positive, then true positives, so the precision rises and only the envelope is flat
        k = randint(gen, 2, 6)
        num_gt = _pick(gen, tuple(c for c in _COUNTS if c >= k))
        ranked = torch.tensor([False] + [True] * k)
        order = torch.randperm(k + 1, generator=gen)
        scores, hits = (1 - torch.arange(k + 1) / (k + 2))[order], ranked[order]
        cases.append(Case(f"a false positive ranked first, then {k} hits, {num_gt} objects, {method}",
                          (scores, hits, num_gt), {"method": method},
                          expected=average_precision(scores, hits, num_gt, method)))
    cases.append(Case("no detections: AP 0", (torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3),
                      {"method": "coco101"}, expected=0.0))
    scores, hits = torch.rand(2, generator=gen), torch.tensor([False, False])
    cases.append(Case("no objects: AP is undefined (nan)", (scores, hits, 0), {"method": _pick(gen, _METHODS)},
                      expected=float("nan")))
    return cases


def _random_image(gen: torch.Generator, n_objects: int, copies: int, false_alarms: int, canvas: int = 320):
    """Integer boxes of every size, jittered copies (some relabelled), false alarms."""
    side = torch.randint(6, 150, (n_objects, 2), generator=gen)
    corner = (torch.rand(n_objects, 2, generator=gen) * (canvas - side)).long()
    gt_boxes, gt_labels = torch.cat([corner, corner + side], dim=1), torch.randint(1, 4, (n_objects,), generator=gen)
    owner = torch.randint(0, max(n_objects, 1), (copies if n_objects else 0,), generator=gen)
    jitter = (torch.randn(len(owner), 4, generator=gen) * 0.12 * side[owner].repeat(1, 2)).round().long()
    labels = gt_labels[owner].clone()
    relabel = torch.rand(len(owner), generator=gen) < 0.15
    labels[relabel] = torch.randint(1, 4, (int(relabel.sum()),), generator=gen)
    alarm_corner = torch.randint(0, canvas - 120, (false_alarms, 2), generator=gen)
    alarms = torch.cat([alarm_corner, alarm_corner + torch.randint(4, 120, (false_alarms, 2), generator=gen)], dim=1)
    boxes = _integer_boxes(torch.cat([gt_boxes[owner] + jitter, alarms]))
    labels = torch.cat([labels, torch.randint(1, 4, (false_alarms,), generator=gen)])
    # leave out predictions whose outcome hangs on rounding or on the tie-break
    iou = box_iou(boxes.double(), gt_boxes.double()).masked_fill(labels[:, None] != gt_labels, 0.0)
    keep = ~_ambiguous(iou, _COCO_THRESHOLDS)
    return {"boxes": boxes[keep].float(), "labels": labels[keep]}, {"boxes": gt_boxes.float(), "labels": gt_labels}


def _mean_average_precision(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(2):
        shapes = [(randint(gen, 1, 5), randint(gen, 0, 10), randint(gen, 0, 4)) for _ in range(2)]
        shapes += [(0, 0, 2), (2, 0, 0)]  # false alarms only; nothing detected
        scenes = [_random_image(gen, *s) for s in shapes]
        counts = [len(pred["boxes"]) for pred, _ in scenes]
        scores = _distinct_scores(gen, sum(counts)).split(counts)  # distinct over all images
        preds = [{**pred, "scores": s} for (pred, _), s in zip(scenes, scores)]
        targets = [target for _, target in scenes]
        what = f"{len(scenes)} random images"
        if trial:
            targets = [{**t, "area": (0.75 * box_area(t["boxes"])).round()} for t in targets]
            what += ", areas given (smaller than the boxes)"
        expected = mean_average_precision(preds, targets)
        cases.append(Case(what, (preds, targets), expected={key: expected[key] for key in _MAP_KEYS}))
    return cases


PROBES = {
    "test_box_iou": (Probe("box_iou", "box_iou", _box_iou),),
    "test_nms": (Probe("nms", "nms", _nms, stand_in=("box_iou",)),),
    "test_batched_nms": (Probe("batched_nms", "batched_nms", _batched_nms, stand_in=("box_iou", "nms")),),
    "test_match_detections": (Probe("match_detections", "match_detections", _match_detections, stand_in=("box_iou",)),),
    "test_precision_recall_curve": (Probe("precision_recall_curve", "precision_recall_curve", _precision_recall_curve),),
    "test_average_precision": (
        Probe("average_precision", "average_precision", _average_precision, stand_in=("precision_recall_curve",)),
    ),
    "test_mean_average_precision": (
        Probe("mean_average_precision", "mean_average_precision", _mean_average_precision,
              stand_in=("box_iou", "match_detections", "average_precision"), timeout=60.0),
    ),
}
