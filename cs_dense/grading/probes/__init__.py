"""The cross-check's probes of every notebook (see :mod:`cs_dense.grading.crosscheck`).

Each module covers one notebook and maps its grade cells' ids to probes: the graded
function or class, and cases whose expected answers come from the package's references
(each tested against torchvision, pycocotools, scipy or captum) or from a judge that
checks the properties every right answer has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cs_dense.grading.crosscheck import Probe
from cs_dense.grading.probes import (
    anchors_rpn,
    detr_matching,
    explain,
    iou_nms_map,
    mask_rcnn,
    roi_align,
    single_stage,
    tasks_and_data,
    unet_segmentation,
    upsampling,
)

#: ``{notebook: {grade_id: probes}}``.
BY_NOTEBOOK: Mapping[str, Mapping[str, Sequence[Probe]]] = {
    "00_tasks_and_data": tasks_and_data.PROBES,
    "01_upsampling": upsampling.PROBES,
    "02_unet_segmentation": unet_segmentation.PROBES,
    "03_iou_nms_map": iou_nms_map.PROBES,
    "04_anchors_rpn": anchors_rpn.PROBES,
    "05_roi_align": roi_align.PROBES,
    "06_single_stage": single_stage.PROBES,
    "07_detr_matching": detr_matching.PROBES,
    "08_mask_rcnn": mask_rcnn.PROBES,
    "09_explain": explain.PROBES,
}


def probes_for(grade_ids: Sequence[str]) -> dict[str, Sequence[Probe]]:
    """The probes of the given grade cells, in their order (cells without probes are left out)."""
    known = {grade_id: probes for notebook in BY_NOTEBOOK.values() for grade_id, probes in notebook.items()}
    return {grade_id: known[grade_id] for grade_id in grade_ids if grade_id in known}
