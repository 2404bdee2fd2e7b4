"""Our Mask R-CNN against torchvision's, and the paper's ablations: same backbone, data and wall time.

    python benchmarks/bench_mask_rcnn.py                 # 180 s of training each, or as many steps (about 22 minutes)
    python benchmarks/bench_mask_rcnn.py --quick         # smoke run: 10 s each, 40 test images
    python benchmarks/bench_mask_rcnn.py --equal-steps   # also torchvision for as many steps as ours took
    python benchmarks/bench_mask_rcnn.py --seed 1        # another seed for the weights and the batch order
    python benchmarks/bench_mask_rcnn.py --only ours,pool  # some of ours,torchvision,pool,softmax,torchvision-conventions

Rows, trained one after the other on the same shapes images with the same optimiser (AdamW,
learning rate 0.002, weight decay 1e-4, cosine decay) and seed, for the same wall time or,
where the row says so, for as many steps as ours took; all scored on the same held-out
images by our COCO-equivalent ``mean_average_precision`` (boxes, and masks with
``iou_type="segm"``):

* ``cs_dense MaskRCNN``: ``MaskRCNNConfig()``, the detector of notebook 08.
* ``torchvision MaskRCNN``: built like our ``TwoStageDetector`` (``common.torchvision_two_stage``:
  backbone, anchors, proposal counts, box head, sampling) with the same light mask head:
  14 x 14 RoI Align, ``MaskRCNNHeads(64, [64, 64])`` and ``MaskRCNNPredictor``. What still
  differs is the mask branch's recipe (torchvision's ``roi_heads.py``):

  - which RoIs train the mask head: torchvision's are the box head's sampled positives, all
    of them (up to 32 of the 128 per image); ours are at most 16 per image
    (``mask_rois_per_image``), drawn at random from all the proposals and ground-truth
    boxes with IoU >= 0.5, independently of the box head's sample;
  - its mask targets are the ground truth cut out by RoI Align with ``aligned=False``
    (half a pixel off; ours ``aligned=True``), and so are its mask features
    (``MultiScaleRoIAlign``; ours ``aligned=True``);
  - it pastes a 28 x 28 mask by padding it with a cell of zeros, widening the box to match,
    truncating it to integers and resizing the mask to that many pixels (box corners read
    as inclusive pixel indices); ours reads the mask bilinearly at the centres of the pixels
    in the box (notebook 08, section 4). Both keep the pixels >= 0.5.
* three ablations of ours, each trained for as many steps as ours took (RoI Pool's masked
  maxima make its step nearly three times as long; equal steps compares the recipes, not
  the kernels): two of the paper's table 2, RoI Pool instead of RoI Align for the mask
  features (``mask_roi_op="pool"``) and a softmax over classes instead of per-class
  sigmoids (``mask_loss="softmax"``), and torchvision's targets and pasting on our model
  (``conventions="torchvision"``).

``--equal-steps`` adds torchvision's model trained for as many steps as ours managed.
``--only`` runs some of the rows; ours always runs, since the ablations and ``--equal-steps``
take its number of steps.
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

#: The ablations of ours by their ``--only`` name: row name and the settings that change.
ABLATIONS = {
    "pool": ("cs_dense MaskRCNN, RoI Pool for the masks", {"mask_roi_op": "pool"}),
    "softmax": ("cs_dense MaskRCNN, softmax over classes", {"mask_loss": "softmax"}),
    "torchvision-conventions": ("cs_dense MaskRCNN, torchvision's targets and pasting", {"conventions": "torchvision"}),
}


def torchvision_mask_rcnn(config: MaskRCNNConfig) -> TVMaskRCNN:
    width = config.mask_layers[-1]
    return torchvision_two_stage(
        TVMaskRCNN, config, mask_roi_pool=MultiScaleRoIAlign(["0"], config.mask_pool, 2),
        mask_head=MaskRCNNHeads(config.channels, list(config.mask_layers), 1),
        mask_predictor=MaskRCNNPredictor(width, width, config.num_classes),
    )


def main() -> None:
    args, seconds = detector_arguments(__doc__, seconds=180, seed=True, rows=("ours", "torchvision", *ABLATIONS))
    print_environment()
    train, test = shapes_splits(args.quick)
    config = MaskRCNNConfig()
    seed_everything(args.seed)
    rows = [train_and_score("cs_dense MaskRCNN", MaskRCNN(config), train, test, seconds, seed=args.seed, masks=True)]
    if "torchvision" in args.only:
        seed_everything(args.seed)
        rows.append(train_and_score("torchvision MaskRCNN", torchvision_mask_rcnn(config), train, test, seconds,
                                    seed=args.seed, masks=True))
    # as many steps as ours: RoI Pool's step is slower, and the recipe is what is compared
    for name, change in (ABLATIONS[key] for key in ABLATIONS if key in args.only):
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
