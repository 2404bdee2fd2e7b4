"""The second stage of Faster R-CNN and a whole two-stage detector small enough for a CPU.

The RoI head (Ren et al., NeurIPS 2015, section 3.2; Girshick, "Fast R-CNN", ICCV 2015)
pools a fixed-size feature for each proposal with RoI Align (He et al., "Mask R-CNN",
ICCV 2017), runs two fully connected layers, and predicts class scores (background
included) and one set of box deltas per class. Training matches proposals to the
ground truth at IoU 0.5 (:func:`roi_targets`), samples a quarter foreground, and adds
cross-entropy and the true class's smooth L1 (:func:`fast_rcnn_loss`). Inference keeps,
per class, the confident non-overlapping boxes (:func:`postprocess_detections`).

:class:`TwoStageDetector` puts a backbone, the RPN and the RoI head together; its
``forward`` takes a list of images (and targets in training) and returns losses or
detections in torchvision's format, so the course's mAP metric can score it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs_dense.models.anchors import IGNORED, AnchorGenerator, BoxCoder, match_anchors, sample_balanced
from cs_dense.models.rpn import SMOOTH_L1_BETA, RegionProposalNetwork, RPNHead
from cs_dense.ops.boxes import box_iou, check_boxes, clip_boxes_to_image, remove_small_boxes
from cs_dense.ops.nms import batched_nms
from cs_dense.ops.roi import roi_align

#: Box-coder weights of the second stage (Fast R-CNN): deltas of well-placed proposals are
#: small, and these weights bring them to roughly unit scale.
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def roi_targets(
    proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor, coder: BoxCoder, fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Class labels and regression targets of one image's proposals.

    A proposal whose best IoU with a ground truth is ``>= fg_iou_thresh`` takes that
    ground truth's class; below ``bg_iou_thresh`` it is background (0); in between it is
    ignored (-1). No best-anchor rule here: the ground-truth boxes themselves are added
    to the proposals in training, so every object has a perfect proposal.

    Returns:
        labels (Tensor[K] int64): class, 0 or -1.
        targets (Tensor[K, 4]): encoded matched ground truth (meaningful where label >= 1).
    """
    check_boxes(gt_boxes, "gt_boxes")
    if gt_labels.shape != (gt_boxes.shape[0],):
        raise ValueError(f"gt_labels must have shape [{gt_boxes.shape[0]}], got {list(gt_labels.shape)}")
    matches = match_anchors(box_iou(gt_boxes, proposals), fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
    if gt_boxes.shape[0] == 0:
        return torch.zeros(proposals.shape[0], dtype=torch.int64, device=proposals.device), torch.zeros_like(proposals)
    labels = gt_labels[matches.clamp(min=0)].to(torch.int64)
    labels[matches < 0] = 0
    labels[matches == IGNORED] = -1
    return labels, coder.encode(gt_boxes[matches.clamp(min=0)].to(proposals.dtype), proposals)


def fast_rcnn_loss(class_logits: Tensor, box_deltas: Tensor, labels: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Classification and box losses of the sampled proposals.

    Args:
        class_logits (Tensor[K, C]): scores of C classes, background (0) included.
        box_deltas (Tensor[K, 4 C]): deltas for every class.
        labels (Tensor[K] int64): 0..C-1.
        targets (Tensor[K, 4]): regression targets.

    Returns:
        ``(loss_classifier, loss_box_reg)``: mean cross-entropy; smooth L1 (beta 1/9) of the
        true class's deltas over foreground proposals, summed and divided by K.
    """
    k, c = class_logits.shape
    if box_deltas.shape != (k, 4 * c) or labels.shape != (k,) or targets.shape != (k, 4):
        raise ValueError(
            f"expected class_logits [K, C], box_deltas [K, 4 C], labels [K], targets [K, 4], got "
            f"{list(class_logits.shape)}, {list(box_deltas.shape)}, {list(labels.shape)}, {list(targets.shape)}"
        )
    loss_classifier = F.cross_entropy(class_logits, labels)
    foreground = torch.nonzero(labels > 0).flatten()
    chosen = box_deltas.view(k, c, 4)[foreground, labels[foreground]]  # [F, 4]: the true class's deltas
    loss_box = F.smooth_l1_loss(chosen, targets[foreground], beta=SMOOTH_L1_BETA, reduction="sum") / max(k, 1)
    return loss_classifier, loss_box


def postprocess_detections(
    class_logits: Tensor,
    box_deltas: Tensor,
    proposals: Tensor,
    image_size: tuple[int, int],
    coder: BoxCoder,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    min_size: float = 1e-2,
) -> dict[str, Tensor]:
    """Detections of one image from the head's outputs on its proposals.

    Every proposal yields one candidate per foreground class (its class-specific box,
    clipped, with that class's softmax probability); candidates below ``score_thresh`` or
    smaller than ``min_size`` go; NMS runs per class; the best ``detections_per_img`` stay.

    Returns:
        ``{"boxes": Tensor[D, 4], "scores": Tensor[D], "labels": Tensor[D] int64}``, by
        decreasing score.
    """
    k, c = class_logits.shape
    scores = F.softmax(class_logits, dim=1)[:, 1:]  # [K, C - 1]
    boxes = clip_boxes_to_image(coder.decode(box_deltas, proposals).view(k, c, 4)[:, 1:], image_size)  # [K, C - 1, 4]
    labels = torch.arange(1, c, device=class_logits.device).expand(k, c - 1)
    boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    keep = torch.nonzero(scores > score_thresh).flatten()
    keep = keep[remove_small_boxes(boxes[keep], min_size)]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


class RoIHead(nn.Module):
    """RoI Align, two fully connected layers, a classifier and per-class box regression.

    Args:
        in_channels: channels of the feature map.
        num_classes: classes including background.
        spatial_scale: feature cells per image pixel (1 / stride).
        pool_size: side of the pooled feature (7 in Faster R-CNN).
        sampling_ratio: RoI Align samples per bin side.
        hidden: width of the fully connected layers.
        batch_size_per_image, positive_fraction: the loss's proposal sample (512, 0.25 in
            the paper; smaller suits small images with few objects).
    """

    def __init__(
        self, in_channels: int, num_classes: int, spatial_scale: float, pool_size: int = 7, sampling_ratio: int = 2,
        hidden: int = 256, batch_size_per_image: int = 128, positive_fraction: float = 0.25,
        fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, score_thresh: float = 0.05, nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.spatial_scale, self.pool_size, self.sampling_ratio = spatial_scale, pool_size, sampling_ratio
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * pool_size**2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.classifier = nn.Linear(hidden, num_classes)
        self.box_regressor = nn.Linear(hidden, 4 * num_classes)
        self.coder = BoxCoder(ROI_BOX_WEIGHTS)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    def predict(self, feature: Tensor, proposals: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits Tensor[K, C] and deltas Tensor[K, 4 C] of all images' proposals, concatenated."""
        pooled = roi_align(feature, list(proposals), self.pool_size, self.spatial_scale, self.sampling_ratio)
        hidden = self.mlp(pooled)
        return self.classifier(hidden), self.box_regressor(hidden)

    def forward(
        self, feature: Tensor, proposals: Sequence[Tensor], image_size: tuple[int, int],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Detections (in eval mode) and losses (given targets).

        In training the ground-truth boxes join each image's proposals, a balanced sample
        of them is classified and regressed, and no detections are returned.
        """
        if targets is None:
            if self.training:
                raise ValueError("targets are required in training mode")
            logits, deltas = self.predict(feature, proposals)
            counts = [p.shape[0] for p in proposals]
            return [
                postprocess_detections(lg, dl, p, image_size, self.coder, self.score_thresh, self.nms_thresh,
                                       self.detections_per_img)
                for lg, dl, p in zip(logits.split(counts), deltas.split(counts), proposals)
            ], {}
        sampled, labels, regression = [], [], []
        for props, target in zip(proposals, targets):
            props = torch.cat([props, target["boxes"].to(props.dtype)])
            lab, reg = roi_targets(props, target["boxes"], target["labels"], self.coder,
                                   self.fg_iou_thresh, self.bg_iou_thresh)
            positive, negative = sample_balanced(lab, self.batch_size_per_image, self.positive_fraction)
            chosen = positive | negative
            sampled.append(props[chosen])
            labels.append(lab[chosen])
            regression.append(reg[chosen])
        logits, deltas = self.predict(feature, sampled)
        loss_cls, loss_box = fast_rcnn_loss(logits, deltas, torch.cat(labels), torch.cat(regression))
        detections: list[dict[str, Tensor]] = []
        return detections, {"loss_classifier": loss_cls, "loss_box_reg": loss_box}


def small_backbone(out_channels: int = 64, width: int = 32) -> nn.Sequential:
    """Three stride-2 stages of two 3x3 conv + BatchNorm + ReLU: stride 8, ``out_channels``."""
    layers: list[nn.Module] = []
    channels = [3, width, 2 * width, out_channels]
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        ]
    backbone = nn.Sequential(*layers)
    backbone.out_channels = out_channels  # what torchvision's FasterRCNN reads
    return backbone


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of :class:`TwoStageDetector` for the shapes images.

    Attributes:
        num_classes: classes including background.
        anchor_sizes, aspect_ratios: one anchor set on the stride-8 map; the shapes are
            12-40 pixels across and roughly square.
        channels, width: backbone output and first-stage channels.
        rpn_pre_nms_top_n, rpn_post_nms_top_n: proposals per image, training / testing.
        image_mean, image_std: per-channel normalisation applied inside the model.
    """

    num_classes: int = 4
    anchor_sizes: tuple[float, ...] = (16, 24, 32, 48)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    channels: int = 64
    width: int = 32
    stride: int = 8
    hidden: int = 256
    rpn_pre_nms_top_n: tuple[int, int] = (600, 300)
    rpn_post_nms_top_n: tuple[int, int] = (300, 100)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)


class TwoStageDetector(nn.Module):
    """Backbone, RPN and RoI head: a Faster R-CNN with one stride-8 feature map.

    ``forward(images, targets)`` in training returns the four losses; in eval mode
    ``forward(images)`` returns one ``{"boxes", "scores", "labels"}`` dict per image.
    Images are a list of Tensor[3, H, W] of one size (H and W multiples of the stride),
    values in [0, 1].
    """

    def __init__(self, config: DetectorConfig = DetectorConfig()):
        super().__init__()
        self.config = config
        self.backbone = small_backbone(config.channels, config.width)
        generator = AnchorGenerator((config.anchor_sizes,), (config.aspect_ratios,))
        self.rpn = RegionProposalNetwork(
            generator, RPNHead(config.channels, generator.num_anchors_per_location()[0]),
            pre_nms_top_n=dict(zip(("training", "testing"), config.rpn_pre_nms_top_n)),
            post_nms_top_n=dict(zip(("training", "testing"), config.rpn_post_nms_top_n)),
        )
        self.roi_head = RoIHead(config.channels, config.num_classes, 1 / config.stride, hidden=config.hidden)
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        if len(images) == 0 or len({tuple(i.shape) for i in images}) != 1:
            raise ValueError("images must be a non-empty list of tensors of one shape [3, H, W]")
        batch = torch.stack(list(images))
        if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2] % self.config.stride or batch.shape[3] % self.config.stride:
            raise ValueError(
                f"images must be [3, H, W] with H and W multiples of {self.config.stride}, got {list(batch.shape[1:])}"
            )
        targets = targets if self.training else None  # eval mode detects, even given targets
        feature = self.backbone((batch - self.mean) / self.std)
        proposals, rpn_losses = self.rpn(batch, [feature], targets)
        detections, head_losses = self.roi_head(feature, proposals, tuple(batch.shape[-2:]), targets)
        return {**rpn_losses, **head_losses} if self.training else detections
