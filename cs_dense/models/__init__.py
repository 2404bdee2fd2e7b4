"""Reference models: U-Net for semantic segmentation; a single-object localiser; anchors, the RPN
and a two-stage detector; YOLO, SSD and RetinaNet pieces and a single-stage detector."""

from cs_dense.models.anchors import AnchorGenerator, BoxCoder, base_anchors, grid_anchors, match_anchors, sample_balanced
from cs_dense.models.localization import SingleObjectLocalizer, localization_loss
from cs_dense.models.rpn import RegionProposalNetwork, RPNHead, rpn_loss, rpn_targets, select_proposals
from cs_dense.models.set_prediction import greedy_match, hungarian, hungarian_matcher, matching_cost, set_loss
from cs_dense.models.single_stage import (
    SingleStageConfig,
    SingleStageDetector,
    default_boxes,
    easy_negative_share,
    hard_negative_mining,
    prior_bias,
    retinanet_loss,
    ssd_loss,
    ssd_match,
    ssd_scales,
    yolo_loss,
    yolo_targets,
)
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
    "SingleStageConfig",
    "SingleStageDetector",
    "TwoStageDetector",
    "UNet",
    "UNetConfig",
    "base_anchors",
    "default_boxes",
    "easy_negative_share",
    "fast_rcnn_loss",
    "greedy_match",
    "grid_anchors",
    "hard_negative_mining",
    "hungarian",
    "hungarian_matcher",
    "localization_loss",
    "match_anchors",
    "matching_cost",
    "postprocess_detections",
    "prior_bias",
    "retinanet_loss",
    "roi_targets",
    "rpn_loss",
    "rpn_targets",
    "sample_balanced",
    "select_proposals",
    "set_loss",
    "small_backbone",
    "ssd_loss",
    "ssd_match",
    "ssd_scales",
    "yolo_loss",
    "yolo_targets",
]
