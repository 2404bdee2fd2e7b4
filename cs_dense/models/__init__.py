"""Reference models: U-Net for semantic segmentation; a single-object localiser; anchors, the RPN
and a two-stage detector."""

from cs_dense.models.anchors import AnchorGenerator, BoxCoder, base_anchors, grid_anchors, match_anchors, sample_balanced
from cs_dense.models.localization import SingleObjectLocalizer, localization_loss
from cs_dense.models.rpn import RegionProposalNetwork, RPNHead, rpn_loss, rpn_targets, select_proposals
from cs_dense.models.two_stage import (
    DetectorConfig,
    RoIHead,
    TwoStageDetector,
    fast_rcnn_loss,
    postprocess_detections,
    roi_targets,
    small_backbone,
)
from cs_dense.models.unet import UNet, UNetConfig

__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "DetectorConfig",
    "RPNHead",
    "RegionProposalNetwork",
    "RoIHead",
    "SingleObjectLocalizer",
    "TwoStageDetector",
    "UNet",
    "UNetConfig",
    "base_anchors",
    "fast_rcnn_loss",
    "grid_anchors",
    "localization_loss",
    "match_anchors",
    "postprocess_detections",
    "roi_targets",
    "rpn_loss",
    "rpn_targets",
    "sample_balanced",
    "select_proposals",
    "small_backbone",
]
