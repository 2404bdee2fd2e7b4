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

import argparse
import time

import torch
from common import print_environment
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from cs_dense.data.shapes import ShapesDataset
from cs_dense.metrics import mean_average_precision
from cs_dense.models.two_stage import DetectorConfig, TwoStageDetector, small_backbone
from cs_dense.train import fit, seed_everything


class _SingleMap(torch.nn.Module):
    """torchvision's FasterRCNN wants the backbone's feature maps in a dict."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.body = small_backbone(config.channels, config.width)
        self.out_channels = config.channels

    def forward(self, x):
        return {"0": self.body(x)}


def torchvision_detector(config: DetectorConfig) -> FasterRCNN:
    anchors = TVAnchorGenerator((config.anchor_sizes,), (config.aspect_ratios,))
    pre_train, pre_test = config.rpn_pre_nms_top_n
    post_train, post_test = config.rpn_post_nms_top_n
    height = width = 128
    return FasterRCNN(
        _SingleMap(config), num_classes=config.num_classes,
        min_size=height, max_size=width, image_mean=list(config.image_mean), image_std=list(config.image_std),
        rpn_anchor_generator=anchors, box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        rpn_pre_nms_top_n_train=pre_train, rpn_pre_nms_top_n_test=pre_test,
        rpn_post_nms_top_n_train=post_train, rpn_post_nms_top_n_test=post_test,
        box_batch_size_per_image=128, box_positive_fraction=0.25, representation_size=config.hidden,
    )


def train_and_score(name, model, train, test, seconds, max_steps=None, batch_size=8, seed=0) -> dict:
    def batches():
        gen = torch.Generator().manual_seed(seed)
        while True:
            for index in torch.randperm(len(train), generator=gen).split(batch_size):
                yield [train[i] for i in index.tolist()]

    def loss_fn(model, batch):
        return sum(model([image for image, _ in batch], [target for _, target in batch]).values())

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    history = fit(model, batches(), loss_fn, optimizer, max_seconds=seconds, max_steps=max_steps, progress=False, desc=name)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        preds = [det for k in range(0, len(test), 25) for det in model([image for image, _ in test[k:k + 25]])]
    infer = (time.perf_counter() - start) / len(test) * 1e3
    scores = mean_average_precision(preds, [target for _, target in test])
    return {"name": name, "steps": history.steps, "step_ms": history.seconds[-1] / history.steps * 1e3,
            "infer_ms": infer, "map_50": scores["map_50"], "map": scores["map"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s of training each, 40 test images")
    parser.add_argument("--seconds", type=float, default=None, help="training time of each detector")
    parser.add_argument("--equal-steps", action="store_true", help="also train torchvision's for as many steps as ours")
    args = parser.parse_args()
    seconds = args.seconds or (10 if args.quick else 180)
    print_environment()
    train = [ShapesDataset("train")[i] for i in range(200 if args.quick else 2000)]
    test = [ShapesDataset("test")[i] for i in range(40 if args.quick else 200)]
    config = DetectorConfig()
    rows = []
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
