"""Speed of cs_dense.metrics.mean_average_precision against pycocotools and faster-coco-eval.

    python benchmarks/bench_map.py           # 500 images (run on a quiet machine)
    python benchmarks/bench_map.py --quick   # smoke run with 20 images

Timed: ours from the per-image tensors to the result dict; pycocotools' and
faster-coco-eval's ``COCOeval`` evaluate + accumulate + summarize, with stdout
suppressed, from already loaded ground truth and results (loading JSON is not timed,
which favours them). All three must agree (to 1e-6) before anything is timed.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from common import interleaved_medians, print_environment, print_table, timing_arguments
from faster_coco_eval import COCO as FastCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cs_dense.data.coco import to_coco_gt, to_coco_results
from cs_dense.metrics import mean_average_precision

SUMMARY_KEYS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
SUMMARY_KEYS += ["mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]  # COCOeval.stats order
CATEGORIES = ("background", "a", "b", "c", "d", "e")
HEIGHT, WIDTH = 480, 640


def detection_dataset(n_images: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Seeded ground truth (0-12 objects of 5 classes, all COCO sizes) and detector-like output."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_images):
        m = int(rng.integers(0, 13))
        size = np.exp(rng.uniform(np.log(6), np.log(300), (m, 2)))
        corner = rng.uniform(0, 1, (m, 2)) * ([WIDTH, HEIGHT] - size)
        gt = np.concatenate([corner, corner + size], axis=1)
        labels = rng.integers(1, 6, m)
        copies = rng.integers(0, 4, m)  # 0-3 detections per object, jittered
        owner = np.repeat(np.arange(m), copies)
        jitter = rng.normal(0, 0.1, (len(owner), 4)) * np.tile(size[owner], 2)
        found = np.sort((gt[owner] + jitter).reshape(-1, 2, 2), axis=1).reshape(-1, 4)
        n_false = int(rng.integers(0, 15))
        false_corner = rng.uniform(0, 1, (n_false, 2)) * [WIDTH - 40, HEIGHT - 40]
        false = np.concatenate([false_corner, false_corner + rng.uniform(4, 40, (n_false, 2))], axis=1)
        boxes = np.concatenate([found, false]).clip(0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
        pred_labels = np.concatenate([labels[owner], rng.integers(1, 6, n_false)])
        targets.append({"boxes": torch.tensor(gt, dtype=torch.float32), "labels": torch.tensor(labels)})
        scores = torch.tensor(rng.random(len(boxes)), dtype=torch.float32)
        boxes = torch.tensor(boxes, dtype=torch.float32)
        preds.append({"boxes": boxes, "scores": scores, "labels": torch.tensor(pred_labels)})
    return preds, targets


def cocoeval_runner(coco_cls, eval_cls, gt_dict: dict, results: list[dict], **eval_kwargs):
    """Load once; return a function running evaluate + accumulate + summarize quietly."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results])

    def run() -> np.ndarray:
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = eval_cls(gt, dt, "bbox", **eval_kwargs)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return np.asarray(evaluator.stats[:12])

    return run


def main() -> None:
    args, reps = timing_arguments(__doc__, "20 images, for a smoke run", reps=(2, 5))
    n_images = 20 if args.quick else 500
    print_environment()
    preds, targets = detection_dataset(n_images)
    gt_dict = to_coco_gt(targets, [(HEIGHT, WIDTH)] * n_images, CATEGORIES)
    results = to_coco_results(preds, [image["id"] for image in gt_dict["images"]])
    candidates = {
        "ours": lambda: mean_average_precision(preds, targets),
        "pycocotools": cocoeval_runner(COCO, COCOeval, gt_dict, results),
        "faster-coco-eval": cocoeval_runner(
            FastCOCO, COCOeval_faster, gt_dict, results, print_function=lambda *_: None
        ),
    }
    ours = candidates["ours"]()
    reference = candidates["pycocotools"]()
    np.testing.assert_allclose([ours[k] for k in SUMMARY_KEYS], reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(candidates["faster-coco-eval"](), reference, rtol=0, atol=1e-6)
    n_objects, n_dets = sum(len(t["boxes"]) for t in targets), sum(len(p["boxes"]) for p in preds)
    print(f"{n_images} images, {n_objects} objects, {n_dets} detections, map {ours['map']:.4f}")
    t = interleaved_medians(candidates, reps)
    label = f"mean_average_precision, {n_images} images"
    print_table([(label, t["ours"], t[name], name) for name in ("pycocotools", "faster-coco-eval")])


if __name__ == "__main__":
    main()
