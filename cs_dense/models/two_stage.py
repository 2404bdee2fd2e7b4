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
from cs_dense.ops.roi import boxes_to_rois, roi_align
from cs_dense.validation import check_int, check_positive_numbers, check_same_length, check_tensor, describe

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

    Args:
        proposals (Tensor[K, 4]): xyxy, pixels.
        gt_boxes (Tensor[M, 4]): xyxy, pixels; ``M = 0`` makes every proposal background.
        gt_labels (Tensor[M] int64): classes 1..C-1.
        coder: encodes the matched ground truth relative to each proposal
            (:data:`ROI_BOX_WEIGHTS` in the detector).
        fg_iou_thresh: smallest IoU of a foreground proposal (inclusive).
        bg_iou_thresh: proposals with best IoU below this are background; equal to
            ``fg_iou_thresh`` (Fast R-CNN's 0.5) leaves none ignored.

    Returns:
        labels (Tensor[K] int64): class, 0 or -1.
        targets (Tensor[K, 4]): encoded matched ground truth (meaningful where label >= 1).
    """
    check_boxes(gt_boxes, "gt_boxes")
    check_boxes(proposals, "proposals")
    check_same_length("gt_labels", gt_labels, gt_boxes.shape[0], of="ground-truth box")
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
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    min_size: float = 1e-2,
    *,
    coder: BoxCoder | None = None,
) -> dict[str, Tensor]:
    """Detections of one image from the head's outputs on its proposals.

    Every proposal yields one candidate per foreground class (its class-specific box,
    clipped, with that class's softmax probability); candidates below ``score_thresh`` or
    smaller than ``min_size`` go; NMS runs per class; the best ``detections_per_img`` stay.

    Args:
        class_logits (Tensor[K, C]): scores of C classes, background (0) included.
        box_deltas (Tensor[K, 4 C]): deltas of every class, relative to the proposal.
        proposals (Tensor[K, 4]): xyxy, pixels.
        image_size: ``(H, W)``, to clip the boxes.
        score_thresh: candidates must score strictly more than this.
        nms_thresh: per-class NMS suppresses at IoU ``>`` this.
        detections_per_img: the most detections kept.
        min_size: the smallest width and height kept, in pixels.
        coder: decodes the deltas; by default the detector's, weights :data:`ROI_BOX_WEIGHTS`
            (notebook 05's exercise takes the parameters before ``min_size`` only).

    Returns:
        ``{"boxes": Tensor[D, 4], "scores": Tensor[D], "labels": Tensor[D] int64}``, by
        decreasing score.
    """
    check_tensor(class_logits, "class_logits", ndim=2, shape="[K, C]", floating=True)
    k, c = class_logits.shape
    check_tensor(box_deltas, "box_deltas", ndim=2, last=4 * c, shape=f"[{k}, 4 C = {4 * c}]")
    check_boxes(proposals, "proposals")
    if box_deltas.shape[0] != k or proposals.shape[0] != k:
        raise ValueError(f"class_logits, box_deltas and proposals must have K = {k} rows, got "
                         f"{describe(box_deltas)} and {describe(proposals)}")
    coder = BoxCoder(ROI_BOX_WEIGHTS) if coder is None else coder
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
        fg_iou_thresh, bg_iou_thresh: proposal labelling (see :func:`roi_targets`).
        score_thresh, nms_thresh, detections_per_img: inference (see
            :func:`postprocess_detections`).
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
        rois = boxes_to_rois(list(proposals))  # the Tensor[K, 5] form: notebook 05's roi_align takes only it
        pooled = roi_align(feature, rois, self.pool_size, self.spatial_scale, self.sampling_ratio)
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
                # the default coder is self.coder's: the call takes only notebook 05's parameters
                postprocess_detections(lg, dl, p, image_size, self.score_thresh, self.nms_thresh, self.detections_per_img)
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


#: Output stride of :func:`small_backbone`: three stride-2 stages.
BACKBONE_STRIDE = 8


def small_backbone(out_channels: int = 64, width: int = 32) -> nn.Sequential:
    """Three stride-2 stages of two 3x3 conv + BatchNorm + ReLU: stride
    :data:`BACKBONE_STRIDE`, ``out_channels`` channels."""
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


def check_image_normalisation(mean: Sequence[float], std: Sequence[float]) -> None:
    """``ValueError`` unless ``image_mean`` and ``image_std`` hold 3 numbers each, the std positive."""
    for name, value in (("image_mean", mean), ("image_std", std)):
        if len(value) != 3:
            raise ValueError(f"{name} must hold 3 numbers (R, G, B), got {value!r}")
    check_positive_numbers("image_std", std)


def stack_detector_images(images: Sequence[Tensor], stride: int) -> Tensor:
    """The list of images a detector's ``forward`` takes, as one batch ``[B, 3, H, W]``.

    Raises:
        ValueError: an empty list, images of different shapes, or not ``[3, H, W]`` with
            ``H`` and ``W`` multiples of ``stride``.
    """
    if len(images) == 0 or len({tuple(i.shape) for i in images}) != 1:
        raise ValueError("images must be a non-empty list of tensors of one shape [3, H, W]")
    batch = torch.stack(list(images))
    if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2] % stride or batch.shape[3] % stride:
        raise ValueError(f"images must be [3, H, W] with H and W multiples of {stride}, got {list(batch.shape[1:])}")
    return batch


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of :class:`TwoStageDetector` for the shapes images.

    Attributes:
        num_classes: classes including background (4 for the shapes: background and 3).
        anchor_sizes: anchor sizes in pixels (square root of the area) on the stride-8 map;
            the shapes are 12-40 pixels across.
        aspect_ratios: anchor height / width ratios; the shapes are roughly square.
        channels: backbone output channels, read by the RPN and the RoI head.
        width: channels of the backbone's first stage.
        hidden: width of the RoI head's two fully connected layers.
        rpn_pre_nms_top_n: proposals kept before the RPN's NMS, ``(training, testing)``.
        rpn_post_nms_top_n: proposals kept after it, ``(training, testing)``.
        image_mean, image_std: per-channel normalisation applied inside the model.

    The feature stride is not a setting: it is the backbone's, :data:`BACKBONE_STRIDE`
    (``config.stride`` reads it), so RoI Align always samples at the scale of the map.

    Raises:
        ValueError: naming the field, on an invalid setting.
    """

    num_classes: int = 4
    anchor_sizes: tuple[float, ...] = (16, 24, 32, 48)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    channels: int = 64
    width: int = 32
    hidden: int = 256
    rpn_pre_nms_top_n: tuple[int, int] = (600, 300)
    rpn_post_nms_top_n: tuple[int, int] = (300, 100)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        check_int("num_classes", self.num_classes, 2)
        check_positive_numbers("anchor_sizes", self.anchor_sizes)
        check_positive_numbers("aspect_ratios", self.aspect_ratios)
        for name in ("channels", "width", "hidden"):
            check_int(name, getattr(self, name), 1)
        for name in ("rpn_pre_nms_top_n", "rpn_post_nms_top_n"):
            value = getattr(self, name)
            if len(value) != 2:
                raise ValueError(f"{name} must be a pair (training, testing), got {value!r}")
            for phase, count in zip(("training", "testing"), value):
                check_int(f"{name} ({phase})", count, 1)
        check_image_normalisation(self.image_mean, self.image_std)

    @property
    def stride(self) -> int:
        """The feature map's stride in pixels: the backbone's."""
        return BACKBONE_STRIDE


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
        batch = stack_detector_images(images, self.config.stride)
        targets = targets if self.training else None  # eval mode detects, even given targets
        feature = self.backbone((batch - self.mean) / self.std)
        proposals, rpn_losses = self.rpn(batch, [feature], targets)
        detections, head_losses = self.roi_head(feature, proposals, tuple(batch.shape[-2:]), targets)
        return {**rpn_losses, **head_losses} if self.training else detections
