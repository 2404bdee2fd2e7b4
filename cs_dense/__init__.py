"""cs_dense: the reference package of a notebook course on dense prediction.

Subpackages and modules:
    ops         boxes (formats, IoU, GIoU, clipping, mask to box), NMS (hard, batched, soft),
                upsampling (unpooling, transposed convolution, conv as a matrix), RoI Pool
                and RoI Align, the soft Dice loss, the sigmoid focal loss; torchvision's names
                and semantics
    metrics     matching, AP (VOC 2007, VOC 2010, COCO), COCO-style mAP/mAR equal to
                pycocotools; segmentation (confusion matrix, pixel accuracy, IoU, Dice)
    models      U-Net; a single-object localiser and its multitask loss; anchors, box
                coding, the RPN; the RoI head and a two-stage detector; YOLO, SSD and
                RetinaNet pieces and a single-stage detector; DETR's set matching and loss,
                a one-to-one detector without NMS and a small DETR; Mask R-CNN's mask
                targets, head, loss and pasting
    data        the synthetic shapes dataset, the detection-dict format, COCO export,
                VOC/COCO adapters for files the user already has
    grading     what notebook test cells call: ``check`` and strict comparisons that
                explain failures, guards (forbidden calls, time limits), the exercise registry
    course      nbgrader orchestration and the ``cs-dense`` command line
    train       device choice, seeding, autograde-aware budgets, shuffled batches, a
                time-boxed fit loop
    viz         drawing images, boxes, masks, curves
    validation  the argument checks every module shares, so error messages read alike

Conventions used throughout:

* Boxes are float ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` absolute pixels with
  ``x1 <= x2`` and ``y1 <= y2``; any other format is in the name (``boxes_cxcywh``).
  Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, so a mask occupying columns 3..7 has
  ``x1 = 3`` and ``x2 = 8``; pixel centres sit at ``+0.5``.
* Aspect ratio means height / width, except for SSD's default boxes
  (``models.single_stage.default_boxes``), which follow torchvision's ``DefaultBoxGenerator``:
  width / height.
* Bad arguments raise ``ValueError`` naming the argument and the value; empty inputs
  give empty outputs of the right shape.

Dimension letters:
    N, M   numbers of boxes (e.g. predictions and ground truths)
    K      number of kept or selected items
    B      batch size
    C      channels or classes
    H, W   height and width in pixels
    A      anchors per feature-map position
"""

__version__ = "0.1.0"
