"""Detection metrics: matching, precision-recall, AP and COCO-style mAP."""

from cs_dense.metrics.detection import (
    average_precision,
    match_detections,
    mean_average_precision,
    precision_recall_curve,
)

__all__ = [
    "average_precision",
    "match_detections",
    "mean_average_precision",
    "precision_recall_curve",
]
