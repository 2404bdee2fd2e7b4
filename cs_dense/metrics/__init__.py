"""Detection and segmentation metrics.

Modules:
    matching      greedy matching of detections to ground truths (COCO and VOC rules)
    ap            precision-recall curves, the precision envelope, AP the VOC 2007, VOC 2010 and COCO ways
    coco          COCO-style mAP and mAR (bbox and segm), equal to pycocotools' COCOeval
    segmentation  confusion matrix, pixel accuracy, per-class IoU, mIoU, Dice
"""

from cs_dense.metrics.ap import AP_METHODS, average_precision, precision_envelope, precision_recall_curve
from cs_dense.metrics.coco import mean_average_precision
from cs_dense.metrics.matching import match_detections
from cs_dense.metrics.segmentation import confusion_matrix, dice, mean_iou, per_class_iou, pixel_accuracy

__all__ = [
    "AP_METHODS",
    "average_precision",
    "confusion_matrix",
    "dice",
    "match_detections",
    "mean_average_precision",
    "mean_iou",
    "per_class_iou",
    "pixel_accuracy",
    "precision_envelope",
    "precision_recall_curve",
]
