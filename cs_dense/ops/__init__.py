"""Box operations with torchvision's names and semantics: geometry and NMS.

Boxes are ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` absolute pixels unless a name says
otherwise (``boxes_cxcywh``); :func:`box_convert` moves between formats.
"""

from cs_dense.ops.boxes import box_area, box_convert, box_iou, generalized_box_iou
from cs_dense.ops.nms import batched_nms, nms, soft_nms

__all__ = [
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "generalized_box_iou",
    "nms",
    "soft_nms",
]
