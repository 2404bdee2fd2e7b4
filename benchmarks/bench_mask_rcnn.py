"""Our Mask R-CNN against torchvision's, and the paper's ablations: same backbone, data and wall time.

    python benchmarks/bench_mask_rcnn.py                 # 180 s of training each, or as many steps (about 22 minutes)
    python benchmarks/bench_mask_rcnn.py --quick         # smoke run: 10 s each, 40 test images
    python benchmarks/bench_mask_rcnn.py --equal-steps   # also torchvision for as many steps as ours took
    python benchmarks/bench_mask_rcnn.py --seed 1        # another seed for the weights and the batch order

Rows, each trained for the same wall time on the same shapes images with the same optimiser
(AdamW, learning rate 0.002, weight decay 1e-4, cosine decay) and seed, one after the other,
all scored on the same held-out images by our COCO-equivalent ``mean_average_precision``
(boxes, and masks with ``iou_type="segm"``):

* ``cs_dense MaskRCNN``: ``MaskRCNNConfig()``, the detector of notebook 08.
* ``torchvision MaskRCNN``: built like our ``TwoStageDetector`` (``common.torchvision_two_stage``:
  backbone, anchors, proposal counts, box head, sampling) with the same light mask head:
  14 x 14 RoI Align, ``MaskRCNNHeads(64, [64, 64])`` and ``MaskRCNNPredictor``. What still
  differs is the mask branch's recipe: torchvision trains the head on all the box head's
  sampled positives (up to 32 per image) where ours draws at most 16 per image; its targets
  and its mask features come from RoI Align with ``aligned=False``, and it pastes with the
  legacy Detectron rule (notebook 08, section 4).
* three ablations of ours (the paper's table 2), each trained for as many steps as ours took
  (RoI Pool's masked maxima make its step about twice as long; equal steps compares the
  recipes, not the kernels): RoI Pool instead of RoI Align for the mask features
  (``mask_roi_op="pool"``), a softmax over classes instead of per-class sigmoids
  (``mask_loss="softmax"``), torchvision's targets and pasting (``conventions="torchvision"``).

``--equal-steps`` adds torchvision's model trained for as many steps as ours managed.
"""

from __future__ import annotations

from common import (
    detector_arguments,
    print_environment,
    shapes_splits,
    torchvision_two_stage,
    train_and_score,
)
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from cs_dense.models.mask_rcnn import MaskRCNN, MaskRCNNConfig
from cs_dense.train import seed_everything

#: The ablations of ours: row name and the settings that change.
ABLATIONS = (
    ("cs_dense MaskRCNN, RoI Pool for the masks", {"mask_roi_op": "pool"}),
    ("cs_dense MaskRCNN, softmax over classes", {"mask_loss": "softmax"}),
    ("cs_dense MaskRCNN, torchvision's targets and pasting", {"conventions": "torchvision"}),
)


def torchvision_mask_rcnn(config: MaskRCNNConfig) -> TVMaskRCNN:
    width = config.mask_layers[-1]
    return torchvision_two_stage(
        TVMaskRCNN, config, mask_roi_pool=MultiScaleRoIAlign(["0"], config.mask_pool, 2),
        mask_head=MaskRCNNHeads(config.channels, list(config.mask_layers), 1),
        mask_predictor=MaskRCNNPredictor(width, width, config.num_classes),
    )


def main() -> None:
    args, seconds = detector_arguments(__doc__, seconds=180, seed=True)
    print_environment()
    train, test = shapes_splits(args.quick)
    config = MaskRCNNConfig()
    rows = []
    for name, build in (("cs_dense MaskRCNN", MaskRCNN), ("torchvision MaskRCNN", torchvision_mask_rcnn)):
        seed_everything(args.seed)
        rows.append(train_and_score(name, build(config), train, test, seconds, seed=args.seed, masks=True))
    for name, change in ABLATIONS:  # as many steps as ours: RoI Pool's step is slower, the recipe is what is compared
        seed_everything(args.seed)
        rows.append(train_and_score(f"{name}, {rows[0]['steps']} steps", MaskRCNN(MaskRCNNConfig(**change)), train, test,
                                    seconds=1e9, max_steps=rows[0]["steps"], seed=args.seed, masks=True))
    if args.equal_steps:
        seed_everything(args.seed)
        rows.append(train_and_score(f"torchvision MaskRCNN, {rows[0]['steps']} steps", torchvision_mask_rcnn(config), train,
                                    test, seconds=1e9, max_steps=rows[0]["steps"], seed=args.seed, masks=True))
    print(f"\n{seconds:.0f} s of training each (unless steps are given) on {len(train)} shapes images, seed {args.seed}; "
          f"scored on {len(test)} test images\n")
    print("| detector | steps | ms / step | ms / image (inference) | box AP@0.5 | box AP | mask AP@0.5 | mask AP |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['steps']} | {r['step_ms']:.0f} | {r['infer_ms']:.1f} | {r['map_50']:.3f} | {r['map']:.3f} "
              f"| {r['mask_map_50']:.3f} | {r['mask_map']:.3f} |")


if __name__ == "__main__":
    main()
