"""cs_dense: the reference package of a notebook course on dense prediction.

Subpackages:
    ops       box geometry and NMS (torchvision-compatible names and semantics),
              upsampling (unpooling, transposed convolution), the Dice loss
    metrics   detection (matching, AP, COCO-style mAP) and segmentation (confusion, mIoU, Dice)
    models    U-Net
    data      the synthetic shapes dataset, COCO export, real-dataset adapters
    grading   what notebook test cells call: strict checks with explanations, guards
    course    nbgrader orchestration and the ``cs-dense`` command line
    train     device choice, seeding, autograde-aware budgets, a time-boxed fit loop
    viz       drawing images, boxes, masks, curves

Conventions used throughout (see also ``shared/STYLE.md``):

* Boxes are float ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` absolute pixels with
  ``x1 <= x2`` and ``y1 <= y2``. Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, so a
  mask occupying columns 3..7 has ``x1 = 3`` and ``x2 = 8``.
* Aspect ratio means height / width.

Dimension letters:
    N, M   numbers of boxes (e.g. predictions and ground truths)
    K      number of kept or selected items
    B      batch size
    C      channels or classes
    H, W   height and width in pixels
    A      anchors per feature-map position
"""

__version__ = "0.1.0"
