"""What each graded exercise forbids, and which reference stands in for it.

Test cells name the exercise (``check(nms, ..., exercise="nms")``) instead of spelling
out dotted paths, so moving a function inside the package means editing this table, and
``tests/test_grading_registry.py`` fails at once if an entry no longer resolves.

Each entry lists:

* ``forbidden``: every function that would solve the exercise if called: the library
  function being re-implemented (under each public name that leads to a different
  object), its private workers, and the course's own reference.
* ``reference``: a drop-in reference with the student's signature, or ``None`` when the
  package's function has another signature; for a class the student writes, the
  package's class when its constructor takes the student's parameters (its ``__init__`` is
  then forbidden). Test cells of *later* exercises put it in the
  student's namespace while their function runs (``stand_in=["box_iou"]``), so one bug
  costs points once.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

_TORCHVISION_NMS = ("torchvision.ops.nms", "torch.ops.torchvision.nms")
_TRANSPOSED = (
    "torch.nn.functional.conv_transpose2d",
    "torch.conv_transpose2d",
    "torch.ops.aten.conv_transpose2d",
    "torch.nn.grad.conv2d_input",
    "torch.nn.ConvTranspose2d.forward",
    "torch.convolution",
    "torch._convolution",
    "torch.ops.aten.convolution",
    # the gradient of a convolution is a transposed convolution: no autograd either
    "torch.autograd.grad",
    "torch.autograd.backward",
    "torch.Tensor.backward",
    "torch.func.vjp",
    "torch.autograd.functional.vjp",
    "cs_dense.ops.conv_transpose2d",
    "cs_dense.ops.conv_transpose2d_loop",
)
# captum's gradient helpers, which every attribution method above calls
_CAPTUM_WORKERS = (
    "captum._utils.gradient.compute_gradients",
    "captum._utils.gradient.compute_layer_gradients_and_eval",
)


@dataclass(frozen=True)
class Exercise:
    """One graded function of one notebook."""

    notebook: str
    forbidden: tuple[str, ...]
    reference: str | None = None


EXERCISES: Mapping[str, Exercise] = {
    # 00 tasks and data
    "box_convert": Exercise(
        "00_tasks_and_data",
        (
            "torchvision.ops.box_convert",
            "torchvision.ops._box_convert._box_cxcywh_to_xyxy",
            "torchvision.ops._box_convert._box_xyxy_to_cxcywh",
            "torchvision.ops._box_convert._box_xywh_to_xyxy",
            "torchvision.ops._box_convert._box_xyxy_to_xywh",
            "cs_dense.ops.box_convert",
        ),
        "cs_dense.ops.box_convert",
    ),
    "masks_to_boxes": Exercise(
        "00_tasks_and_data", ("torchvision.ops.masks_to_boxes", "cs_dense.ops.masks_to_boxes"), "cs_dense.ops.masks_to_boxes"
    ),
    "localization_loss": Exercise("00_tasks_and_data", ("cs_dense.models.localization_loss",), "cs_dense.models.localization_loss"),
    # 01 upsampling
    "nearest_unpool": Exercise(
        "01_upsampling",
        ("torch.nn.functional.interpolate", "torch.nn.Upsample.forward", "cs_dense.ops.nearest_unpool"),
        "cs_dense.ops.nearest_unpool",
    ),
    "bed_of_nails_unpool": Exercise(
        "01_upsampling",
        ("torch.nn.functional.interpolate", "torch.nn.Upsample.forward", "cs_dense.ops.bed_of_nails_unpool"),
        "cs_dense.ops.bed_of_nails_unpool",
    ),
    "max_unpool2d": Exercise(
        "01_upsampling",
        (
            "torch.nn.functional.max_unpool2d",
            "torch._C._nn.max_unpool2d",
            "torch.ops.aten.max_unpool2d",
            "torch.nn.MaxUnpool2d.forward",
            "cs_dense.ops.max_unpool2d",
        ),
        "cs_dense.ops.max_unpool2d",
    ),
    "conv_transpose2d_loop": Exercise("01_upsampling", _TRANSPOSED, "cs_dense.ops.conv_transpose2d_loop"),
    "conv_transpose2d": Exercise("01_upsampling", _TRANSPOSED, "cs_dense.ops.conv_transpose2d"),
    "conv2d_matrix": Exercise(
        "01_upsampling",
        (
            "torch.nn.functional.conv2d",
            "torch.conv2d",
            "torch.nn.Conv2d.forward",
            "torch.autograd.functional.jacobian",
            "torch.func.jacrev",
            "torch.func.jacfwd",
            *_TRANSPOSED,
            "cs_dense.ops.conv2d_matrix",
        ),
        "cs_dense.ops.conv2d_matrix",
    ),
    # 02 U-Net
    "confusion_matrix": Exercise(
        "02_unet_segmentation", ("cs_dense.metrics.confusion_matrix",), "cs_dense.metrics.confusion_matrix"
    ),
    "per_class_iou": Exercise(
        "02_unet_segmentation",
        ("cs_dense.metrics.per_class_iou", "cs_dense.metrics.mean_iou", "cs_dense.metrics.dice"),
        "cs_dense.metrics.per_class_iou",
    ),
    "dice_loss": Exercise("02_unet_segmentation", ("cs_dense.ops.dice_loss",), "cs_dense.ops.dice_loss"),
    "unet_sizes": Exercise("02_unet_segmentation", ()),  # bookkeeping: nothing in a library solves it
    "UNet": Exercise(
        "02_unet_segmentation",
        ("cs_dense.models.UNet.__init__", "cs_dense.models.UNet.forward", "cs_dense.models.unet.double_conv"),
    ),
    # 03 IoU, NMS, mAP
    "box_iou": Exercise("03_iou_nms_map", ("torchvision.ops.box_iou", "cs_dense.ops.box_iou"), "cs_dense.ops.box_iou"),
    "nms": Exercise("03_iou_nms_map", (*_TORCHVISION_NMS, "cs_dense.ops.nms"), "cs_dense.ops.nms"),
    "batched_nms": Exercise(
        "03_iou_nms_map",
        (
            *_TORCHVISION_NMS,
            "torchvision.ops.batched_nms",
            "torchvision.ops.boxes._batched_nms_coordinate_trick",
            "torchvision.ops.boxes._batched_nms_vanilla",
            "cs_dense.ops.batched_nms",
        ),
        "cs_dense.ops.batched_nms",
    ),
    "match_detections": Exercise(
        "03_iou_nms_map",
        ("cs_dense.metrics.match_detections", "cs_dense.metrics.matching.greedy_match"),
        "cs_dense.metrics.match_detections",
    ),
    "precision_recall_curve": Exercise(
        "03_iou_nms_map", ("cs_dense.metrics.precision_recall_curve",), "cs_dense.metrics.precision_recall_curve"
    ),
    # the envelope is one line the exercise spells out, and the PR pictures draw it: not forbidden
    "average_precision": Exercise(
        "03_iou_nms_map",
        (
            "cs_dense.metrics.average_precision",
            "cs_dense.metrics.ap.interpolated_precision",
            "cs_dense.metrics.ap.area_under_envelope",
        ),
        "cs_dense.metrics.average_precision",
    ),
    "mean_average_precision": Exercise(
        "03_iou_nms_map",
        (
            "cs_dense.metrics.mean_average_precision",
            "cs_dense.metrics.coco.accumulate",
            "pycocotools.cocoeval.COCOeval.evaluate",
            "pycocotools.cocoeval.COCOeval.accumulate",
        ),
        "cs_dense.metrics.mean_average_precision",
    ),
    # 04 anchors and the RPN
    "base_anchors": Exercise(
        "04_anchors_rpn",
        ("cs_dense.models.base_anchors", "torchvision.models.detection.anchor_utils.AnchorGenerator.generate_anchors"),
        "cs_dense.models.base_anchors",
    ),
    "grid_anchors": Exercise(
        "04_anchors_rpn",
        (
            "cs_dense.models.grid_anchors",
            "cs_dense.models.AnchorGenerator.forward",
            "torchvision.models.detection.anchor_utils.AnchorGenerator.grid_anchors",
        ),
        "cs_dense.models.grid_anchors",
    ),
    "encode_boxes": Exercise(
        "04_anchors_rpn",
        (
            "cs_dense.models.BoxCoder.encode",
            "cs_dense.models.BoxCoder.decode",
            "torchvision.models.detection._utils.BoxCoder.encode_single",
            "torchvision.models.detection._utils.BoxCoder.decode_single",
        ),
    ),
    "label_anchors": Exercise(
        "04_anchors_rpn",
        ("cs_dense.models.match_anchors", "cs_dense.models.rpn_targets", "torchvision.models.detection._utils.Matcher.__call__"),
    ),
    "sample_anchors": Exercise(
        "04_anchors_rpn",
        ("cs_dense.models.sample_balanced", "torchvision.models.detection._utils.BalancedPositiveNegativeSampler.__call__"),
    ),
    "RPNHead": Exercise("04_anchors_rpn", ("cs_dense.models.RPNHead.forward", "torchvision.models.detection.rpn.RPNHead.forward")),
    "rpn_loss": Exercise(
        "04_anchors_rpn", ("cs_dense.models.rpn_loss", "torchvision.models.detection.rpn.RegionProposalNetwork.compute_loss")
    ),
    "select_proposals": Exercise(
        "04_anchors_rpn",
        ("cs_dense.models.select_proposals", "torchvision.models.detection.rpn.RegionProposalNetwork.filter_proposals"),
    ),
    # 05 RoI Pool and RoI Align
    "bilinear_sample": Exercise(
        "05_roi_align",
        ("cs_dense.ops.bilinear_sample", "torch.nn.functional.grid_sample", "torchvision.ops.roi_align"),
        "cs_dense.ops.bilinear_sample",
    ),
    "roi_pool": Exercise(
        "05_roi_align",
        ("torchvision.ops.roi_pool", "torchvision.ops.RoIPool.forward", "torch.ops.torchvision.roi_pool", "cs_dense.ops.roi_pool"),
        "cs_dense.ops.roi_pool",
    ),
    "roi_align": Exercise(
        "05_roi_align",
        (
            "torchvision.ops.roi_align",
            "torchvision.ops.RoIAlign.forward",
            "torch.ops.torchvision.roi_align",
            "torch.nn.functional.grid_sample",
            "cs_dense.ops.roi_align",
        ),
        "cs_dense.ops.roi_align",
    ),
    "fast_rcnn_loss": Exercise(
        "05_roi_align",
        ("torchvision.models.detection.roi_heads.fastrcnn_loss", "cs_dense.models.fast_rcnn_loss"),
        "cs_dense.models.fast_rcnn_loss",
    ),
    "postprocess_detections": Exercise(
        "05_roi_align",
        ("cs_dense.models.postprocess_detections", "torchvision.models.detection.roi_heads.RoIHeads.postprocess_detections"),
        "cs_dense.models.postprocess_detections",
    ),
    # 06 single-stage detectors
    "yolo_targets": Exercise("06_single_stage", ("cs_dense.models.yolo_targets",), "cs_dense.models.yolo_targets"),
    "yolo_loss": Exercise("06_single_stage", ("cs_dense.models.yolo_loss",), "cs_dense.models.yolo_loss"),
    "default_boxes": Exercise(
        "06_single_stage",
        (
            "cs_dense.models.default_boxes",
            "cs_dense.models.ssd_scales",
            "torchvision.models.detection.anchor_utils.DefaultBoxGenerator.forward",
            "torchvision.models.detection.anchor_utils.DefaultBoxGenerator._grid_default_boxes",
            "torchvision.models.detection.anchor_utils.DefaultBoxGenerator._generate_wh_pairs",
        ),
        "cs_dense.models.default_boxes",
    ),
    "ssd_match": Exercise(
        "06_single_stage",
        (
            "cs_dense.models.ssd_match",
            "cs_dense.models.match_anchors",
            "torchvision.models.detection._utils.SSDMatcher.__call__",
            "torchvision.models.detection._utils.Matcher.__call__",
        ),
        "cs_dense.models.ssd_match",
    ),
    "hard_negative_mining": Exercise(
        "06_single_stage", ("cs_dense.models.hard_negative_mining",), "cs_dense.models.hard_negative_mining"
    ),
    "ssd_loss": Exercise(
        "06_single_stage",
        ("cs_dense.models.ssd_loss", "torchvision.models.detection.ssd.SSD.compute_loss"),
        "cs_dense.models.ssd_loss",
    ),
    "sigmoid_focal_loss": Exercise(
        "06_single_stage",
        ("torchvision.ops.sigmoid_focal_loss", "cs_dense.ops.sigmoid_focal_loss"),
        "cs_dense.ops.sigmoid_focal_loss",
    ),
    "retinanet_loss": Exercise(
        "06_single_stage",
        (
            "cs_dense.models.retinanet_loss",
            "torchvision.models.detection.retinanet.RetinaNetHead.compute_loss",
            "torchvision.models.detection.retinanet.RetinaNetClassificationHead.compute_loss",
            "torchvision.models.detection.retinanet.RetinaNetRegressionHead.compute_loss",
        ),
        "cs_dense.models.retinanet_loss",
    ),
    # 07 set prediction
    "matching_cost": Exercise("07_detr_matching", ("cs_dense.models.matching_cost",), "cs_dense.models.matching_cost"),
    "hungarian": Exercise(
        "07_detr_matching",
        (
            "scipy.optimize.linear_sum_assignment",
            "scipy.sparse.csgraph.min_weight_full_bipartite_matching",
            "cs_dense.models.hungarian",
            "cs_dense.models.set_prediction._shortest_augmenting_path",
        ),
        "cs_dense.models.hungarian",
    ),
    "hungarian_matcher": Exercise(
        "07_detr_matching",
        ("cs_dense.models.hungarian_matcher", "scipy.optimize.linear_sum_assignment"),
        "cs_dense.models.hungarian_matcher",
    ),
    "set_loss": Exercise("07_detr_matching", ("cs_dense.models.set_loss",), "cs_dense.models.set_loss"),
    # 08 Mask R-CNN
    "project_masks_on_boxes": Exercise(
        "08_mask_rcnn",
        (
            "torchvision.models.detection.roi_heads.project_masks_on_boxes",
            "cs_dense.models.project_masks_on_boxes",
            "cs_dense.models.masks._project",
        ),
        "cs_dense.models.project_masks_on_boxes",
    ),
    "MaskHead": Exercise(
        "08_mask_rcnn",
        (
            "torchvision.models.detection.mask_rcnn.MaskRCNNHeads.__init__",
            # their forward is nn.Sequential's, which the student's head may use: not forbidden
            "torchvision.models.detection.mask_rcnn.MaskRCNNPredictor.__init__",
            "cs_dense.models.MaskHead.__init__",
            "cs_dense.models.MaskHead.forward",
        ),
        "cs_dense.models.MaskHead",
    ),
    "maskrcnn_loss": Exercise(
        "08_mask_rcnn",
        ("torchvision.models.detection.roi_heads.maskrcnn_loss", "cs_dense.models.maskrcnn_loss"),
        "cs_dense.models.maskrcnn_loss",
    ),
    "maskrcnn_inference": Exercise(
        "08_mask_rcnn",
        ("torchvision.models.detection.roi_heads.maskrcnn_inference", "cs_dense.models.maskrcnn_inference"),
        "cs_dense.models.maskrcnn_inference",
    ),
    "paste_masks_in_image": Exercise(
        "08_mask_rcnn",
        (
            "torchvision.models.detection.roi_heads.paste_masks_in_image",
            "torchvision.models.detection.roi_heads.paste_mask_in_image",
            "torchvision.models.detection.roi_heads._onnx_paste_masks_in_image_loop",
            "torchvision.models.detection.roi_heads._onnx_paste_mask_in_image",
            "cs_dense.models.paste_masks_in_image",
            "cs_dense.models.masks._paste_weights",
        ),
        "cs_dense.models.paste_masks_in_image",
    ),
    "mask_iou": Exercise("08_mask_rcnn", ("pycocotools.mask.iou", "cs_dense.models.mask_iou"), "cs_dense.models.mask_iou"),
    # 09 explaining a classifier: captum's implementations and their workers are the oracles
    "saliency_map": Exercise(
        "09_explain",
        ("captum.attr.Saliency.attribute", *_CAPTUM_WORKERS, "cs_dense.explain.saliency_map"),
        "cs_dense.explain.saliency_map",
    ),
    "class_activation_map": Exercise(
        "09_explain", ("cs_dense.explain.class_activation_map",), "cs_dense.explain.class_activation_map"
    ),
    "grad_cam": Exercise(
        "09_explain",
        (
            "captum.attr.LayerGradCam.attribute",
            "captum.attr.GuidedGradCam.attribute",
            *_CAPTUM_WORKERS,
            "cs_dense.explain.grad_cam",
            "cs_dense.explain.guided_grad_cam",
        ),
        "cs_dense.explain.grad_cam",
    ),
    "guided_backprop": Exercise(
        "09_explain",
        (
            "captum.attr.GuidedBackprop.attribute",
            "captum.attr.Deconvolution.attribute",
            "captum.attr._core.guided_backprop_deconvnet.ModifiedReluGradientAttribution.attribute",
            "captum.attr.GuidedGradCam.attribute",
            *_CAPTUM_WORKERS,
            "cs_dense.explain.guided_backprop",
            "cs_dense.explain.guided_grad_cam",
        ),
        "cs_dense.explain.guided_backprop",
    ),
    "guided_grad_cam": Exercise(
        "09_explain",
        ("captum.attr.GuidedGradCam.attribute", *_CAPTUM_WORKERS, "cs_dense.explain.guided_grad_cam"),
        "cs_dense.explain.guided_grad_cam",
    ),
    "fgsm": Exercise(
        "09_explain",
        ("captum.robust.FGSM.perturb", "captum.robust.PGD.perturb", *_CAPTUM_WORKERS, "cs_dense.explain.fgsm"),
        "cs_dense.explain.fgsm",
    ),
    "fooling_image": Exercise(
        "09_explain",
        (
            "captum.robust.FGSM.perturb",
            "captum.robust.PGD.perturb",
            *_CAPTUM_WORKERS,
            "cs_dense.explain.fooling_image",
            "cs_dense.explain.fgsm",
        ),
        "cs_dense.explain.fooling_image",
    ),
}


#: Exercises whose references this copy of the package does not hold: the student bundle
#: (``cs-dense bundle``) names here the exercises it stubs. A test cell's stand-in for one of
#: them is skipped, so the student's own function runs in its place.
UNRELEASED: frozenset[str] = frozenset()


def exercise(name: str) -> Exercise:
    """The registry entry of one exercise.

    Raises:
        ValueError: no exercise of that name (the message lists the known ones).
    """
    if name not in EXERCISES:
        raise ValueError(f"no graded exercise named {name!r}; known: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[name]


def forbidden(name: str) -> tuple[str, ...]:
    """The dotted names of the functions that exercise ``name`` may not call."""
    return exercise(name).forbidden


def resolve(dotted: str) -> object:
    """Import ``"package.module.attr.attr"``: the longest importable prefix, then attributes.

    Raises:
        ValueError: nothing importable, or a missing attribute (the message names it).
    """
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            thing = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                thing = getattr(thing, attr)
        except AttributeError as error:
            raise ValueError(f"cannot resolve {dotted!r}: {error}") from None
        return thing
    raise ValueError(f"cannot resolve {dotted!r}: no importable module in it")


def references(names: Iterable[str]) -> dict[str, Callable]:
    """``{name: reference}`` for stand-ins: each exercise's drop-in reference implementation.

    Exercises in :data:`UNRELEASED` are left out: the student's function stands for itself.

    Raises:
        ValueError: an exercise has no drop-in reference (its package function has another
            signature); pass ``stand_in`` as a dict with an adapter instead.
    """
    found = {}
    for name in names:
        if name in UNRELEASED:
            continue
        target = exercise(name).reference
        if target is None:
            raise ValueError(f"exercise {name!r} has no drop-in reference; give stand_in as a dict")
        found[name] = resolve(target)
    return found


def students_own(name: str) -> Callable[[Callable], Callable]:
    """Decorate a stub of the student bundle: it runs the student's own ``name``.

    In the bundle (``cs-dense bundle``) the package's version of an exercise not yet revealed
    is a stub that raises ``NotImplementedError``. A picture, a detector trained from the
    package's parts, or a later exercise that calls it runs instead the function ``name`` the
    student defined in the running notebook (its ``__main__``), with the arguments as given.
    Only exercises whose reference has the student's signature are decorated. Without such a
    function, the stub raises as before; so it does when the student's function calls the
    package's version, which would run the student's function again, and, naming the
    arguments, when the call does not fit the student's parameters.

    A class (its methods stubbed) is decorated the same way: building it builds the
    student's class of that name instead (``MaskRCNN`` then trains the student's
    ``MaskHead``). A subclass of the stub, and the student's class itself, are built as usual.
    """

    def own_of_main(kind: Callable[[object], bool]):
        own = getattr(sys.modules.get("__main__"), name, None)
        return own if kind(own) and getattr(own, "__module__", None) == "__main__" else None

    def fits(own: Callable, args: tuple, kwargs: dict) -> None:
        try:
            inspect.signature(own).bind(*args, **kwargs)
        except TypeError as error:
            given = [*(f"argument {k + 1}" for k in range(len(args))), *kwargs]
            raise NotImplementedError(f"the package calls {name} with {', '.join(given)}, and your {name} does not take "
                                      f"them ({error}): give it the parameters the exercise asks for") from None

    def again(what: str) -> str:
        return f"Your {name} {what} the package's {name}, which in this bundle is your {name} again"

    def decorate(stub: Callable) -> Callable:
        running = threading.local()
        if inspect.isclass(stub):
            def __new__(cls, *args, **kwargs):
                own = own_of_main(inspect.isclass) if cls is stub else None
                if own is None or issubclass(own, stub):
                    return super(stub, cls).__new__(cls)
                fits(own, args, kwargs)
                if getattr(running, "now", False):
                    raise NotImplementedError(again("builds"))
                running.now = True
                try:
                    return own(*args, **kwargs)  # not a stub: Python skips the stub's __init__
                finally:
                    running.now = False

            stub.__new__ = staticmethod(__new__)
            return stub

        @functools.wraps(stub)
        def own_or_stub(*args, **kwargs):
            own = own_of_main(inspect.isfunction)
            if own is None:
                return stub(*args, **kwargs)
            fits(own, args, kwargs)
            if getattr(running, "now", False):
                try:
                    return stub(*args, **kwargs)
                except NotImplementedError as error:
                    raise NotImplementedError(f"{error}. {again('calls')}") from None
            running.now = True
            try:
                return own(*args, **kwargs)
            finally:
                running.now = False

        return own_or_stub

    return decorate
