"""Our two-stage detector against torchvision's FasterRCNN: same backbone, data and wall time.

    python benchmarks/bench_detector.py             # 180 s of training each (about 7 minutes)
    python benchmarks/bench_detector.py --quick     # smoke run: 10 s each, 40 test images
    python benchmarks/bench_detector.py --equal-steps  # also torchvision for as many steps as ours took

Both detectors get the same stride-8 backbone architecture (``small_backbone``), the
same anchors (4 sizes x 3 ratios), the same proposal counts (600 / 300 before NMS, 300 /
100 after, training / testing), the same RoI Align 7 x 7 with sampling ratio 2, the same
two 256-wide fully connected layers, the same sampling of 128 proposals per image with a
quarter foreground, the same normalisation, and the same optimiser (AdamW, learning rate
0.002, weight decay 1e-4, cosine decay over the time budget via ``cs_dense.train.fit``),
batches of 8 shapes images, the same seed. Each trains for the same wall-clock time, one
after the other, and both are scored on the same held-out images by our COCO-equivalent
``mean_average_precision``. The table reports the steps each managed, the seconds per
step, and mAP@0.5 and mAP@[0.5:0.95]. ``--equal-steps`` adds a third run, torchvision's
model trained for as many steps as ours managed, whatever the time: it separates the
speed of a training step from the quality of the recipe.
"""

from __future__ import annotations

from common import (
    detector_arguments,
    print_environment,
    shapes_splits,
    torchvision_two_stage,
    train_and_score,
)
from torchvision.models.detection import FasterRCNN

from cs_dense.models.two_stage import DetectorConfig, TwoStageDetector
from cs_dense.train import seed_everything


def main() -> None:
    args, seconds = detector_arguments(__doc__, seconds=180)
    print_environment()
    train, test = shapes_splits(args.quick)
    config = DetectorConfig()
    rows = []
    def torchvision_detector(config):
        return torchvision_two_stage(FasterRCNN, config)

    for name, build in (("cs_dense TwoStageDetector", TwoStageDetector), ("torchvision FasterRCNN", torchvision_detector)):
        seed_everything(0)
        rows.append(train_and_score(name, build(config), train, test, seconds))
    if args.equal_steps:
        seed_everything(0)
        rows.append(train_and_score(f"torchvision FasterRCNN, {rows[0]['steps']} steps", torchvision_detector(config),
                                    train, test, seconds=1e9, max_steps=rows[0]["steps"]))
    print(f"\n{seconds:.0f} s of training each (unless steps are given) on {len(train)} shapes images; scored on {len(test)} test images\n")
    print("| detector | steps | ms / step | ms / image (inference) | mAP@0.5 | mAP@[.5:.95] |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['steps']} | {r['step_ms']:.0f} | {r['infer_ms']:.1f} | {r['map_50']:.3f} | {r['map']:.3f} |")


if __name__ == "__main__":
    main()
