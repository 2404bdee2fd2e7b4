"""Non-maximum suppression: hard (``nms``, ``batched_nms``) and soft (``soft_nms``).

Conventions shared by every function here:

* Boxes are ``Tensor[N, 4]`` xyxy pixels, ``x1 <= x2`` and ``y1 <= y2``.
* A box is suppressed by a higher-scoring kept box when their IoU is *strictly greater*
  than ``iou_threshold`` (torchvision's rule); IoU exactly at the threshold survives.
* Candidates are visited in decreasing score; equal scores are visited in increasing
  index (a stable sort), so the lower index wins a tie. torchvision does not promise an
  order for ties; its CPU kernel agreed with this rule on 200 random tie-heavy inputs.
* Kept indices are ``int64``, sorted by decreasing score, on the device of ``boxes``.
* 16-bit boxes are handled in float32 (as torchvision's ``box_iou`` does; its CPU NMS
  refuses float16).

How ``nms`` is computed: the IoU arithmetic is torchvision's, so which boxes survive is
identical, but the greedy pass is organised in blocks of ``_BLOCK`` score-sorted boxes
so that it runs as a few large tensor operations instead of a loop over pairs. For each
block, (1) the boxes already kept in earlier blocks knock out the block members they
overlap (one ``[K, B]`` IoU), then (2) the greedy order inside the block is resolved
from its ``[B, B]`` suppression matrix by fixed-point iteration: "keep = alive and not
suppressed by any kept earlier member", repeated until nothing changes. Each box
depends only on boxes before it, so the update has exactly one fixed point, the greedy
answer, and reaches it in at most ``B`` rounds (usually 2-5; the same idea drives
Cluster-NMS, Zheng et al. 2021). Total IoU work is about ``K * N / 2 + N * B``, the same
order as the sequential algorithm, with no ``N x N`` matrix in memory, and it runs
unchanged on a GPU. How its speed compares with torchvision's C++ loop is measured by
``benchmarks/bench_boxes.py`` (figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cs_dense.ops.boxes import check_boxes, unchecked_box_iou, upcast
from cs_dense.validation import describe

# Boxes per block in the greedy pass. On CPU, 128..1024 all ran within 20% of each other
# at 1k-5k boxes; 256 keeps the [B, B] fixed-point work small and the block count low.
_BLOCK = 256

SOFT_NMS_METHODS = ("gaussian", "linear")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Repeatedly keep the highest-scoring remaining box and discard every remaining box
    whose IoU with it is greater than ``iou_threshold``.

    Args:
        boxes (Tensor[N, 4]): xyxy, pixels, floating point, ``x1 <= x2``, ``y1 <= y2``.
        scores (Tensor[N]): one score per box; higher is better.
        iou_threshold: discard boxes with IoU ``>`` this value (strict).

    Returns:
        Tensor[K] int64: indices of the kept boxes, by decreasing score (ties: lower
        index first).

    Raises:
        ValueError: on wrong shapes, non-floating boxes or an inverted box.
    """
    _check_nms_inputs(boxes, scores)
    return _greedy_nms(boxes, scores, iou_threshold, groups=None)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression run independently within each category.

    Boxes with different ``idxs`` never suppress each other. Implementation: sort by
    (category, score) so that each category is one contiguous run, then run the blocked
    pass of :func:`nms`, comparing each block only with kept boxes of its own category.
    It has no Python overhead per class, unlike a loop of ``nms`` over classes, and no
    rounding of large coordinates, unlike shifting each class to its own region of the
    plane; ``benchmarks/bench_boxes.py`` compares the three.

    Args:
        boxes (Tensor[N, 4]): xyxy, pixels, floating point, ``x1 <= x2``, ``y1 <= y2``.
        scores (Tensor[N]): one score per box.
        idxs (Tensor[N]): category (or image) of each box, integer.
        iou_threshold: discard boxes with IoU ``>`` this value within a category.

    Returns:
        Tensor[K] int64: indices of the kept boxes, by decreasing score (ties: lower
        index first) across all categories.

    Raises:
        ValueError: on wrong shapes, non-floating boxes or an inverted box.
    """
    _check_nms_inputs(boxes, scores)
    if not isinstance(idxs, Tensor) or idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
        shape = describe(idxs)
        raise ValueError(f"idxs must be a tensor of shape [{boxes.shape[0]}], got {shape}")
    return _greedy_nms(boxes, scores, iou_threshold, groups=idxs)


def _check_nms_inputs(boxes: Tensor, scores: Tensor) -> None:
    """Raise ``ValueError`` unless ``boxes`` and ``scores`` fit together."""
    check_boxes(boxes, "boxes")
    if not boxes.is_floating_point():
        raise ValueError(f"boxes must be floating point, got {boxes.dtype}")
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        shape = describe(scores)
        raise ValueError(f"scores must be a tensor of shape [{boxes.shape[0]}], got {shape}")


def _greedy_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, groups: Tensor | None) -> Tensor:
    """Sort, run the blocked greedy pass, map back to input indices in score order."""
    order = torch.sort(scores, descending=True, stable=True).indices  # [N]
    if groups is None:
        sorted_groups = None
    else:
        # group-major, score-minor: each group becomes one contiguous run
        order = order[torch.sort(groups[order], stable=True).indices]
        sorted_groups = groups[order]
    boxes = upcast(boxes)  # IoU is formed in 32 bits at least, so compare there
    threshold = _floor_in_dtype(iou_threshold, boxes.dtype)
    kept = order[_blocked_suppression(boxes[order], threshold, sorted_groups)]  # [K]
    if groups is not None:
        # back to decreasing score across groups, ties to the lower index
        kept = kept.sort().values
        kept = kept[torch.sort(scores[kept], descending=True, stable=True).indices]
    return kept


def _floor_in_dtype(value: float, dtype: torch.dtype) -> float:
    """The largest float32 (or float64, for float64 boxes) that is ``<= value``.

    torchvision compares a float32 IoU with the threshold in double precision. Comparing
    in float32 against ``float32(t)`` would differ when ``t`` rounds *up* (0.3 becomes
    0.30000001): an IoU equal to that float32 exceeds 0.3 but not itself. For any ``x``
    of the dtype, ``x > value`` iff ``x > floor(value)``, so the comparison can stay in
    the IoU's dtype and still agree with torchvision bit for bit.
    """
    kind = np.float64 if dtype == torch.float64 else np.float32  # IoUs are upcast to one of these
    rounded = kind(value)
    if float(rounded) > value:  # compare in double: NumPy would compare a float32 in float32
        rounded = np.nextafter(rounded, kind(-np.inf))
    return float(rounded)


def _blocked_suppression(boxes: Tensor, threshold: float, groups: Tensor | None) -> Tensor:
    """Greedy NMS on sorted boxes, block by block (see the module docstring).

    Args:
        boxes (Tensor[N, 4]): xyxy, sorted by decreasing score (within each group).
        threshold: suppress when IoU ``>`` this value.
        groups (Tensor[N] | None): category per box, sorted so each category is one
            contiguous run; only equal categories interact.

    Returns:
        Tensor[N] bool: whether each sorted box is kept.
    """
    N = boxes.shape[0]
    keep = torch.zeros(N, dtype=torch.bool, device=boxes.device)
    kept_boxes = boxes[:0]
    kept_groups = None if groups is None else groups[:0]
    for start in range(0, N, _BLOCK):
        block = boxes[start : start + _BLOCK]  # [B, 4]
        block_groups = None if groups is None else groups[start : start + _BLOCK]
        earlier, earlier_groups = _same_group_tail(kept_boxes, kept_groups, block_groups)
        if len(earlier):
            alive = ~_overlaps(earlier, block, threshold, earlier_groups, block_groups).any(dim=0)  # [B]
        else:
            alive = torch.ones(len(block), dtype=torch.bool, device=boxes.device)
        within = _overlaps(block, block, threshold, block_groups, block_groups).triu_(diagonal=1)  # [B, B]
        block_keep = _resolve_greedy(within, alive)
        keep[start : start + _BLOCK] = block_keep
        kept_boxes = torch.cat([kept_boxes, block[block_keep]])
        if groups is not None:
            kept_groups = torch.cat([kept_groups, block_groups[block_keep]])
    return keep


def _same_group_tail(
    kept_boxes: Tensor, kept_groups: Tensor | None, block_groups: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """The earlier kept boxes that can suppress members of the current block.

    Groups are contiguous and in order, so only the block's first group can have kept
    members in earlier blocks, and those form the tail of ``kept_boxes``.
    """
    if kept_groups is None:
        return kept_boxes, None
    n_same = int((kept_groups == block_groups[0]).sum())
    tail = kept_boxes.shape[0] - n_same
    return kept_boxes[tail:], kept_groups[tail:]


def _overlaps(
    boxes1: Tensor, boxes2: Tensor, threshold: float, groups1: Tensor | None, groups2: Tensor | None
) -> Tensor:
    """``[N, M]`` bool: IoU above ``threshold`` and (if given) the same group."""
    over = unchecked_box_iou(boxes1, boxes2) > threshold  # [N, M]
    if groups1 is not None:
        over &= groups1[:, None] == groups2  # [N, 1] against [M] -> [N, M]
    return over


def _resolve_greedy(suppresses: Tensor, alive: Tensor) -> Tensor:
    """Solve ``keep[i] = alive[i] and not any(keep[j] and suppresses[j, i] for j < i)``.

    Args:
        suppresses (Tensor[B, B] bool): strictly upper triangular; ``[j, i]`` means box
            ``j`` (higher score) would suppress box ``i``.
        alive (Tensor[B] bool): boxes not already suppressed from outside the block.

    Returns:
        Tensor[B] bool: the greedy keep mask, the unique fixed point of the update.
    """
    keep = alive
    while True:
        suppressed = (suppresses & keep[:, None]).any(dim=0)  # [B, B] -> [B]
        updated = alive & ~suppressed
        if torch.equal(updated, keep):
            return keep
        keep = updated


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
    iou_threshold: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of
    Code", ICCV 2017): instead of deleting boxes that overlap a kept box, lower their
    scores, so a second object hiding behind the first can still be detected.

    Repeatedly take the remaining box ``m`` with the highest current score, keep it, and
    rescale every other remaining box ``i`` with ``o = IoU(m, i)``:

    * ``"gaussian"`` (paper, Sec. 3): ``s_i <- s_i * exp(-o**2 / sigma)``, for all boxes;
      ``iou_threshold`` is unused.
    * ``"linear"``: ``s_i <- s_i * (1 - o)`` when ``o > iou_threshold``, else unchanged.
      The paper writes ``>=``; we use ``>`` like hard NMS and the authors' released code.

    A box whose current score is below ``score_threshold`` is dropped for good (this
    includes initial scores below it). Ties in current score go to the lower index. IoU
    follows :func:`cs_dense.ops.box_iou`. There is no torchvision counterpart.

    Args:
        boxes (Tensor[N, 4]): xyxy, pixels, ``x1 <= x2``, ``y1 <= y2``.
        scores (Tensor[N]): floating-point scores, higher is better.
        sigma: Gaussian width (the paper's 0.5 by default); must be ``> 0``.
        score_threshold: drop boxes whose decayed score falls below this.
        method: ``"gaussian"`` or ``"linear"``.
        iou_threshold: the linear method's ``N_t``.

    Returns:
        tuple[Tensor[K] int64, Tensor[K]]: kept indices and their decayed scores (dtype
        of ``scores``), in order of selection, which is decreasing decayed score.

    Raises:
        ValueError: on wrong shapes, non-floating scores, an inverted box, an unknown
            ``method`` or ``sigma <= 0``.
    """
    _check_nms_inputs(boxes, scores)
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got {scores.dtype}")
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"method must be one of {SOFT_NMS_METHODS}, got {method!r}")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    boxes = upcast(boxes)
    threshold = _floor_in_dtype(iou_threshold, boxes.dtype)
    current = scores.clone()
    alive = current >= score_threshold  # [N]
    kept: list[Tensor] = []
    while bool(alive.any()):
        best = torch.where(alive, current, float("-inf")).argmax()  # first maximum
        kept.append(best)
        alive[best] = False
        overlap = unchecked_box_iou(boxes[best, None], boxes)[0]  # [N]
        weight = _soft_weight(overlap, method, sigma, threshold).to(current.dtype)
        current = torch.where(alive, current * weight, current)
        alive &= current >= score_threshold
    keep = torch.stack(kept) if kept else torch.zeros(0, dtype=torch.long, device=boxes.device)
    return keep, current[keep]


def _soft_weight(overlap: Tensor, method: str, sigma: float, iou_threshold: float) -> Tensor:
    """Score multiplier for each box given its IoU with the box just kept."""
    if method == "gaussian":
        return torch.exp(-(overlap * overlap) / sigma)
    return torch.where(overlap > iou_threshold, 1 - overlap, torch.ones_like(overlap))
