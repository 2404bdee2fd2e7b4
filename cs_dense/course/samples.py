"""Sample submissions for ``cs-dense demo`` and the autograder's tests.

Three students per assignment, each derived from ``solutions/`` so they never drift:

* ``complete`` — the released notebook with every solution filled in: full marks.
* ``partial`` — the same with the realistic bugs listed in :data:`BUGS`: some tests fail.
* ``blank`` — the released notebook untouched: zero.

They are written to ``data/samples/<student>/<assignment>/<notebook>.ipynb`` by
``cs-dense samples``; a test fails when the committed files differ from a fresh run.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from cs_dense.course.layout import BEGIN_SOLUTION, END_SOLUTION, Course
from cs_dense.course.release import generate

SAMPLE_STUDENTS = ("complete", "partial", "blank")


@dataclass(frozen=True)
class Bug:
    """A realistic mistake planted in one solution cell of the ``partial`` sample.

    Attributes:
        cell: the ``grade_id`` of the solution cell.
        old: text of the solution that occurs exactly once in that cell.
        new: what it becomes.
        why: the mistake, in a student's terms.
    """

    cell: str
    old: str
    new: str
    why: str


#: Bugs of the ``partial`` samples, by assignment: mistakes students really make.
BUGS: dict[str, list[Bug]] = {
    "00_tasks_and_data": [
        Bug("masks_to_boxes", "x2 = width - cols.flip(-1).argmax(dim=1)", "x2 = width - 1 - cols.flip(-1).argmax(dim=1)",
            "x2 is the last occupied column (torchvision's convention), one pixel short of the course's"),
        Bug("localization_loss", "box = per_coordinate.mean()", "box = per_coordinate.sum(dim=1).mean()",
            "the box loss summed over the four coordinates instead of averaged, so lambda weighs it four times"),
    ],
    "01_upsampling": [
        Bug("max_unpool", "sh, sw = _pair(kernel_size if stride is None else stride)", "sh, sw = _pair(1 if stride is None else stride)",
            "the default stride taken as 1, as in a convolution, instead of the kernel size, as in pooling"),
        Bug("conv_transpose2d_loop", 'stamp = torch.einsum("bc,cokl->bokl", x[:, :, i, j], weight)',
            'stamp = torch.einsum("bc,cokl->bokl", x[:, :, i, j], weight.flip(2, 3))',
            "the kernel flipped before stamping, because 'a real convolution flips the kernel'"),
        Bug("conv_transpose2d", "kernels = weight.reshape(C_in, C_out * kH * kW).T",
            "kernels = weight.transpose(0, 1).reshape(C_out * kH * kW, C_in)",
            "channel axes swapped and then reshaped, which scrambles the kernels unless there is one channel"),
    ],
    "02_unet_segmentation": [
        Bug("confusion_matrix", "pairs = targets.reshape(-1).long() * num_classes + preds.reshape(-1).long()",
            "pairs = preds.reshape(-1).long() * num_classes + targets.reshape(-1).long()",
            "rows and columns swapped: predictions in the rows, the truth in the columns"),
        Bug("dice_loss", "dims = (0, 2, 3)", "dims = (2, 3)",
            "the Dice score averaged per image instead of summed over the whole batch"),
        Bug("unet_sizes", "sizes.append(sizes[-1] - 2 + 2 * padding)", "sizes.append(sizes[-1] - 1 + 2 * padding)",
            "an unpadded 3 x 3 convolution taken to trim one pixel in all instead of one on each side"),
    ],
    "03_iou_nms_map": [
        Bug("box_iou", "size = (bottom_right - top_left).clamp(min=0)", "size = (bottom_right - top_left + 1).clamp(min=0)",
            "the old VOC '+1' pixel width in the intersection while the areas use x2 - x1"),
        Bug("nms", "for i in order.tolist():", "for i in range(len(boxes)):",
            "the greedy pass visits boxes in index order instead of by decreasing score"),
        Bug("average_precision", "envelope = precision.flip(0).cummax(0).values.flip(0)", "envelope = precision",
            "AP from the raw precision, without the monotone envelope"),
    ],
    "04_anchors_rpn": [
        Bug("grid_anchors", "shifts = torch.stack([xs, ys, xs, ys], dim=-1)", "shifts = torch.stack([ys, xs, ys, xs], dim=-1)",
            "x and y swapped in the shifts: anchors land at (row, column) instead of (x, y)"),
        Bug("label_anchors", "labels[best >= high] = 1", "labels[best > high] = 1",
            "a strict threshold: an anchor at exactly IoU 0.7 is not positive"),
        Bug("rpn_loss", 'targets[positive], beta=1 / 9, reduction="sum") / count', "targets[positive], beta=1 / 9)",
            "the box loss averaged over the positives' coordinates instead of summed and divided by the sample size"),
    ],
    "05_roi_align": [
        Bug("bilinear_sample", "a, b = y - y0, x - x0", "a, b = x - x0, y - y0",
            "the row and column fractions mixed up"),
        Bug("roi_align", "offset = 0.5 if aligned else 0.0", "offset = 0.0",
            "aligned=True ignored: no half-pixel shift"),
        Bug("fast_rcnn_loss", 'reduction="sum") / K', 'reduction="sum") / max(len(foreground), 1)',
            "the box loss divided by the number of foreground proposals instead of all K sampled"),
    ],
    "06_single_stage": [
        Bug("yolo_targets", "order = torch.sort((w * h).flip(0), descending=True, stable=True).indices\n"
            "    for k in (len(boxes) - 1 - order).tolist():", "for k in range(len(boxes)):",
            "objects written in list order, so the last one of a cell wins instead of the smallest"),
        Bug("ssd_match", "matches[best >= iou_threshold] = best_object[best >= iou_threshold]",
            "matches[best > iou_threshold] = best_object[best > iou_threshold]",
            "IoU exactly 0.5 treated as background (> instead of >=)"),
        Bug("sigmoid_focal_loss", "loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss", "loss = alpha * loss",
            "alpha applied to every example: background gets 0.25 instead of 1 - alpha = 0.75"),
    ],
    "07_detr_matching": [
        Bug("matching_cost", "probs = logits.softmax(dim=1)[:, gt_labels]", "probs = logits.softmax(dim=1)[:, gt_labels - 1]",
            "class l read from column l - 1, as in DETR's layout, where column 0 is 'no object' here"),
        Bug("hungarian_matcher", "image_size, w_class, w_l1, w_giou))", "image_size, w_class, w_giou, w_l1))",
            "the L1 and GIoU weights passed in swapped order"),
        Bug("set_loss", "classification = F.cross_entropy(logits.reshape(B * N, columns), target_classes.reshape(-1), weight=weight)",
            "classification = F.cross_entropy(logits.reshape(B * N, columns), target_classes.reshape(-1), weight=weight,\n"
            "                                     reduction=\"sum\") / (B * N)",
            "the weighted cross-entropy divided by B * N instead of the sum of the weights"),
    ],
    "08_mask_rcnn": [
        Bug("project_masks_on_boxes", "sampling_ratio=-1, aligned=aligned)", "sampling_ratio=-1, aligned=False)",
            "the aligned flag ignored: always torchvision's half-pixel-shifted targets"),
        Bug("paste_masks_in_image", 'padding_mode="border", align_corners=False)', 'padding_mode="border", align_corners=True)',
            "grid_sample with align_corners=True: the outer cells' centres, not their edges, land on the box's edges"),
        Bug("mask_iou", "union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter", "union = a.sum(1)[:, None] + b.sum(1)[None, :]",
            "the union without subtracting the intersection (Dice's denominator, not IoU's)"),
    ],
    "09_explain": [
        Bug("grad_cam", "cam = F.relu((alpha * activations).sum(dim=1)).detach()", "cam = (alpha * activations).sum(dim=1).detach()",
            "the ReLU left out: regions that lower the score stay in the map as negative values"),
        Bug("guided_backprop", 'return (F.relu(grad_input[0] if rule == "guided" else grad_output[0]),)',
            'return (F.relu(grad_output[0] if rule == "guided" else grad_input[0]),)',
            "the two rules swapped: the lecture's 'keep only positive gradients' taken for guided backpropagation"),
        Bug("fgsm", "step = -epsilon if targeted else epsilon", "step = epsilon",
            "a targeted attack climbs the loss of the wanted labels instead of descending it"),
    ],
}


def _solution_code(source: str) -> str:
    """A solution cell as a student would have written it: the delimiters removed."""
    return "\n".join(line for line in source.split("\n") if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION))


def _fill(released: nbformat.NotebookNode, solutions: dict[str, str], bugs: list[Bug]) -> nbformat.NotebookNode:
    """Put the solution code (with ``bugs`` planted) into the released notebook's answer cells."""
    nb = nbformat.from_dict(released)
    pending = {bug.cell: [] for bug in bugs}
    for bug in bugs:
        pending[bug.cell].append(bug)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("solution"):
            continue
        code = _solution_code(solutions[meta["grade_id"]])
        for bug in pending.pop(meta["grade_id"], []):
            if code.count(bug.old) != 1:
                raise ValueError(
                    f"bug {bug.why!r}: {bug.old!r} occurs {code.count(bug.old)} times in cell {bug.cell!r}, not once"
                )
            code = code.replace(bug.old, bug.new)
        cell.source = code
    if pending:
        raise ValueError(f"bugs name cells that are not solution cells: {sorted(pending)}")
    return nb


def write_samples(course: Course, target: Path | None = None) -> list[Path]:
    """(Re)write the sample submissions of every assignment; return the notebooks written."""
    target = target or course.data / "samples"
    written = []
    for student in SAMPLE_STUDENTS:
        if (target / student).exists():
            shutil.rmtree(target / student)
    for assignment in course.assignments():
        with tempfile.TemporaryDirectory(prefix="cs_dense_samples_") as work:
            released_dir = generate(course, assignment, Path(work), with_db=False)
            for name in course.notebook_names(assignment):
                source = nbformat.read(course.solutions / assignment / f"{name}.ipynb", as_version=4)
                solutions = {
                    c.metadata["nbgrader"]["grade_id"]: c.source
                    for c in source.cells
                    if c.metadata.get("nbgrader", {}).get("solution")
                }
                released = nbformat.read(released_dir / f"{name}.ipynb", as_version=4)
                versions = {
                    "complete": _fill(released, solutions, []),
                    "partial": _fill(released, solutions, BUGS.get(assignment, [])),
                    "blank": released,
                }
                for student, nb in versions.items():
                    path = target / student / assignment / f"{name}.ipynb"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    nbformat.write(nb, path)
                    written.append(path)
    return written
