"""Shared helpers of the benchmark scripts: interleaved timing and a markdown table; the
data, backbone wrapper and train-then-score loop of the detector comparisons."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from cs_dense.data.shapes import ShapesDataset
from cs_dense.metrics import mean_average_precision
from cs_dense.models.two_stage import small_backbone
from cs_dense.ops import batched_nms
from cs_dense.train import fit


def timing_arguments(doc: str, quick_help: str = "tiny sizes, for a smoke run", reps: tuple[int, int] = (3, 15)):
    """Parse the options every timing script shares: ``--quick`` and ``--reps``.

    Returns:
        ``(args, reps)``: the parsed options and the repetitions to time, ``--reps`` or the
        default for the mode (``reps[0]`` quick, ``reps[1]`` full).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per candidate")
    args = parser.parse_args()
    return args, args.reps or (reps[0] if args.quick else reps[1])


def print_environment() -> None:
    """Say what the numbers were measured on (threads are left at torch's default)."""
    machine = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"python {platform.python_version()}, torch {torch.__version__}, {threads} threads, {machine}")


def interleaved_medians(candidates: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time in ms of each candidate, alternating candidates every repetition.

    Alternating (A, B, A, B, ...) rather than (A, A, ..., B, B, ...) spreads any drift
    of a shared machine (other jobs, frequency scaling) evenly over the candidates.
    """
    for _ in range(warmup):
        for run in candidates.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(reps):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(rows: list[tuple[str, float, float, str]]) -> None:
    """Markdown table of (operation, ours ms, theirs ms, theirs' name)."""
    print("| operation | ours ms | theirs ms | ratio ours/theirs |")
    print("|---|---:|---:|---:|")
    for operation, ours, theirs, name in rows:
        print(f"| {operation} (vs {name}) | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |")


# --------------------------------------------------------------------------- detector comparisons


def detector_arguments(
    doc: str, seconds: float, equal_steps: bool = True, seed: bool = False, rows: tuple[str, ...] = ()
) -> tuple[argparse.Namespace, float]:
    """Parse the options of the detector comparisons: ``--quick``, ``--seconds``, if
    ``equal_steps`` ``--equal-steps``, if ``seed`` ``--seed`` (default 0), and if ``rows``
    ``--only``: a comma-separated selection of those row names (``args.only``, default all).

    Returns:
        ``(args, seconds)``: the parsed options and each detector's training time,
        ``--seconds`` or the default for the mode (10 quick, ``seconds`` full).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s of training each, 40 test images")
    parser.add_argument("--seconds", type=float, default=None, help="training time of each detector")
    if equal_steps:
        parser.add_argument("--equal-steps", action="store_true", help="also train torchvision's for as many steps as ours")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch order")
    if rows:
        parser.add_argument("--only", type=lambda text: text.split(","), default=list(rows),
                            help=f"comma-separated rows to run, of {','.join(rows)} (default all)")
    args = parser.parse_args()
    unknown = sorted(set(getattr(args, "only", ())) - set(rows))
    if unknown:
        parser.error(f"--only: unknown rows {','.join(unknown)}; choose from {','.join(rows)}")
    return args, args.seconds or (10 if args.quick else seconds)


def shapes_splits(quick: bool) -> tuple[list, list]:
    """The first 2000 training and 200 test shapes images (200 and 40 when ``quick``), as
    lists of ``(image, target)``."""
    train = [ShapesDataset("train")[i] for i in range(200 if quick else 2000)]
    test = [ShapesDataset("test")[i] for i in range(40 if quick else 200)]
    return train, test


def torchvision_two_stage(detector_class, config, **extra):
    """torchvision's ``FasterRCNN`` or ``MaskRCNN`` (``detector_class``) built like our
    ``TwoStageDetector(config)``: the same backbone (:class:`SingleMap`), anchors, proposal
    counts, RoI Align 7 x 7 with sampling ratio 2, two fully connected layers of
    ``config.hidden``, 128 sampled proposals per image with a quarter foreground, the same
    normalisation, 128 x 128 images. ``extra`` goes to the constructor (the mask head's parts).

    The box head and predictor are built here: torchvision's constructors take no width for
    them (an unknown ``representation_size=`` keyword is passed on to the image transform
    and ignored, leaving its default 1024-wide layers)."""
    anchors = TVAnchorGenerator((config.anchor_sizes,), (config.aspect_ratios,))
    pre_train, pre_test = config.rpn_pre_nms_top_n
    post_train, post_test = config.rpn_post_nms_top_n
    box_head = TwoMLPHead(config.channels * 7 * 7, config.hidden)
    box_predictor = FastRCNNPredictor(config.hidden, config.num_classes)
    return detector_class(
        SingleMap(config), min_size=128, max_size=128, image_mean=list(config.image_mean), image_std=list(config.image_std),
        rpn_anchor_generator=anchors, box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        rpn_pre_nms_top_n_train=pre_train, rpn_pre_nms_top_n_test=pre_test,
        rpn_post_nms_top_n_train=post_train, rpn_post_nms_top_n_test=post_test,
        box_batch_size_per_image=128, box_positive_fraction=0.25, box_head=box_head, box_predictor=box_predictor, **extra,
    )


class SingleMap(torch.nn.Module):
    """torchvision's detectors want the backbone's feature maps in a dict.

    ``config`` is any settings object with ``channels`` and ``width`` (``DetectorConfig``,
    ``SingleStageConfig``): the backbone is ``small_backbone(config.channels, config.width)``.
    """

    def __init__(self, config):
        super().__init__()
        self.body = small_backbone(config.channels, config.width)
        self.out_channels = config.channels

    def forward(self, x):
        return {"0": self.body(x)}


def train_and_score(
    name, model, train, test, seconds, max_steps=None, batch_size=8, seed=0, nms_thresh=None, lr=2e-3, masks=False
) -> dict:
    """Train a detector with ``cs_dense.train.fit`` (AdamW, learning rate ``lr``, weight decay
    1e-4, cosine decay) on reshuffled batches of ``train``, then score it on ``test``.

    ``model(images, targets)`` must return a dict of losses in training mode and
    ``model(images)`` one detection dict per image in eval mode, as torchvision's do.

    Returns:
        dict: ``name``, ``steps``, ``step_ms`` (mean time of a training step), ``infer_ms``
        (inference time per test image, batches of 25, no grad), ``map_50`` and ``map``;
        with ``nms_thresh``, also ``map_50_nms`` and ``map_nms``: the same detections after
        per-class NMS at that IoU, for a detector whose own output has none; with
        ``masks``, also ``mask_map_50`` and ``mask_map``: mask AP (``iou_type="segm"``) of
        a detector whose detections hold ``"masks"``.
    """

    def batches():
        gen = torch.Generator().manual_seed(seed)
        while True:
            for index in torch.randperm(len(train), generator=gen).split(batch_size):
                yield [train[i] for i in index.tolist()]

    def loss_fn(model, batch):
        return sum(model([image for image, _ in batch], [target for _, target in batch]).values())

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    history = fit(model, batches(), loss_fn, optimizer, max_seconds=seconds, max_steps=max_steps, progress=False, desc=name)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        preds = [det for k in range(0, len(test), 25) for det in model([image for image, _ in test[k:k + 25]])]
    infer = (time.perf_counter() - start) / len(test) * 1e3
    targets = [target for _, target in test]
    scores = mean_average_precision(preds, targets)
    result = {"name": name, "steps": history.steps, "step_ms": history.seconds[-1] / history.steps * 1e3,
              "infer_ms": infer, "map_50": scores["map_50"], "map": scores["map"]}
    if masks:
        # torchvision's soft masks [N, 1, H, W] are binarised as it documents, at >= 0.5
        preds = [p | {"masks": p["masks"][:, 0] >= 0.5} if p["masks"].ndim == 4 else p for p in preds]
        mask_scores = mean_average_precision(preds, targets, iou_type="segm")
        result |= {"mask_map_50": mask_scores["map_50"], "mask_map": mask_scores["map"]}
    if nms_thresh is not None:
        keeps = [batched_nms(p["boxes"], p["scores"], p["labels"], nms_thresh) for p in preds]
        kept = [{key: value[keep] for key, value in p.items()} for p, keep in zip(preds, keeps)]
        nms_scores = mean_average_precision(kept, targets)
        result |= {"map_50_nms": nms_scores["map_50"], "map_nms": nms_scores["map"]}
    return result
