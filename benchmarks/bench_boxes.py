"""Speed of cs_dense.ops against torchvision.ops: box_iou, nms, batched_nms.

    python benchmarks/bench_boxes.py           # full sizes (run on a quiet machine)
    python benchmarks/bench_boxes.py --quick   # smoke run with tiny sizes

Inputs are seeded and detector-like (jittered boxes around a few objects each), scores
a random permutation so no order depends on tie-breaking. Every result is checked
against torchvision before anything is timed.
"""

from __future__ import annotations

import torch
import torchvision.ops as tv
from common import interleaved_medians, print_environment, print_table, timing_arguments

from cs_dense.ops import batched_nms, box_iou, nms


def detector_like(
    n: int, seed: int, per_object: int = 10, size: float = 1000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` boxes jittered around ``n / per_object`` objects, and tie-free scores."""
    g = torch.Generator().manual_seed(seed)
    k = max(1, n // per_object)
    centres = torch.rand(k, 2, generator=g) * size
    sides = torch.rand(k, 2, generator=g) * 150 + 20
    owner = torch.randint(0, k, (n,), generator=g)
    centre = centres[owner] + torch.randn(n, 2, generator=g) * sides[owner] * 0.15
    half = sides[owner] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(0.5, 1.5) / 2
    scores = (torch.randperm(n, generator=g) + 1).float() / n
    return torch.cat([centre - half, centre + half], dim=1), scores


def per_class_loop(boxes, scores, idxs, threshold):
    """batched_nms as a Python loop of our nms over classes (an alternative we measured)."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for c in torch.unique(idxs):
        members = torch.where(idxs == c)[0]
        keep[members[nms(boxes[members], scores[members], threshold)]] = True
    kept = torch.where(keep)[0]
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def coordinate_offset(boxes, scores, idxs, threshold):
    """batched_nms by moving each class to its own region of the plane, then one nms."""
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, threshold)


def main() -> None:
    args, reps = timing_arguments(__doc__)
    iou_size = 200 if args.quick else 2000
    nms_sizes = (100, 300) if args.quick else (1000, 5000)
    batched = [(300, 5), (300, 20)] if args.quick else [(5000, 5), (5000, 80)]
    print_environment()
    rows = []

    boxes1, _ = detector_like(iou_size, seed=0)
    boxes2, _ = detector_like(iou_size, seed=1)
    torch.testing.assert_close(box_iou(boxes1, boxes2), tv.box_iou(boxes1, boxes2))
    t = interleaved_medians({"ours": lambda: box_iou(boxes1, boxes2), "tv": lambda: tv.box_iou(boxes1, boxes2)}, reps)
    rows.append((f"box_iou {iou_size}x{iou_size}", t["ours"], t["tv"], "torchvision"))

    for n in nms_sizes:
        boxes, scores = detector_like(n, seed=n)
        assert torch.equal(nms(boxes, scores, 0.5), tv.nms(boxes, scores, 0.5))
        candidates = {"ours": lambda: nms(boxes, scores, 0.5), "tv": lambda: tv.nms(boxes, scores, 0.5)}
        t = interleaved_medians(candidates, reps)
        rows.append((f"nms {n} boxes", t["ours"], t["tv"], "torchvision"))

    for n, n_classes in batched:
        boxes, scores = detector_like(n, seed=n + n_classes)
        idxs = torch.randint(0, n_classes, (n,), generator=torch.Generator().manual_seed(n_classes))
        expected = tv.batched_nms(boxes, scores, idxs, 0.5)
        candidates = {
            "ours": lambda: batched_nms(boxes, scores, idxs, 0.5),
            "loop": lambda: per_class_loop(boxes, scores, idxs, 0.5),
            "offset": lambda: coordinate_offset(boxes, scores, idxs, 0.5),
            "tv": lambda: tv.batched_nms(boxes, scores, idxs, 0.5),
        }
        for name in ("ours", "loop", "offset"):
            assert torch.equal(candidates[name](), expected), name
        t = interleaved_medians(candidates, reps)
        label = f"batched_nms {n} boxes, {n_classes} classes"
        rows.append((label, t["ours"], t["tv"], "torchvision"))
        rows.append((label, t["ours"], t["loop"], "our nms in a per-class loop"))
        rows.append((label, t["ours"], t["offset"], "our nms on offset boxes"))
    print_table(rows)


if __name__ == "__main__":
    main()
