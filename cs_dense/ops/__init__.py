"""Reference operations: box geometry and NMS (torchvision's names and semantics), and
upsampling (unpooling, transposed convolution, with PyTorch's semantics), RoI Pool and RoI
Align (torchvision's), the soft Dice loss and the sigmoid focal loss (torchvision's).

Boxes are ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` absolute pixels unless a name says
otherwise (``boxes_cxcywh``); :func:`box_convert` moves between formats.
"""

from cs_dense.ops.boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou,
    masks_to_boxes,
    remove_small_boxes,
)
from cs_dense.ops.losses import dice_loss, sigmoid_focal_loss
from cs_dense.ops.nms import batched_nms, nms, soft_nms
from cs_dense.ops.roi import bilinear_sample, boxes_to_rois, roi_align, roi_pool
from cs_dense.ops.upsample import (
    bed_of_nails_unpool,
    bilinear_kernel,
    conv2d_matrix,
    conv_transpose2d,
    conv_transpose2d_loop,
    max_unpool2d,
    nearest_unpool,
    overlap_counts,
)

__all__ = [
    "batched_nms",
    "bed_of_nails_unpool",
    "bilinear_kernel",
    "bilinear_sample",
    "box_area",
    "box_convert",
    "box_iou",
    "boxes_to_rois",
    "clip_boxes_to_image",
    "conv2d_matrix",
    "conv_transpose2d",
    "conv_transpose2d_loop",
    "dice_loss",
    "generalized_box_iou",
    "masks_to_boxes",
    "max_unpool2d",
    "nearest_unpool",
    "nms",
    "remove_small_boxes",
    "overlap_counts",
    "roi_align",
    "roi_pool",
    "sigmoid_focal_loss",
    "soft_nms",
]
