"""The single-stage detector's ablations (focal loss, prior) and one stage against two, at equal wall time.

    python benchmarks/bench_one_stage.py            # 100 s of training per detector, 5 detectors (about 10 minutes)
    python benchmarks/bench_one_stage.py --quick    # smoke run: 10 s each, 200 training and 40 test images

Notebook 06's RetinaNet-style ``SingleStageDetector`` is trained four times with the same
budget (100 s, the notebook's), data (the first 2000 shapes training images, batches of
8), optimiser (AdamW, learning rate 0.002, weight decay 1e-4, cosine decay) and seed,
changing only its classification loss and the initial bias of its class layer:

* focal loss (alpha 0.25, gamma 2) or plain binary cross-entropy (alpha -1, gamma 0),
  both summed over every non-ignored (anchor, class) entry and divided by the positives;
* the class bias at the prior -log(99) (probability 0.01) or at 0 (probability 0.5).

For each it reports the steps taken, mAP@0.5 and mAP@[.5:.95] on the first 200 test images,
and the share of the classification loss held by easy negatives (target 0, probability
below 0.1) on 8 test images, before and after training, measured with the loss it trains
with (``cs_dense.models.easy_negative_share``).

Then notebook 05's ``TwoStageDetector`` is trained with the same budget, data, optimiser
and seed, and the table compares it with the focal-loss, prior-initialised single-stage
detector: steps, training ms per step, inference images per second (the 200 test images
in batches of 25, eval mode, no gradients, one detector after the other) and mAP.
"""

from __future__ import annotations

import torch
from common import detector_arguments, print_environment, shapes_splits, train_and_score

from cs_dense.models import (
    DetectorConfig,
    SingleStageConfig,
    SingleStageDetector,
    TwoStageDetector,
    easy_negative_share,
)
from cs_dense.train import seed_everything

VARIANTS = {  # name: (alpha, gamma, prior_probability)
    "focal, prior 0.01": (0.25, 2.0, 0.01),
    "focal, bias 0": (0.25, 2.0, None),
    "cross-entropy, prior 0.01": (-1.0, 0.0, 0.01),
    "cross-entropy, bias 0": (-1.0, 0.0, None),
}


def main() -> None:
    args, seconds = detector_arguments(__doc__, 100, equal_steps=False)
    print_environment()
    train, test = shapes_splits(args.quick)
    probe_images = torch.stack([image for image, _ in test[:8]])
    probe_targets = [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in test[:8]]
    print(f"\n{seconds:g} s of training each on {len(train)} shapes images; scored on {len(test)} test images\n")

    results = {}
    print("| single-stage detector | steps | mAP@0.5 | mAP@[.5:.95] | easy negatives' share of the loss, at start | after training |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (alpha, gamma, prior) in VARIANTS.items():
        seed_everything(0)
        model = SingleStageDetector(SingleStageConfig(alpha=alpha, gamma=gamma, prior_probability=prior)).eval()
        before = easy_negative_share(model, probe_images, probe_targets, alpha, gamma)["easy_share"]
        results[name] = train_and_score(name, model, train, test, seconds)
        model.eval()
        after = easy_negative_share(model, probe_images, probe_targets, alpha, gamma)["easy_share"]
        r = results[name]
        print(f"| {name} | {r['steps']} | {r['map_50']:.3f} | {r['map']:.3f} | {100 * before:.3g}% | {100 * after:.3g}% |",
              flush=True)

    seed_everything(0)
    two = train_and_score("two-stage", TwoStageDetector(DetectorConfig()), train, test, seconds)
    one = results["focal, prior 0.01"]
    print("\n| detector | steps | ms / step | images / s (inference) | mAP@0.5 | mAP@[.5:.95] |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in (("single-stage (RetinaNet-style, notebook 06)", one), ("two-stage (Faster R-CNN, notebook 05)", two)):
        print(f"| {label} | {r['steps']} | {r['step_ms']:.0f} | {1000 / r['infer_ms']:.0f} | {r['map_50']:.3f} | {r['map']:.3f} |")
    print(f"\nsingle-stage inference is {two['infer_ms'] / one['infer_ms']:.2f} times as fast as two-stage")


if __name__ == "__main__":
    main()
