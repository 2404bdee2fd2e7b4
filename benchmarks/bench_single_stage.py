"""Our single-stage detector against torchvision's RetinaNet and FCOS: same backbone, data and wall time.

    python benchmarks/bench_single_stage.py                # 120 s of training each (about 7 minutes)
    python benchmarks/bench_single_stage.py --quick        # smoke run: 10 s each, 200 training and 40 test images
    python benchmarks/bench_single_stage.py --equal-steps  # also each torchvision model for as many steps as ours took

All three detectors get the stride-8 backbone architecture (``small_backbone(64, 32)``),
the normalisation inside the model (mean 0.5, std 0.25; torchvision's ``min_size`` and
``max_size`` are the images' 128 pixels, so its transform does not resize), a class and a
box tower of ``tower_depth`` (2) 3 x 3 conv layers of 64 channels, each followed by
GroupNorm (32 groups) and ReLU, the class prior 0.01, the sigmoid focal loss (alpha 0.25,
gamma 2), the same postprocessing (score above 0.05, the best 1000 candidates, per-class
NMS at IoU 0.5, 100 detections per image) and the same optimiser (AdamW, learning rate
0.002, weight decay 1e-4, cosine decay over the time budget via ``cs_dense.train.fit``),
batches of 8 shapes images, the same seed.
Each trains for the same wall-clock time (120 s, the course notebook's budget), one after
the other, and all are scored on the same held-out images by our COCO-equivalent
``mean_average_precision``. The table reports the steps each managed, the milliseconds
per step, the inference throughput (test images in batches of 25, eval mode, no grad),
and mAP@0.5 and mAP@[0.5:0.95]. ``--equal-steps`` adds each torchvision model trained for
as many steps as ours managed, whatever the time: it separates the speed of a training
step from the quality of the recipe (about 4 minutes more).

torchvision's ``RetinaNet`` gets our anchors (sizes 16, 24, 32, 48 x height / width
ratios 0.5, 1, 2; the script checks that torchvision's ``AnchorGenerator`` gives exactly
ours), our matching (IoU >= 0.5 object, < 0.4 background, every object's best anchors
kept) and our L1 loss on unit-weight box deltas. Its ``RetinaNetHead`` always builds
4-layer towers; the script replaces ``classification_head.conv`` and
``regression_head.conv`` by 2-layer ones of torchvision's own layer (conv without bias +
GroupNorm + ReLU, as its RetinaNet v2 head builds them) and initialisation (normal, std
0.01), so the towers match ours. What still differs:

* torchvision's class head has ``num_classes`` = 4 outputs per anchor, column 0 for the
  background, which is never a positive (the focal loss pushes it to 0 like any negative
  column); ours has 3. A label-0 detection scoring above 0.05 would take a candidate and
  a detection slot; mAP skips class 0, which has no ground truth.
* our postprocessing also drops boxes under 0.01 pixels after clipping; torchvision's does not.
* torchvision's transform still resizes each image (and the targets' masks) to its own
  size, an identity that costs a little time.
* the same seed draws the initial weights in a different order, so they differ.

torchvision's ``FCOS`` is anchor-free: ``AnchorGenerator(((8,),), ((1.0,),))`` gives one
8 x 8 box per position (the stride; FCOS requires one per location), used only for its
centre, which sits on the cell's top-left corner as every torchvision anchor does, and as
the unit of the box regression. Its tower depth is set to ours (``FCOSHead(num_convs=2)``);
the thresholds are overridden to ours (FCOS's defaults are score 0.2, NMS 0.6). The rest
is torchvision's default, so the head and training differ from RetinaNet's by design:

* a position is positive for an object when it lies inside its box and within
  ``center_sampling_radius`` = 1.5 strides (12 pixels) of its centre, the smallest
  object winning; with a single feature map there is no per-level size range;
* the box head predicts the distances to the four sides (ReLU, in strides) and is
  trained with the GIoU loss, plus a centre-ness branch trained with BCE; a detection's
  score is sqrt(class probability x centre-ness);
* the losses are divided by the batch's positives, not each image's;
* the same background column 0 as RetinaNet's (``num_classes`` = 4).
"""

from __future__ import annotations

from functools import partial

import torch
from common import (
    SingleMap,
    detector_arguments,
    print_environment,
    shapes_splits,
    train_and_score,
)
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import (
    AnchorGenerator as TVAnchorGenerator,
)
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.misc import Conv2dNormActivation

from cs_dense.models import AnchorGenerator, SingleStageConfig, SingleStageDetector
from cs_dense.models.single_stage import RETINA_BG_IOU, RETINA_FG_IOU, TOWER_GROUPS
from cs_dense.models.two_stage import BACKBONE_STRIDE
from cs_dense.train import seed_everything

#: The shapes images' side; torchvision's transform gets it as min_size = max_size, so it does not resize.
IMAGE_SIZE = 128
#: FCOS's single "anchor" per position is one stride wide: its box regression counts in strides.
FCOS_ANCHOR_SIZE = BACKBONE_STRIDE


def _shared_settings(config: SingleStageConfig) -> dict:
    """The keyword arguments torchvision's RetinaNet and FCOS share with our config."""
    return {
        "min_size": IMAGE_SIZE, "max_size": IMAGE_SIZE,
        "image_mean": list(config.image_mean), "image_std": list(config.image_std),
        "score_thresh": config.score_thresh, "nms_thresh": config.nms_thresh,
        "detections_per_img": config.detections_per_img, "topk_candidates": config.topk_candidates,
    }


def _tower(channels: int, depth: int) -> nn.Sequential:
    """``depth`` of torchvision's RetinaNet v2 tower layers (conv 3 x 3 without bias + GroupNorm + ReLU),
    initialised as it does."""
    norm = partial(nn.GroupNorm, TOWER_GROUPS)
    tower = nn.Sequential(*[Conv2dNormActivation(channels, channels, norm_layer=norm) for _ in range(depth)])
    for layer in tower.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.01)
    return tower


def torchvision_retinanet(config: SingleStageConfig) -> RetinaNet:
    anchors = TVAnchorGenerator((config.anchor_sizes,), (config.aspect_ratios,))
    head = RetinaNetHead(config.channels, anchors.num_anchors_per_location()[0], config.num_classes)
    head.classification_head.conv = _tower(config.channels, config.tower_depth)
    head.regression_head.conv = _tower(config.channels, config.tower_depth)
    return RetinaNet(
        SingleMap(config), num_classes=config.num_classes, anchor_generator=anchors, head=head,
        fg_iou_thresh=RETINA_FG_IOU, bg_iou_thresh=RETINA_BG_IOU, **_shared_settings(config),
    )


def torchvision_fcos(config: SingleStageConfig) -> FCOS:
    anchors = TVAnchorGenerator(((FCOS_ANCHOR_SIZE,),), ((1.0,),))
    head = FCOSHead(config.channels, 1, config.num_classes, num_convs=config.tower_depth)
    return FCOS(SingleMap(config), num_classes=config.num_classes, anchor_generator=anchors, head=head,
                **_shared_settings(config))


def check_anchors(config: SingleStageConfig) -> None:
    """Our anchors equal torchvision's on a shapes image: the RetinaNet comparison rests on it."""
    images = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    feature = torch.zeros(1, config.channels, IMAGE_SIZE // BACKBONE_STRIDE, IMAGE_SIZE // BACKBONE_STRIDE)
    ours = AnchorGenerator((config.anchor_sizes,), (config.aspect_ratios,))(images, [feature])[0]
    theirs = TVAnchorGenerator((config.anchor_sizes,), (config.aspect_ratios,))(
        ImageList(images, [(IMAGE_SIZE, IMAGE_SIZE)]), [feature]
    )[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def main() -> None:
    args, seconds = detector_arguments(__doc__, seconds=120)
    print_environment()
    config = SingleStageConfig()
    check_anchors(config)
    train, test = shapes_splits(args.quick)
    theirs = {"torchvision RetinaNet": torchvision_retinanet, "torchvision FCOS": torchvision_fcos}
    rows = []
    for name, build in (("cs_dense SingleStageDetector", SingleStageDetector), *theirs.items()):
        seed_everything(0)
        rows.append(train_and_score(name, build(config), train, test, seconds))
    if args.equal_steps:
        steps = rows[0]["steps"]
        for name, build in theirs.items():
            seed_everything(0)
            rows.append(train_and_score(f"{name}, {steps} steps", build(config), train, test, seconds=1e9, max_steps=steps))
    print(f"\n{seconds:.0f} s of training each (unless steps are given) on {len(train)} shapes images; scored on {len(test)} test images\n")
    print("| detector | steps | ms / step | images / s (inference) | mAP@0.5 | mAP@[.5:.95] |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['steps']} | {r['step_ms']:.0f} | {1e3 / r['infer_ms']:.0f} | {r['map_50']:.3f} | {r['map']:.3f} |")
    print(f"\nAll: small_backbone({config.channels}, {config.width}), towers of {config.tower_depth} conv + GroupNorm + ReLU, "
          f"score > {config.score_thresh}, top {config.topk_candidates}, NMS {config.nms_thresh}, "
          f"{config.detections_per_img} per image.")
    print(f"RetinaNet: our anchors and matching; {config.num_classes} class outputs per anchor "
          f"(column 0, background, never positive) to our {config.num_classes - 1}.")
    print("FCOS: one 8 x 8 point per position, centre sampling 1.5 strides, GIoU + centre-ness losses.")


if __name__ == "__main__":
    main()
