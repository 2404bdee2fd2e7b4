"""Detection metrics (matching, precision-recall, AP, COCO-style mAP) and segmentation
metrics (confusion matrix, pixel accuracy, per-class IoU, mIoU, Dice)."""

from cs_dense.metrics.detection import (
    average_precision,
    match_detections,
    mean_average_precision,
    precision_recall_curve,
)
from cs_dense.metrics.segmentation import confusion_matrix, dice, mean_iou, per_class_iou, pixel_accuracy

__all__ = [
    "average_precision",
    "confusion_matrix",
    "dice",
    "match_detections",
    "mean_average_precision",
    "mean_iou",
    "per_class_iou",
    "pixel_accuracy",
    "precision_recall_curve",
]
