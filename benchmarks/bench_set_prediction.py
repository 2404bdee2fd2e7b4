"""Detection without NMS: notebook 07's one-to-one detector, its location-only ablation, the
small DETR and notebook 06's RetinaNet, at equal wall time.

    python benchmarks/bench_set_prediction.py             # 180 s per detector, seeds 0 1 2 (about 25 minutes)
    python benchmarks/bench_set_prediction.py --quick     # smoke run: 10 s each, 200 training and 40 test images

Every detector trains with the same data (the first 2000 shapes training images, batches of
8), optimiser (AdamW, learning rate 0.002, weight decay 1e-4, cosine decay over the
budget) and budget; each is scored on the first 200 test images by mAP@0.5 and
mAP@[.5:.95], **on its raw output and after per-class NMS at IoU 0.5**:

* ``OneToOneDetector``, class cost 2: one prediction per position of the stride-8 map,
  trained one-to-one by Hungarian matching with the class term in the cost (OneNet-style);
* the same with a location-only matching cost (``w_class = 0``): the ablation;
* ``SmallDetr``: 12 queries, 3 decoder layers of width 64, DETR's matching and set loss
  (learning rate 0.001);
* ``SingleStageDetector``, notebook 06's RetinaNet, whose own output already went through
  NMS: the detector one would otherwise use.

The two one-to-one variants run once per seed (``--seeds``, default 0 1 2: weights and
batch order); the small DETR and the RetinaNet once, with seed 0.
"""

from __future__ import annotations

import argparse
import statistics

from common import print_environment, shapes_splits, train_and_score

from cs_dense.models import OneToOneConfig, OneToOneDetector, SingleStageDetector, SmallDetr
from cs_dense.train import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s of training each, 40 test images, seed 0")
    parser.add_argument("--seconds", type=float, default=None, help="training time of each detector (default 180)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the one-to-one runs (default 0 1 2)")
    args = parser.parse_args()
    seconds = args.seconds or (10 if args.quick else 180)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    print_environment()
    train, test = shapes_splits(args.quick)
    print(f"\n{seconds:g} s of training each on {len(train)} shapes images; scored on {len(test)} test images\n")

    runs = []
    for seed in seeds:
        for name, w_class in (("one-to-one, class cost 2", 2.0), ("one-to-one, location only", 0.0)):
            seed_everything(seed)
            model = OneToOneDetector(OneToOneConfig(w_class=w_class))
            runs.append(train_and_score(name, model, train, test, seconds, seed=seed, nms_thresh=0.5) | {"seed": seed})
            print(runs[-1], flush=True)
    seed_everything(0)
    runs.append(train_and_score("small DETR", SmallDetr(), train, test, seconds, nms_thresh=0.5, lr=1e-3) | {"seed": 0})
    print(runs[-1], flush=True)
    seed_everything(0)
    retina = train_and_score("RetinaNet (06), NMS inside", SingleStageDetector(), train, test, seconds) | {"seed": 0}
    runs.append(retina | {"map_50_nms": retina["map_50"], "map_nms": retina["map"]})
    print(runs[-1], flush=True)

    print("\n| detector | seed | steps | mAP@0.5 without NMS | with NMS | mAP@[.5:.95] without NMS | with NMS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        raw = "—" if r["name"].startswith("RetinaNet") else f"{r['map_50']:.3f}"
        raw_coco = "—" if r["name"].startswith("RetinaNet") else f"{r['map']:.3f}"
        print(f"| {r['name']} | {r['seed']} | {r['steps']} | {raw} | {r['map_50_nms']:.3f} | {raw_coco} | {r['map_nms']:.3f} |")
    for name in ("one-to-one, class cost 2", "one-to-one, location only"):
        chosen = [r for r in runs if r["name"] == name]
        gaps = [r["map_50_nms"] - r["map_50"] for r in chosen]
        print(f"\n{name}: mAP@0.5 without NMS {min(r['map_50'] for r in chosen):.3f}-{max(r['map_50'] for r in chosen):.3f} "
              f"over {len(chosen)} seed(s); NMS adds {statistics.mean(gaps):+.3f} on average")


if __name__ == "__main__":
    main()
