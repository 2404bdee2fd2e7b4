"""Mask R-CNN on a CPU: the course's two-stage detector with a mask branch.

:class:`MaskRCNN` is :class:`~cs_dense.models.two_stage.TwoStageDetector` (backbone, RPN,
RoI head) plus the mask branch of He et al., "Mask R-CNN" (ICCV 2017), built from
:mod:`cs_dense.models.masks`:

* in training, the positive RoIs (proposals and ground-truth boxes with IoU ``>= 0.5``
  with an object, as the box head's foreground) pool ``mask_pool x mask_pool`` features
  with RoI Align, :class:`~cs_dense.models.masks.MaskHead` predicts one mask per class, and
  :func:`~cs_dense.models.masks.maskrcnn_loss` adds ``loss_mask`` to the four losses;
* in eval mode, each detection's box pools features the same way, the mask of its
  predicted class is pasted into the image (:func:`~cs_dense.models.masks.paste_masks_in_image`),
  and the detection dicts gain ``"masks"`` (Tensor[D, H, W] bool), so the course's mAP
  scores them with ``iou_type="segm"``.

Three settings exist for the notebook's ablations (section 3 and table 2 of the paper):
``mask_roi_op`` (RoI Align or RoI Pool for the mask features), ``mask_loss`` (the
per-class sigmoid or a softmax over classes) and ``conventions`` (the course's aligned
targets and pasting, or torchvision's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cs_dense.models.masks import (
    MASK_THRESHOLD,
    MaskHead,
    maskrcnn_inference,
    maskrcnn_loss,
    paste_masks_in_image,
    project_masks_on_boxes,
)
from cs_dense.models.two_stage import DetectorConfig, TwoStageDetector, stack_detector_images
from cs_dense.ops.boxes import box_iou
from cs_dense.ops.roi import boxes_to_rois, roi_align, roi_pool
from cs_dense.validation import check_choice, check_int

#: Features the mask branch can pool: RoI Align (the paper's) or RoI Pool (its ablation, table 2c).
MASK_ROI_OPS = ("align", "pool")
#: Mask losses: per-class sigmoid BCE (the paper's) or a softmax over classes (table 2b).
MASK_LOSSES = ("sigmoid", "softmax")
#: Target and pasting rules: the course's pixel-edge rules or torchvision's.
CONVENTIONS = ("aligned", "torchvision")


@dataclass(frozen=True)
class MaskRCNNConfig(DetectorConfig):
    """Settings of :class:`MaskRCNN`: those of :class:`DetectorConfig` and the mask branch's.

    Attributes:
        mask_layers: output channels of the mask head's 3x3 convs (the paper's FPN head:
            four of 256; two of 64 train in minutes on a CPU and suffice for the shapes).
        mask_pool: side of the RoI features of the mask branch (14 in the paper); the
            masks are twice that (28).
        mask_rois_per_image: at most this many positive RoIs per image train the mask
            head, drawn at random (torchvision uses the box head's sampled positives, up to 32 of its 128).
        mask_roi_op: ``"align"`` (RoI Align, ``aligned=True``) or ``"pool"`` (RoI Pool).
        mask_loss: ``"sigmoid"`` (BCE on the ground-truth class's channel) or
            ``"softmax"`` (cross-entropy over the classes at each pixel, background
            where the target is below one half).
        conventions: ``"aligned"`` (the course's targets and pasting) or ``"torchvision"``
            (``aligned=False`` targets and torchvision's ``paste_masks_in_image``).

    Raises:
        ValueError: naming the field, on an invalid setting.
    """

    mask_layers: tuple[int, ...] = (64, 64)
    mask_pool: int = 14
    mask_rois_per_image: int = 16
    mask_roi_op: str = "align"
    mask_loss: str = "sigmoid"
    conventions: str = "aligned"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.mask_layers, tuple) or len(self.mask_layers) == 0:
            raise ValueError(f"mask_layers must be a non-empty tuple of channel counts, got {self.mask_layers!r}")
        for index, width in enumerate(self.mask_layers):
            check_int(f"mask_layers[{index}]", width, 1)
        check_int("mask_pool", self.mask_pool, 1)
        check_int("mask_rois_per_image", self.mask_rois_per_image, 1)
        check_choice("mask_roi_op", self.mask_roi_op, MASK_ROI_OPS)
        check_choice("mask_loss", self.mask_loss, MASK_LOSSES)
        check_choice("conventions", self.conventions, CONVENTIONS)


def mask_positives(
    proposals: Tensor, gt_boxes: Tensor, limit: int, iou_thresh: float = 0.5, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """The RoIs that train the mask head in one image, and their ground truth.

    The ground-truth boxes join the proposals (as in the box head); those whose best IoU
    with an object is ``>= iou_thresh`` are positive, and at most ``limit`` of them are
    kept, drawn at random.

    Returns:
        boxes (Tensor[P, 4]): the chosen positives.
        matched (Tensor[P] int64): the index of each one's ground truth (largest IoU).
    """
    boxes = torch.cat([proposals, gt_boxes.to(proposals.dtype)])
    if gt_boxes.shape[0] == 0:
        return boxes[:0], torch.zeros(0, dtype=torch.int64, device=boxes.device)
    best, matched = box_iou(gt_boxes.to(boxes.dtype), boxes).max(dim=0)
    positive = torch.nonzero(best >= iou_thresh).flatten()
    order = torch.randperm(positive.numel(), generator=generator)[:limit].to(positive.device)
    positive = positive[order]
    return boxes[positive], matched[positive]


def softmax_mask_loss(
    mask_logits: Tensor, proposals: Sequence[Tensor], gt_masks: Sequence[Tensor], gt_labels: Sequence[Tensor],
    mask_matched_idxs: Sequence[Tensor], aligned: bool = True,
) -> Tensor:
    """The paper's ablation of :func:`maskrcnn_loss` (table 2b): a softmax over classes.

    Each pixel of a positive RoI is one classification over all ``C`` channels: its
    target is the RoI's ground-truth class where the projected mask is ``>= 0.5`` and
    background (channel 0) elsewhere, so classes compete for pixels. Arguments as for
    :func:`maskrcnn_loss`; the mean cross-entropy over all ``K M^2`` pixels.
    """
    m = mask_logits.shape[-1]
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, mask_matched_idxs)]).to(mask_logits.device)
    per_image = zip(gt_masks, proposals, mask_matched_idxs)
    targets = torch.cat([project_masks_on_boxes(masks, boxes, idxs, m, aligned) for masks, boxes, idxs in per_image])
    pixel_classes = torch.where(targets >= MASK_THRESHOLD, labels[:, None, None], 0)  # [K, M, M]
    return F.cross_entropy(mask_logits, pixel_classes)


class MaskRCNN(TwoStageDetector):
    """:class:`TwoStageDetector` with Mask R-CNN's mask branch.

    ``forward(images, targets)`` in training returns the detector's four losses and
    ``loss_mask``; targets must hold ``"masks"`` (Tensor[G, H, W], 0/1). In eval mode
    ``forward(images)`` returns one ``{"boxes", "scores", "labels", "masks"}`` dict per
    image, ``masks`` Tensor[D, H, W] bool.
    """

    def __init__(self, config: MaskRCNNConfig = MaskRCNNConfig()):
        if not isinstance(config, MaskRCNNConfig):
            raise ValueError(f"config must be a MaskRCNNConfig, got {type(config).__name__}")
        super().__init__(config)
        self.mask_head = MaskHead(config.channels, config.num_classes, config.mask_layers)

    def mask_features(self, feature: Tensor, boxes: Sequence[Tensor]) -> Tensor:
        """``Tensor[K, channels, mask_pool, mask_pool]``: the mask branch's RoI features of all images' boxes."""
        size, scale = self.config.mask_pool, 1 / self.config.stride
        if self.config.mask_roi_op == "pool":
            return roi_pool(feature, boxes_to_rois(list(boxes)), size, scale)
        return roi_align(feature, boxes_to_rois(list(boxes)), size, scale, sampling_ratio=2, aligned=True)

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        if self.training:
            for i, target in enumerate(targets):
                if "masks" not in target:
                    raise ValueError(f"targets[{i}] has no 'masks': Mask R-CNN trains on instance masks")
        batch = stack_detector_images(images, self.config.stride)
        targets = targets if self.training else None
        feature = self.backbone((batch - self.mean) / self.std)
        proposals, rpn_losses = self.rpn(batch, [feature], targets)
        image_size = tuple(batch.shape[-2:])
        detections, head_losses = self.roi_head(feature, proposals, image_size, targets)
        aligned = self.config.conventions == "aligned"
        if self.training:
            chosen = [mask_positives(p.detach(), t["boxes"], self.config.mask_rois_per_image)
                      for p, t in zip(proposals, targets)]
            boxes = [b for b, _ in chosen]
            logits = self.mask_head(self.mask_features(feature, boxes))
            loss = maskrcnn_loss if self.config.mask_loss == "sigmoid" else softmax_mask_loss
            loss_mask = loss(logits, boxes, [t["masks"] for t in targets], [t["labels"] for t in targets],
                             [m for _, m in chosen], aligned=aligned)
            return {**rpn_losses, **head_losses, "loss_mask": loss_mask}
        labels = [d["labels"] for d in detections]
        logits = self.mask_head(self.mask_features(feature, [d["boxes"] for d in detections]))
        if self.config.mask_loss == "sigmoid":
            probabilities = maskrcnn_inference(logits, labels)
        else:
            counts = [lab.shape[0] for lab in labels]
            chosen = torch.cat([logits.new_zeros(0, dtype=torch.int64), *labels])
            soft = logits.softmax(dim=1)[torch.arange(logits.shape[0], device=logits.device), chosen]
            probabilities = list(soft[:, None].split(counts))
        for detection, probs in zip(detections, probabilities):
            detection["masks"] = self.paste(probs, detection["boxes"], image_size)
        return detections

    def paste(self, probabilities: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        """``Tensor[D, H, W] bool``: masks ``[D, 1, M, M]`` pasted into their boxes by the configured rule."""
        if self.config.conventions == "aligned":
            return paste_masks_in_image(probabilities, boxes, image_size)
        # torchvision's first import costs about 2 s; only this ablation needs it
        from torchvision.models.detection.roi_heads import paste_masks_in_image as torchvision_paste

        if probabilities.shape[0] == 0:
            return torch.zeros(0, *image_size, dtype=torch.bool, device=boxes.device)
        return torchvision_paste(probabilities, boxes, image_size)[:, 0] >= MASK_THRESHOLD
