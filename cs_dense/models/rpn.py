"""The Region Proposal Network of Faster R-CNN (Ren et al., NeurIPS 2015, section 3.1).

A small convolutional head slides over the backbone's feature map and, for each of the
``A`` anchors at every position, predicts an objectness logit and four box deltas.
Training labels anchors by IoU with the ground truth (:func:`rpn_targets`), samples a
balanced subset and applies binary cross-entropy to its objectness and smooth L1 to its
positives' deltas (:func:`rpn_loss`). At inference the deltas move the anchors, and the
best-scoring, non-overlapping boxes become the proposals (:func:`select_proposals`).

Flattened layouts follow torchvision: per image, anchors are ordered by feature map,
then position (row-major), then anchor, matching :class:`~cs_dense.models.anchors.AnchorGenerator`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs_dense.models.anchors import IGNORED, AnchorGenerator, BoxCoder, match_anchors, sample_balanced
from cs_dense.ops.boxes import box_iou, check_boxes, clip_boxes_to_image, remove_small_boxes
from cs_dense.ops.nms import batched_nms

#: Smooth L1's switch point between quadratic and linear: 1/9 as in Detectron and
#: torchvision, so errors above a ninth of a unit (in encoded deltas) count linearly.
SMOOTH_L1_BETA = 1.0 / 9


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to ``A`` objectness logits and ``4 A`` deltas.

    Args:
        in_channels: channels of the feature maps.
        num_anchors: anchors per position, ``A``.
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)  # as in the paper: small outputs at the start
            nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per feature map: objectness Tensor[B, A, Hf, Wf] and deltas Tensor[B, 4 A, Hf, Wf]."""
        objectness, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature))
            objectness.append(self.objectness(hidden))
            deltas.append(self.deltas(hidden))
        return objectness, deltas


def flatten_head_outputs(objectness: Sequence[Tensor], deltas: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Put the head's outputs in anchor order.

    Args:
        objectness: per feature map, Tensor[B, A, Hf, Wf].
        deltas: per feature map, Tensor[B, 4 A, Hf, Wf], channel ``4 a + k`` holding
            component ``k`` of anchor ``a``.

    Returns:
        ``(objectness, deltas)``: Tensor[B, N] and Tensor[B, N, 4], ``N`` the anchors of one
        image, in the order of :class:`~cs_dense.models.anchors.AnchorGenerator`.
    """
    flat_obj, flat_deltas = [], []
    for obj, delta in zip(objectness, deltas):
        b, a, h, w = obj.shape
        flat_obj.append(obj.permute(0, 2, 3, 1).reshape(b, h * w * a))  # [B, Hf, Wf, A] -> [B, N_level]
        delta = delta.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2)  # [B, Hf, Wf, A, 4]
        flat_deltas.append(delta.reshape(b, h * w * a, 4))
    return torch.cat(flat_obj, dim=1), torch.cat(flat_deltas, dim=1)


def rpn_targets(
    anchors: Tensor, gt_boxes: Tensor, coder: BoxCoder, high: float = 0.7, low: float = 0.3
) -> tuple[Tensor, Tensor]:
    """Objectness labels and regression targets of one image's anchors.

    Args:
        anchors (Tensor[N, 4]): xyxy.
        gt_boxes (Tensor[M, 4]): xyxy; ``M = 0`` makes every anchor negative.
        coder: encodes each anchor's matched ground truth.
        high, low: IoU thresholds of :func:`~cs_dense.models.anchors.match_anchors`
            (best-anchor matches are allowed).

    Returns:
        labels (Tensor[N] int64): 1 object, 0 background, -1 ignored.
        targets (Tensor[N, 4]): encoded matched ground truth (meaningful where label is 1).
    """
    check_boxes(gt_boxes, "gt_boxes")
    matches = match_anchors(box_iou(gt_boxes, anchors), high, low, allow_low_quality_matches=True)
    labels = (matches >= 0).to(torch.int64)
    labels[matches == IGNORED] = -1
    if gt_boxes.shape[0] == 0:
        return labels, torch.zeros_like(anchors)
    return labels, coder.encode(gt_boxes[matches.clamp(min=0)].to(anchors.dtype), anchors)


def rpn_loss(
    objectness: Tensor,
    deltas: Tensor,
    labels: Tensor,
    targets: Tensor,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The RPN's two losses over a balanced sample of anchors.

    Args:
        objectness (Tensor[B, N]): logits.
        deltas (Tensor[B, N, 4]): predicted deltas.
        labels (Tensor[B, N] int64): from :func:`rpn_targets`.
        targets (Tensor[B, N, 4]): from :func:`rpn_targets`.
        batch_size_per_image, positive_fraction, generator: see
            :func:`~cs_dense.models.anchors.sample_balanced`.

    Returns:
        ``(loss_objectness, loss_box)``: binary cross-entropy averaged over the sampled
        anchors; smooth L1 (beta 1/9) summed over the sampled positives and divided by the
        number of sampled anchors (as torchvision, so the box term weighs less when an
        image has few positives).
    """
    if labels.shape != objectness.shape or deltas.shape != targets.shape or deltas.shape[:2] != labels.shape:
        raise ValueError(
            f"expected objectness and labels [B, N], deltas and targets [B, N, 4], got {list(objectness.shape)}, "
            f"{list(labels.shape)}, {list(deltas.shape)} and {list(targets.shape)}"
        )
    positive, negative = zip(*(sample_balanced(l, batch_size_per_image, positive_fraction, generator) for l in labels))
    positive, negative = torch.stack(positive), torch.stack(negative)  # [B, N] each
    sampled = positive | negative
    count = max(int(sampled.sum()), 1)
    loss_objectness = F.binary_cross_entropy_with_logits(
        objectness[sampled], positive[sampled].to(objectness.dtype), reduction="sum"
    ) / count
    loss_box = F.smooth_l1_loss(deltas[positive], targets[positive], beta=SMOOTH_L1_BETA, reduction="sum") / count
    return loss_objectness, loss_box


def select_proposals(
    objectness: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    image_size: tuple[int, int],
    coder: BoxCoder,
    pre_nms_top_n: int = 1000,
    post_nms_top_n: int = 1000,
    nms_thresh: float = 0.7,
    min_size: float = 1e-3,
    score_thresh: float = 0.0,
    num_anchors_per_level: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Proposals of one image: decode, keep the top scores, clip, drop tiny boxes, NMS.

    Steps, as torchvision's ``RegionProposalNetwork.filter_proposals``: keep the
    ``pre_nms_top_n`` highest logits of each feature map; decode their deltas; clip the
    boxes to the image; drop boxes narrower or shorter than ``min_size`` and those with
    probability below ``score_thresh``; NMS at ``nms_thresh`` within each feature map;
    keep the ``post_nms_top_n`` best overall.

    Args:
        objectness (Tensor[N]): logits of one image's anchors.
        deltas (Tensor[N, 4]): their predicted deltas.
        anchors (Tensor[N, 4]): xyxy.
        image_size: ``(H, W)``.
        num_anchors_per_level: anchors per feature map (they are consecutive); one map
            if ``None``.

    Returns:
        ``(boxes, scores)``: Tensor[K, 4] xyxy and Tensor[K] objectness probabilities,
        by decreasing score, ``K <= post_nms_top_n``.
    """
    n = anchors.shape[0]
    if objectness.shape != (n,) or deltas.shape != (n, 4):
        raise ValueError(
            f"expected objectness [{n}] and deltas [{n}, 4] for {n} anchors, "
            f"got {list(objectness.shape)} and {list(deltas.shape)}"
        )
    counts = [n] if num_anchors_per_level is None else list(num_anchors_per_level)
    if sum(counts) != n:
        raise ValueError(f"num_anchors_per_level must add up to the {n} anchors, got {counts}")
    levels = torch.repeat_interleave(torch.arange(len(counts), device=anchors.device), torch.tensor(counts, device=anchors.device))
    top = torch.cat(
        [chunk.topk(min(pre_nms_top_n, chunk.numel())).indices + start
         for chunk, start in zip(objectness.split(counts), [sum(counts[:i]) for i in range(len(counts))])]
    )
    boxes = clip_boxes_to_image(coder.decode(deltas[top], anchors[top]), image_size)
    scores, levels = objectness[top].sigmoid(), levels[top]
    keep = remove_small_boxes(boxes, min_size)
    keep = keep[scores[keep] >= score_thresh]
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    keep = batched_nms(boxes, scores, levels, nms_thresh)[:post_nms_top_n]
    return boxes[keep], scores[keep]


class RegionProposalNetwork(nn.Module):
    """Anchors, head, targets, loss and proposals in one module.

    Args:
        anchor_generator: places the anchors.
        head: an :class:`RPNHead` with ``num_anchors`` matching the generator.
        fg_iou_thresh, bg_iou_thresh: anchor labelling thresholds (0.7, 0.3 in the paper).
        batch_size_per_image, positive_fraction: the loss's anchor sample (256, 0.5).
        pre_nms_top_n, post_nms_top_n: ``{"training": n, "testing": n}`` proposal counts.
        nms_thresh, min_size, score_thresh: see :func:`select_proposals`.
        coder: box coding of the deltas; weights ``(1, 1, 1, 1)`` by default.
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: dict[str, int] | None = None,
        post_nms_top_n: dict[str, int] | None = None,
        nms_thresh: float = 0.7,
        min_size: float = 1e-3,
        score_thresh: float = 0.0,
        coder: BoxCoder | None = None,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.coder = coder or BoxCoder()
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self.post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh, self.min_size, self.score_thresh = nms_thresh, min_size, score_thresh

    def _mode(self) -> str:
        return "training" if self.training else "testing"

    def forward(
        self, images: Tensor, features: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals for each image and, given targets, the losses.

        Args:
            images (Tensor[B, C, H, W]): the batch the features come from.
            features: the backbone's feature maps, Tensor[B, C', Hf, Wf] each.
            targets: per image a dict with ``boxes`` (Tensor[M, 4]); required in training.

        Returns:
            proposals: B tensors [K, 4], xyxy, detached (the second stage does not
            backpropagate into the box coordinates).
            losses: ``{"loss_objectness", "loss_rpn_box"}`` when targets are given, else ``{}``.
        """
        anchors = self.anchor_generator(images, features)
        raw_objectness, raw_deltas = self.head(features)
        objectness, deltas = flatten_head_outputs(raw_objectness, raw_deltas)  # [B, N], [B, N, 4]
        per_level = [o[0].numel() for o in raw_objectness]  # Hf * Wf * A of each map
        image_size = tuple(images.shape[-2:])
        proposals = [
            select_proposals(
                obj.detach(), delta.detach(), anc, image_size, self.coder,
                self.pre_nms_top_n[self._mode()], self.post_nms_top_n[self._mode()],
                self.nms_thresh, self.min_size, self.score_thresh, per_level,
            )[0]
            for obj, delta, anc in zip(objectness, deltas, anchors)
        ]
        losses: dict[str, Tensor] = {}
        if targets is not None:
            labels, regression = zip(*(
                rpn_targets(anc, t["boxes"], self.coder, self.fg_iou_thresh, self.bg_iou_thresh)
                for anc, t in zip(anchors, targets)
            ))
            loss_obj, loss_box = rpn_loss(
                objectness, deltas, torch.stack(labels), torch.stack(regression),
                self.batch_size_per_image, self.positive_fraction,
            )
            losses = {"loss_objectness": loss_obj, "loss_rpn_box": loss_box}
        elif self.training:
            raise ValueError("targets are required in training mode")
        return proposals, losses
