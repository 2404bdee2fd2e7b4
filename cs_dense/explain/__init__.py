"""Seeing what a classifier looks at (notebook 09).

Modules:
    classifier  a small multi-label shapes classifier (global average pooling + one linear
                layer, so CAM applies), its targets and its mean average precision
    maps        saliency, CAM, Grad-CAM, guided backpropagation / deconvnet, guided Grad-CAM
    attacks     FGSM and an iterative fooling image
    evaluation  scoring maps against object masks (pointing game, IoU), a centre baseline,
                and the cascading weight randomisation of the sanity checks
"""

from cs_dense.explain.attacks import fgsm, fooling_image
from cs_dense.explain.classifier import SHAPE_CLASSES, ShapesClassifier, multilabel_ap, presence
from cs_dense.explain.evaluation import (
    cascading_randomization,
    centre_baseline,
    class_masks,
    pointing_game,
    top_area_iou,
)
from cs_dense.explain.maps import (
    BACKPROP_RULES,
    class_activation_map,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    saliency_map,
)

__all__ = [
    "BACKPROP_RULES",
    "SHAPE_CLASSES",
    "ShapesClassifier",
    "cascading_randomization",
    "centre_baseline",
    "class_activation_map",
    "class_masks",
    "multilabel_ap",
    "fgsm",
    "fooling_image",
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "pointing_game",
    "presence",
    "saliency_map",
    "top_area_iou",
]
