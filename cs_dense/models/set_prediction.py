"""Set prediction as in DETR (Carion et al., "End-to-End Object Detection with Transformers",
ECCV 2020): a one-to-one matching between predictions and ground truths, and the loss on it.

DETR predicts a fixed set of ``N`` (class, box) pairs per image, more than there are
objects, with no anchors and no NMS. Training needs to know which prediction answers for
which object; DETR decides it per image by a minimum-cost bipartite matching:

* :func:`matching_cost` prices every (prediction, ground truth) pair: a class term, an L1
  term on normalised centres and sizes, and a GIoU term (section 3.1, eq. 1 - 2);
* :func:`hungarian` finds the assignment of least total cost (what DETR delegates to
  ``scipy.optimize.linear_sum_assignment``); :func:`greedy_match` is the obvious heuristic
  that it beats;
* :func:`hungarian_matcher` does both over a batch, without gradients (DETR's
  ``HungarianMatcher``);
* :func:`set_loss` is the loss given the matching (eq. 2; DETR's ``SetCriterion`` with its
  ``loss_labels`` and ``loss_boxes``): every unmatched prediction is trained towards "no
  object", every matched one towards its object's class and box.

Conventions, fixed here for the whole module:

* Class scores are ``Tensor[..., C + 1]`` logits over ``C`` object classes and "no object".
  **Column 0 is "no object" and column ``l`` is class ``l``** (``1..C``), as the course's
  labels (the shapes dataset has labels 1..3, 0 being background, and notebooks 05 and 06
  put background in column 0). DETR puts "no object" *last*, in column ``num_classes``,
  and uses dataset ids as columns as they are (COCO's ids run 1..90, so DETR's column 0 is
  a class that never occurs). DETR's logits for contiguous labels ``0..C-1`` become the
  ones here by moving the last column to the front: ``torch.cat([z[..., -1:], z[..., :-1]], -1)``;
  the softmax and every value below are unchanged by that permutation.
* Boxes, predicted and ground truth, are ``Tensor[..., 4]`` xyxy in pixels with
  ``x1 <= x2`` and ``y1 <= y2`` (DETR's head predicts sigmoid-normalised cxcywh; a model
  here converts at its edge). The L1 terms compare boxes in *normalised cxcywh*: centre and
  size divided by the image's width (x, w) and height (y, h), so every coordinate is in
  ``[0, 1]`` for a box inside the image, as DETR's. GIoU is computed on the pixel boxes: an
  axis-aligned scaling multiplies every area by the same factor, so GIoU does not change.
* ``image_size`` is ``(H, W)`` in pixels (one int for a square image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs_dense.models.single_stage import TOWER_GROUPS, conv_tower, prior_bias
from cs_dense.models.two_stage import BACKBONE_STRIDE, check_image_normalisation, small_backbone, stack_detector_images
from cs_dense.ops.boxes import box_convert, check_boxes, clip_boxes_to_image, generalized_box_iou
from cs_dense.ops.losses import sigmoid_focal_loss
from cs_dense.validation import Pair, check_int, check_pair, check_real, check_tensor, describe

#: DETR's weights (``main.py``: ``set_cost_*`` for the matching, ``*_loss_coef`` for the
#: loss, the same three numbers): class 1, L1 5, GIoU 2.
DETR_W_CLASS = 1.0
DETR_W_L1 = 5.0
DETR_W_GIOU = 2.0
#: DETR's ``eos_coef``: "no object" is by far the most common target (N - M of the N
#: predictions), so its cross-entropy counts a tenth (section 4).
DETR_NO_OBJECT_WEIGHT = 0.1


# --------------------------------------------------------------------------- checks


def _check_labels(labels: Tensor, name: str, count: int, num_classes: int) -> None:
    """``labels`` must be ``Tensor[count]`` int64 in ``1..num_classes``."""
    check_tensor(labels, name, ndim=1, shape=f"[{count}] (one label per box)", dtype=torch.int64)
    if labels.shape[0] != count:
        raise ValueError(f"{name} must have one label per box ({count}), got {describe(labels)}")
    if labels.numel() and (labels.min() < 1 or labels.max() > num_classes):
        bad = labels[(labels < 1) | (labels > num_classes)][0].item()
        raise ValueError(f"{name} must be object classes in 1..{num_classes} (column 0 of the logits is "
                         f"'no object'), got {bad}")


def _check_outputs(outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]]) -> tuple[int, int, int]:
    """Validate a batch's predictions and targets; return ``(B, N, C)``."""
    if not isinstance(outputs, Mapping) or "logits" not in outputs or "boxes" not in outputs:
        raise ValueError(f"outputs must be a dict with 'logits' and 'boxes', got {describe(outputs)}")
    logits, boxes = outputs["logits"], outputs["boxes"]
    check_tensor(logits, "outputs['logits']", ndim=3, shape="[B, N, C + 1]", floating=True)
    b, n, columns = logits.shape
    check_tensor(boxes, "outputs['boxes']", ndim=3, last=4, shape=f"[{b}, {n}, 4]", floating=True)
    if boxes.shape[:2] != (b, n) or columns < 2:
        raise ValueError(f"outputs['logits'] [B, N, C + 1] (C >= 1) and outputs['boxes'] [B, N, 4] must agree; "
                         f"got {describe(logits)} and {describe(boxes)}")
    check_boxes(boxes.reshape(-1, 4), "outputs['boxes']")
    _check_targets(targets, b, columns - 1)
    return b, n, columns - 1


def _check_targets(targets: Sequence[Mapping[str, Tensor]], b: int, num_classes: int) -> None:
    """``ValueError`` unless ``targets`` holds one ``{"boxes", "labels"}`` per image, labels in ``1..num_classes``."""
    if not isinstance(targets, Sequence) or len(targets) != b:
        raise ValueError(f"targets must be a list of one dict per image ({b}), got {describe(targets)}"
                         + (f" of length {len(targets)}" if isinstance(targets, Sequence) else ""))
    for i, target in enumerate(targets):
        if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels', got {describe(target)}")
        check_boxes(target["boxes"], f"targets[{i}]['boxes']")
        _check_labels(target["labels"], f"targets[{i}]['labels']", target["boxes"].shape[0], num_classes)


def _normalised_cxcywh(boxes: Tensor, height: int, width: int) -> Tensor:
    """xyxy pixels -> cxcywh divided by the image's ``(W, H, W, H)``."""
    scale = boxes.new_tensor([width, height, width, height])
    return box_convert(boxes, "xyxy", "cxcywh") / scale


# --------------------------------------------------------------------------- matching cost


def matching_cost(
    logits: Tensor,
    boxes: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    image_size: Pair,
    w_class: float = DETR_W_CLASS,
    w_l1: float = DETR_W_L1,
    w_giou: float = DETR_W_GIOU,
) -> Tensor:
    """DETR's matching cost between the ``N`` predictions and ``M`` ground truths of one image.

    Entry ``[i, j]`` prices answering ground truth ``j`` with prediction ``i``:

        ``- w_class * p_i(l_j) + w_l1 * |b_i - g_j|_1 - w_giou * GIoU(b_i, g_j)``

    * ``p_i(l_j)`` is the softmax probability (over all ``C + 1`` columns) that prediction
      ``i`` gives to ``j``'s class. DETR uses ``-p`` rather than the loss's ``-log p``, which
      keeps the class term on the scale of the box terms and worked better in its
      experiments (section 3.1); it approximates ``1 - p``, whose 1 changes no matching.
    * ``|b_i - g_j|_1`` sums the absolute differences of the four coordinates in normalised
      cxcywh (module docstring), so it is at most 4 for boxes inside the image.
    * ``GIoU`` (:func:`~cs_dense.ops.generalized_box_iou`) is in ``(-1, 1]``; for degenerate
      boxes (zero width or height) it stays finite: a pair whose enclosing box is empty gets
      0, never NaN.

    Lower is better. Ties are left to the assignment (:func:`hungarian`).

    Args:
        logits (Tensor[N, C + 1]): class scores; column 0 "no object", column ``l`` class ``l``.
        boxes (Tensor[N, 4]): predicted boxes, xyxy, pixels.
        gt_labels (Tensor[M] int64): classes in ``1..C``; moved to ``logits``' device.
        gt_boxes (Tensor[M, 4]): xyxy, pixels; moved to ``boxes``' device and dtype.
        image_size: ``(H, W)``, the normaliser of the L1 term.
        w_class, w_l1, w_giou: the weights, finite, ``>= 0`` (DETR: 1, 5, 2).

    Returns:
        Tensor[N, M]: differentiable; dtype the promotion of ``logits``' and ``boxes``' (at
        least float32); ``M = 0`` or ``N = 0`` gives an empty ``[N, M]``.

    Raises:
        ValueError: bad shapes or dtypes, an inverted box, a label out of ``1..C``, a bad
            ``image_size`` or weight.
    """
    check_tensor(logits, "logits", ndim=2, shape="[N, C + 1]", floating=True)
    n, columns = logits.shape
    if columns < 2:
        raise ValueError(f"logits must have C + 1 >= 2 columns ('no object' and at least one class), got {describe(logits)}")
    check_boxes(boxes, "boxes")
    if not boxes.is_floating_point() or boxes.shape[0] != n:
        raise ValueError(f"boxes must be a floating tensor of shape [{n}, 4] (one box per row of logits), got {describe(boxes)}")
    check_boxes(gt_boxes, "gt_boxes")
    _check_labels(gt_labels, "gt_labels", gt_boxes.shape[0], columns - 1)
    height, width = check_pair(image_size, "image_size", 1)
    for name, weight in (("w_class", w_class), ("w_l1", w_l1), ("w_giou", w_giou)):
        check_real(name, weight, 0.0)
    gt_boxes = gt_boxes.to(device=boxes.device, dtype=boxes.dtype)
    gt_labels = gt_labels.to(logits.device)

    cost_class = -logits.softmax(dim=1)[:, gt_labels]  # [N, M]
    pred, gt = _normalised_cxcywh(boxes, height, width), _normalised_cxcywh(gt_boxes, height, width)
    cost_l1 = (pred[:, None, :] - gt[None, :, :]).abs().sum(dim=2)  # [N, 1, 4] - [1, M, 4] -> [N, M]
    cost_giou = -generalized_box_iou(boxes, gt_boxes)  # [N, M]
    return w_class * cost_class + w_l1 * cost_l1 + w_giou * cost_giou


# --------------------------------------------------------------------------- assignment


def _check_cost(cost: Tensor) -> np.ndarray:
    """``cost`` as a float64 NumPy array on the CPU, or ``ValueError``."""
    check_tensor(cost, "cost", ndim=2, shape="[N, M]")
    if cost.dtype == torch.bool or cost.is_complex():
        raise ValueError(f"cost must hold real numbers, got {describe(cost)}")
    array = cost.detach().cpu().to(torch.float64).numpy()
    if np.isnan(array).any():
        raise ValueError(f"cost contains NaN in {int(np.isnan(array).sum())} of its {array.size} entries ({describe(cost)})")
    if np.isinf(array).any():
        raise ValueError(f"cost contains infinite values in {int(np.isinf(array).sum())} of its {array.size} entries "
                         f"({describe(cost)}); to forbid a pair give it a large finite cost instead")
    return array


def _shortest_augmenting_path(cost: np.ndarray) -> np.ndarray:
    """Column of each row of ``cost`` ``[n, m]``, ``n <= m``, in a minimum-cost assignment.

    Successive shortest augmenting paths with dual potentials (Jonker and Volgenant,
    "A shortest augmenting path algorithm for dense and sparse linear assignment problems",
    Computing 1987; the form of Crouse, "On implementing 2D rectangular assignment
    algorithms", IEEE TAES 2016, which scipy uses):

    Potentials ``u`` (rows) and ``v`` (columns) keep every reduced cost
    ``cost[i, j] - u[i] - v[j]`` non-negative and every assigned pair's at 0, so the current
    partial assignment is the cheapest of its size. Each free row then grows the assignment
    by one: Dijkstra over reduced costs finds the cheapest alternating path from it to a free
    column, the path is flipped, and the potentials move by the path lengths so the
    invariant holds again. After ``n`` rows it is optimal: the potentials prove it by LP
    duality. Columns never assigned keep ``v = 0`` and ``v`` only decreases, which is
    what the rectangular problem's dual asks (``v <= 0``, and 0 on unused columns).

    Start: ``u[i] = min_j cost[i, j]``, ``v = 0``, and each row takes its cheapest column
    if no earlier row took it (a tight pair). On random matrices this settles most rows
    before any path is searched.

    Each Dijkstra step relaxes all remaining columns at once (NumPy over ``m``), so one
    path costs ``O(m)`` vector operations and the whole ``O(n^2 m)`` arithmetic. On ties
    the lowest column index is scanned first, except that a free column is preferred
    (ending the path early, as scipy does).
    """
    n, m = cost.shape
    u = cost.min(axis=1)  # [n] row potentials
    v = np.zeros(m)  # [m] column potentials
    col4row = np.full(n, -1)
    row4col = np.full(m, -1)
    for i, j in enumerate(cost.argmin(axis=1)):
        if row4col[j] < 0:
            col4row[i], row4col[j] = j, i
    for start in np.flatnonzero(col4row < 0):
        distance = np.full(m, np.inf)  # [m] tentative path length to each unscanned column
        blocked = np.zeros(m)  # [m] inf on scanned columns, so relaxing never reopens them
        path = np.full(m, -1)  # [m] the row before each column on its shortest path
        free_cols = np.flatnonzero(row4col < 0)  # never scanned: reaching one ends the search
        scanned, lengths = [], []  # scanned assigned columns and their final path lengths
        row, reached = start, 0.0
        while True:
            relaxed = cost[row] - v  # [m]
            relaxed += (reached - u[row]) + blocked  # path length through row to every column
            better = relaxed < distance
            np.copyto(distance, relaxed, where=better)
            np.copyto(path, row, where=better)
            j = int(distance.argmin())
            reached = distance[j]
            if row4col[j] >= 0:  # prefer a free column at the same distance: the path ends there
                k = int(distance[free_cols].argmin())
                if distance[free_cols[k]] == reached:
                    j = int(free_cols[k])
            if row4col[j] < 0:
                sink = j
                break
            scanned.append(j)
            lengths.append(reached)
            distance[j] = blocked[j] = np.inf
            row = row4col[j]
        # potentials: every scanned column, and the row it leads to, moves by how much
        # shorter than the sink it was reached; reduced costs stay >= 0 and the path is tight
        scanned, lengths = np.array(scanned, dtype=np.int64), np.array(lengths)
        u[start] += reached
        u[row4col[scanned]] += reached - lengths
        v[scanned] -= reached - lengths
        # flip the path: walk back from the sink, each column taking the row before it
        j = sink
        while True:
            row = path[j]
            row4col[j] = row
            col4row[row], j = j, col4row[row]
            if row == start:
                break
    return col4row


def hungarian(cost: Tensor) -> tuple[Tensor, Tensor]:
    """A minimum-cost assignment of rows to columns: ``scipy.optimize.linear_sum_assignment``.

    Picks ``K = min(N, M)`` pairs ``(rows[k], cols[k])``, no row and no column twice, that
    minimise ``cost[rows, cols].sum()``; when ``N != M`` the leftover rows (columns) stay
    unassigned. Solved from scratch by shortest augmenting paths with potentials
    (Jonker-Volgenant, ``O(K^2 max(N, M))``; see ``_shortest_augmenting_path``), on the CPU
    in float64 whatever the input's device and dtype. A tall matrix is solved transposed.

    Ties: the total is always the minimum; which of several optimal assignments comes back
    is deterministic but may differ from scipy's.

    Args:
        cost (Tensor[N, M]): any real dtype, every entry finite and below about
            ``1e300 / (N + M)`` in magnitude (to forbid a pair, give it a cost larger than
            the sum of any full assignment's costs).

    Returns:
        ``(rows, cols)``: Tensor[K] int64 each, on ``cost``'s device, ``rows`` increasing (for
        ``N <= M`` it is ``0..N-1``). ``N = 0`` or ``M = 0`` gives two empty tensors.

    Raises:
        ValueError: ``cost`` is not a 2-d real tensor, or holds NaN, an infinite or a
            huge entry.
    """
    array = _check_cost(cost)
    n, m = array.shape
    # potentials and path lengths are sums and differences of up to n + m entries
    limit = np.finfo(np.float64).max / (4 * (n + m + 1))
    if array.size and np.abs(array).max() > limit:
        raise ValueError(f"cost's entries must be at most {limit:.3g} in magnitude, or float64 path lengths could "
                         f"overflow; got {np.abs(array).max():.3g}: rescale the costs")
    if n == 0 or m == 0:
        rows = cols = np.zeros(0, dtype=np.int64)
    elif n <= m:
        rows, cols = np.arange(n), _shortest_augmenting_path(array)
    else:  # solve the wide transpose: each column gets a row; then sort the pairs by row
        row_of_col = _shortest_augmenting_path(array.T)  # [m]
        cols = np.argsort(row_of_col)
        rows = row_of_col[cols]
    return _index_tensor(rows, cost.device), _index_tensor(cols, cost.device)


def _index_tensor(index: np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(index.astype(np.int64), device=device)


def greedy_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The greedy alternative to :func:`hungarian`: repeatedly take the cheapest remaining pair.

    The smallest entry is taken, its row and column are struck out, and so on until
    ``K = min(N, M)`` pairs are taken. Ties go to the lower row, then the lower column
    (row-major order). It is not optimal: on ``[[1, 2], [2, 100]]`` it takes 1 first and is
    left with 100 (total 101), where swapping gives 2 + 2 = 4.

    Args:
        cost (Tensor[N, M]): any real dtype, finite.

    Returns:
        ``(rows, cols)``: as :func:`hungarian`, rows increasing.

    Raises:
        ValueError: ``cost`` is not a 2-d real tensor, or holds NaN or an infinite entry.
    """
    array = _check_cost(cost)
    n, m = array.shape
    row_used, col_used = np.zeros(n, dtype=bool), np.zeros(m, dtype=bool)
    pairs = []
    for flat in np.argsort(array, axis=None, kind="stable"):  # stable: row-major among equals
        if len(pairs) == min(n, m):
            break
        i, j = divmod(int(flat), m)
        if not (row_used[i] or col_used[j]):
            row_used[i] = col_used[j] = True
            pairs.append((i, j))
    pairs = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)  # [K, 2]
    return _index_tensor(pairs[:, 0], cost.device), _index_tensor(pairs[:, 1], cost.device)


# --------------------------------------------------------------------------- batch matching and loss


@torch.no_grad()
def hungarian_matcher(
    outputs: Mapping[str, Tensor],
    targets: Sequence[Mapping[str, Tensor]],
    image_size: Pair,
    w_class: float = DETR_W_CLASS,
    w_l1: float = DETR_W_L1,
    w_giou: float = DETR_W_GIOU,
) -> list[tuple[Tensor, Tensor]]:
    """DETR's ``HungarianMatcher``: per image, :func:`hungarian` on :func:`matching_cost`.

    No gradient flows through the matching (it is a discrete choice; the loss that uses it
    is differentiable). DETR builds one ``[B * N, sum M]`` cost for the whole batch and
    slices each image's block out of it; here each image's ``[N, M]`` block is built alone,
    which gives the same blocks without the cross-image entries.

    Args:
        outputs: ``{"logits": Tensor[B, N, C + 1], "boxes": Tensor[B, N, 4]}``: class scores
            (column 0 "no object", column ``l`` class ``l``) and boxes, xyxy, pixels.
        targets: one dict per image: ``"boxes"`` Tensor[M, 4] xyxy pixels, ``"labels"``
            Tensor[M] int64 in ``1..C``; ``M`` may differ between images, and be 0.
        image_size: ``(H, W)`` of every image of the batch.
        w_class, w_l1, w_giou: the weights of :func:`matching_cost`.

    Returns:
        one ``(rows, cols)`` per image: Tensor[min(N, M)] int64 each, on the logits' device;
        prediction ``rows[k]`` answers ground truth ``cols[k]``; rows increasing.

    Raises:
        ValueError: a bad output or target (the message names it) or a bad weight.
    """
    _check_outputs(outputs, targets)
    return [
        hungarian(matching_cost(logits, boxes, target["labels"], target["boxes"], image_size, w_class, w_l1, w_giou))
        for logits, boxes, target in zip(outputs["logits"], outputs["boxes"], targets)
    ]


def _check_indices(indices: Sequence[tuple[Tensor, Tensor]], targets: Sequence[Mapping[str, Tensor]], n: int) -> None:
    if not isinstance(indices, Sequence) or len(indices) != len(targets):
        raise ValueError(f"indices must be a list of one (rows, cols) pair per image ({len(targets)}), got {describe(indices)}")
    for b, (pair, target) in enumerate(zip(indices, targets)):
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"indices[{b}] must be a (rows, cols) pair, got {describe(pair)}")
        rows, cols = pair
        check_tensor(rows, f"indices[{b}][0]", ndim=1, shape="[K]", dtype=torch.int64)
        check_tensor(cols, f"indices[{b}][1]", ndim=1, shape="[K]", dtype=torch.int64)
        m = target["boxes"].shape[0]
        if cols.shape != rows.shape:
            raise ValueError(f"indices[{b}] must have as many rows as cols, got {describe(rows)} and {describe(cols)}")
        sides = ((f"indices[{b}][0]", rows, n, "predictions"), (f"indices[{b}][1]", cols, m, "ground truths"))
        for name, index, size, of in sides:
            if index.numel() and (index.min() < 0 or index.max() >= size):
                raise ValueError(f"{name} must index the {size} {of} of image {b}, got values in "
                                 f"{index.min().item()}..{index.max().item()}")
            if index.unique().numel() != index.numel():
                raise ValueError(f"{name} repeats an index: a matching uses each of the {of} at most once")


def _box_terms(pred: Tensor, gt: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Summed L1 on normalised cxcywh and summed ``1 - GIoU`` of one image's matched pairs
    (``pred[k]`` answers ``gt[k]``, Tensor[K, 4] each): the box terms of the set losses before
    weighting and normalising. One image's ``[K, K]`` GIoU matrix at a time, so a large batch
    never forms a ``[sum K, sum K]`` one."""
    l1 = (_normalised_cxcywh(pred, height, width) - _normalised_cxcywh(gt, height, width)).abs().sum()
    return l1, (1 - generalized_box_iou(pred, gt).diagonal()).sum()


def set_loss(
    outputs: Mapping[str, Tensor],
    targets: Sequence[Mapping[str, Tensor]],
    indices: Sequence[tuple[Tensor, Tensor]],
    image_size: Pair,
    no_object_weight: float = DETR_NO_OBJECT_WEIGHT,
    w_class: float = DETR_W_CLASS,
    w_l1: float = DETR_W_L1,
    w_giou: float = DETR_W_GIOU,
) -> dict[str, Tensor]:
    """DETR's set loss given a matching: ``SetCriterion``'s ``loss_labels`` and ``loss_boxes``,
    each multiplied by its weight, so ``sum(loss.values())`` is DETR's training loss.

    * ``"classification"``: ``w_class`` times the cross-entropy of all ``B * N`` predictions.
      A matched prediction's target is its ground truth's label, every other one's is 0
      ("no object"). Class 0's terms are weighted ``no_object_weight`` and the others' 1,
      and, as ``F.cross_entropy`` with ``weight`` does, the weighted sum is divided by the
      **sum of the weights** of the targets (not by ``B * N``, and not per image): with ``P``
      matched predictions, by ``P + no_object_weight * (B * N - P)``.
    * ``"l1"``: ``w_l1`` times the summed absolute differences, over matched pairs and the
      four coordinates, of the boxes in normalised cxcywh (module docstring), divided by
      ``max(1, number of ground truths in the batch)``.
    * ``"giou"``: ``w_giou`` times the sum of ``1 - GIoU`` over matched pairs, divided by the
      same number.

    The box terms are normalised by the number of ground truths, not of matched pairs: the
    two agree whenever ``N >= M`` for every image, as DETR assumes (``N = 100`` queries on
    COCO, more than the objects of almost any image). Pass ``w_class = w_l1 = w_giou = 1`` for the raw terms.

    Args:
        outputs: ``{"logits": Tensor[B, N, C + 1], "boxes": Tensor[B, N, 4]}`` as for
            :func:`hungarian_matcher`; the loss is differentiable with respect to both.
        targets: as for :func:`hungarian_matcher`.
        indices: per image ``(rows, cols)``, Tensor[K] int64 each (prediction ``rows[k]``
            answers ground truth ``cols[k]``), as :func:`hungarian_matcher` returns them.
        image_size: ``(H, W)`` of every image of the batch.
        no_object_weight: the weight of class 0 in the cross-entropy, ``> 0`` (at 0 a batch
            without objects would divide 0 by 0); DETR's 0.1.
        w_class, w_l1, w_giou: the weights of the three terms, ``>= 0``.

    Returns:
        ``{"classification": Tensor[], "l1": Tensor[], "giou": Tensor[]}`` in the logits' and
        boxes' dtypes.

    Raises:
        ValueError: a bad output, target or matching (the message names it), a bad weight.
    """
    b, n, num_classes = _check_outputs(outputs, targets)
    _check_indices(indices, targets, n)
    height, width = check_pair(image_size, "image_size", 1)
    check_real("no_object_weight", no_object_weight, 0.0, open_low=True)
    for name, weight in (("w_class", w_class), ("w_l1", w_l1), ("w_giou", w_giou)):
        check_real(name, weight, 0.0)
    logits, boxes = outputs["logits"], outputs["boxes"]
    device = boxes.device

    target_classes = torch.zeros(b, n, dtype=torch.int64, device=logits.device)  # 0: no object
    l1, giou = boxes.new_zeros(()), boxes.new_zeros(())
    for image, ((rows, cols), target) in enumerate(zip(indices, targets)):
        rows, cols = rows.to(device), cols.to(device)
        target_classes[image, rows.to(logits.device)] = target["labels"].to(logits.device)[cols.to(logits.device)]
        pred = boxes[image, rows]  # [K, 4]
        gt = target["boxes"].to(device=device, dtype=boxes.dtype)[cols]  # [K, 4]
        image_l1, image_giou = _box_terms(pred, gt, height, width)
        l1, giou = l1 + image_l1, giou + image_giou
    class_weight = logits.new_ones(num_classes + 1)
    class_weight[0] = no_object_weight
    classification = F.cross_entropy(logits.flatten(0, 1), target_classes.flatten(), weight=class_weight)
    num_boxes = max(1, sum(int(target["boxes"].shape[0]) for target in targets))
    return {"classification": w_class * classification, "l1": w_l1 * l1 / num_boxes, "giou": w_giou * giou / num_boxes}


# --------------------------------------------------------------------------- a detector without NMS


@dataclass(frozen=True)
class OneToOneConfig:
    """Settings of :class:`OneToOneDetector` for the shapes images.

    Attributes:
        num_classes: classes including background (4 for the shapes); the head has
            ``num_classes - 1`` sigmoid outputs per position.
        channels, width: of the backbone (:func:`~cs_dense.models.small_backbone`).
        tower_depth: conv + GroupNorm + ReLU layers of each tower.
        prior_probability: the class bias starts at ``-log((1 - p) / p)``.
        w_class, w_l1, w_giou: the matching cost's weights; ``w_class = 0`` is the
            location-only ablation. The loss uses ``w_l1`` and ``w_giou`` too.
        alpha, gamma: of the focal loss on the classes, and of the matching cost's class term.
        score_thresh, detections_per_img: inference keeps the positions whose best class
            scores above the threshold, at most that many, with no NMS.
        box_scale: the distances to the box sides are ``relu(output) * box_scale`` pixels.
    """

    num_classes: int = 4
    channels: int = 64
    width: int = 32
    tower_depth: int = 2
    prior_probability: float = 0.01
    w_class: float = 2.0
    w_l1: float = DETR_W_L1
    w_giou: float = DETR_W_GIOU
    alpha: float = 0.25
    gamma: float = 2.0
    score_thresh: float = 0.05
    detections_per_img: int = 100
    box_scale: float = 16.0
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        check_int("num_classes", self.num_classes, 2)
        for name in ("channels", "width", "detections_per_img"):
            check_int(name, getattr(self, name), 1)
        if self.channels % TOWER_GROUPS:
            raise ValueError(f"channels must be a multiple of {TOWER_GROUPS} (the towers' GroupNorm groups), got {self.channels}")
        check_int("tower_depth", self.tower_depth, 0)
        prior_bias(self.prior_probability)  # validates
        for name in ("w_class", "w_l1", "w_giou", "gamma"):
            check_real(name, getattr(self, name), 0.0)
        check_real("alpha", self.alpha, None, 1.0)
        check_real("score_thresh", self.score_thresh, 0.0, 1.0)
        check_real("box_scale", self.box_scale, 0.0, open_low=True)
        check_image_normalisation(self.image_mean, self.image_std)


class OneToOneDetector(nn.Module):
    """One prediction per position of the stride-8 map, trained one-to-one (OneNet-style).

    Each position predicts ``K`` sigmoid class scores and the distances from its centre to
    the four sides of a box. Training matches every object to exactly one position by
    :func:`hungarian` on :meth:`cost` (OneNet's: a focal-shaped class term, L1 and GIoU),
    then applies the focal loss to every (position, class) with target 1 only at the
    matched ones, and L1 + GIoU to the matched boxes, all divided by the number of objects.
    Inference needs no NMS.
    """

    def __init__(self, config: OneToOneConfig = OneToOneConfig()):
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes - 1
        self.backbone = small_backbone(config.channels, config.width)
        self.class_tower = conv_tower(config.channels, config.tower_depth, self.num_classes)
        self.box_tower = conv_tower(config.channels, config.tower_depth, 4)
        nn.init.constant_(self.class_tower[-1].bias, prior_bias(config.prior_probability))
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    def head(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits [B, P, K] and boxes [B, P, 4] (xyxy pixels), P positions row-major."""
        feature = self.backbone((batch - self.mean) / self.std)
        b, _, fh, fw = feature.shape
        stride_y, stride_x = batch.shape[2] / fh, batch.shape[3] / fw
        ys, xs = torch.meshgrid(torch.arange(fh, device=batch.device), torch.arange(fw, device=batch.device), indexing="ij")
        centres = torch.stack([(xs.flatten() + 0.5) * stride_x, (ys.flatten() + 0.5) * stride_y], dim=1)  # [P, 2]
        logits = self.class_tower(feature).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes)
        sides = F.relu(self.box_tower(feature).permute(0, 2, 3, 1).reshape(b, -1, 4)) * self.config.box_scale
        boxes = torch.cat([centres - sides[..., :2], centres + sides[..., 2:]], dim=-1)
        return logits, boxes

    def cost(self, logits: Tensor, boxes: Tensor, target: Mapping[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        """The matching cost [P, M] of one image's P predictions (logits [P, K], boxes [P, 4])
        against its M objects: ``w_class * class + w_l1 * L1 - w_giou * GIoU``, L1 on
        normalised cxcywh as :func:`matching_cost`, and OneNet's focal-shaped class term
        ``alpha (1 - p)^gamma (-log p) - (1 - alpha) p^gamma (-log(1 - p))`` with ``p`` the
        sigmoid probability of the object's class: what the focal loss would lose if the
        position became a positive of that class instead of a negative."""
        c = self.config
        height, width = image_size
        gt = target["boxes"].to(boxes.dtype)
        x = logits[:, target["labels"] - 1]  # [P, M]
        p = torch.sigmoid(x)
        positive = c.alpha * (1 - p) ** c.gamma * F.softplus(-x)  # -log p = softplus(-x)
        negative = (1 - c.alpha) * p**c.gamma * F.softplus(x)  # -log(1 - p) = softplus(x)
        l1 = (_normalised_cxcywh(boxes, height, width)[:, None] - _normalised_cxcywh(gt, height, width)[None]).abs().sum(-1)
        return c.w_class * (positive - negative) + c.w_l1 * l1 - c.w_giou * generalized_box_iou(boxes, gt)

    @torch.no_grad()
    def match(self, logits: Tensor, boxes: Tensor, targets: Sequence[Mapping[str, Tensor]], image_size: tuple[int, int]):
        """Per image, (rows, cols) of :func:`hungarian` on :meth:`cost`: position ``rows[k]`` answers object ``cols[k]``."""
        return [hungarian(self.cost(logit, box, target, image_size)) for logit, box, target in zip(logits, boxes, targets)]

    def forward(self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        batch = stack_detector_images(images, BACKBONE_STRIDE)
        size = tuple(batch.shape[-2:])
        logits, boxes = self.head(batch)
        if self.training:
            c = self.config
            _check_targets(targets, batch.shape[0], self.num_classes)
            indices = self.match(logits, boxes, targets, size)
            one_hot = torch.zeros_like(logits)
            l1 = giou = boxes.new_zeros(())
            for n, ((rows, cols), target) in enumerate(zip(indices, targets)):
                one_hot[n, rows, target["labels"][cols] - 1] = 1
                image_l1, image_giou = _box_terms(boxes[n, rows], target["boxes"][cols].to(boxes.dtype), *size)
                l1, giou = l1 + image_l1, giou + image_giou
            num = max(1, sum(len(t["boxes"]) for t in targets))
            focal = sigmoid_focal_loss(logits, one_hot, c.alpha, c.gamma, reduction="sum")
            return {"classification": focal / num, "l1": c.w_l1 * l1 / num, "giou": c.w_giou * giou / num}
        detections = []
        for logit, box in zip(logits, boxes):
            scores, labels = torch.sigmoid(logit).max(dim=1)
            keep = torch.nonzero(scores > self.config.score_thresh).flatten()
            keep = keep[scores[keep].argsort(descending=True)][: self.config.detections_per_img]
            detections.append({"boxes": clip_boxes_to_image(box[keep], size), "scores": scores[keep], "labels": labels[keep] + 1})
        return detections


# --------------------------------------------------------------------------- a small DETR


def sine_positions(height: int, width: int, dim: int, device: torch.device | None = None) -> Tensor:
    """A fixed 2-D position code for a ``height x width`` map: Tensor[height * width, dim], row-major.

    The first half of the channels encodes the row, the second the column; each half holds
    sines and cosines of the position (scaled to ``[0, 2 pi]``) at ``dim / 4`` frequencies
    ``10000^(-k / (dim / 4))``, as DETR's ``PositionEmbeddingSine`` with ``normalize=True``
    (which interleaves sines and cosines; the order of channels does not matter to a model).
    """
    if dim % 4 or dim <= 0:
        raise ValueError(f"dim must be a positive multiple of 4, got {dim}")
    quarter = dim // 4
    frequencies = 10000.0 ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * torch.pi
    cols = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * torch.pi
    y = rows[:, None] * frequencies  # [H, dim / 4]
    x = cols[:, None] * frequencies  # [W, dim / 4]
    y_code = torch.cat([y.sin(), y.cos()], dim=1)[:, None, :].expand(height, width, dim // 2)
    x_code = torch.cat([x.sin(), x.cos()], dim=1)[None, :, :].expand(height, width, dim // 2)
    return torch.cat([y_code, x_code], dim=2).reshape(height * width, dim)


@dataclass(frozen=True)
class SmallDetrConfig:
    """Settings of :class:`SmallDetr` for the shapes images.

    Attributes:
        num_classes: classes including "no object" (4 for the shapes: column 0 and 1..3).
        channels, width: of the backbone (:func:`~cs_dense.models.small_backbone`).
        hidden, heads, feedforward: the transformer's width, attention heads and MLP width.
        encoder_layers, decoder_layers: DETR has 6 and 6; 0 encoder layers is allowed.
        num_queries: the size of the predicted set (DETR: 100 on COCO).
        no_object_weight, w_class, w_l1, w_giou: of :func:`hungarian_matcher` and :func:`set_loss`.
        score_thresh, image_mean, image_std: inference keeps the queries whose best object
            class scores above the threshold (no NMS); the input normalisation.
    """

    num_classes: int = 4
    channels: int = 64
    width: int = 32
    hidden: int = 64
    heads: int = 4
    feedforward: int = 128
    encoder_layers: int = 0
    decoder_layers: int = 3
    num_queries: int = 12
    no_object_weight: float = DETR_NO_OBJECT_WEIGHT
    w_class: float = DETR_W_CLASS
    w_l1: float = DETR_W_L1
    w_giou: float = DETR_W_GIOU
    score_thresh: float = 0.05
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        check_int("num_classes", self.num_classes, 2)
        for name in ("channels", "width", "hidden", "heads", "feedforward", "decoder_layers", "num_queries"):
            check_int(name, getattr(self, name), 1)
        check_int("encoder_layers", self.encoder_layers, 0)
        if self.hidden % 4 or self.hidden % self.heads:
            raise ValueError(f"hidden must be a multiple of 4 (the position code) and of heads ({self.heads}), got {self.hidden}")
        check_real("no_object_weight", self.no_object_weight, 0.0, open_low=True)
        for name in ("w_class", "w_l1", "w_giou"):
            check_real(name, getattr(self, name), 0.0)
        check_real("score_thresh", self.score_thresh, 0.0, 1.0)
        check_image_normalisation(self.image_mean, self.image_std)


class SmallDetr(nn.Module):
    """DETR at the scale of the shapes: the stride-8 backbone, a 1 x 1 projection to ``hidden``
    channels plus :func:`sine_positions`, an optional transformer encoder, a transformer decoder
    whose ``num_queries`` learned queries attend to the map, and per query a linear class
    layer (``C + 1`` logits, column 0 "no object") and a 3-layer MLP to a sigmoid-normalised
    cxcywh box, returned as xyxy pixels.

    Simplifications against DETR: the position code and the queries are added to the input
    once, not inside every attention layer; no auxiliary losses at intermediate decoder
    layers; no dropout. ``head(batch)`` gives ``{"logits", "boxes"}`` (the input of
    :func:`hungarian_matcher`); ``forward(images, targets)`` in training mode returns
    :func:`set_loss` on :func:`hungarian_matcher`'s matching, in eval mode one
    ``{"boxes", "scores", "labels"}`` per image without NMS.
    """

    def __init__(self, config: SmallDetrConfig = SmallDetrConfig()):
        super().__init__()
        self.config = config
        self.backbone = small_backbone(config.channels, config.width)
        self.project = nn.Conv2d(config.channels, config.hidden, 1)
        self.queries = nn.Embedding(config.num_queries, config.hidden)
        encoder_layer = nn.TransformerEncoderLayer(config.hidden, config.heads, config.feedforward, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(encoder_layer, config.encoder_layers, enable_nested_tensor=False) if config.encoder_layers else None
        decoder_layer = nn.TransformerDecoderLayer(config.hidden, config.heads, config.feedforward, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(decoder_layer, config.decoder_layers)
        self.class_layer = nn.Linear(config.hidden, config.num_classes)
        self.box_mlp = nn.Sequential(nn.Linear(config.hidden, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.hidden),
                                     nn.ReLU(), nn.Linear(config.hidden, 4))
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    def head(self, batch: Tensor) -> dict[str, Tensor]:
        """``{"logits": Tensor[B, N, C + 1], "boxes": Tensor[B, N, 4]}`` (xyxy pixels) of a batch [B, 3, H, W]."""
        feature = self.project(self.backbone((batch - self.mean) / self.std))
        b, d, fh, fw = feature.shape
        memory = feature.flatten(2).transpose(1, 2) + sine_positions(fh, fw, d, batch.device)  # [B, HW, d]
        if self.encoder is not None:
            memory = self.encoder(memory)
        states = self.decoder(self.queries.weight.expand(b, -1, -1), memory)  # [B, N, d]
        height, width = batch.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=states.dtype, device=states.device)
        boxes = box_convert(torch.sigmoid(self.box_mlp(states)) * scale, "cxcywh", "xyxy")
        return {"logits": self.class_layer(states), "boxes": boxes}

    def forward(self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        batch = stack_detector_images(images, BACKBONE_STRIDE)
        outputs = self.head(batch)
        size = tuple(batch.shape[-2:])
        c = self.config
        if self.training:
            indices = hungarian_matcher(outputs, targets, size, c.w_class, c.w_l1, c.w_giou)
            return set_loss(outputs, targets, indices, size, c.no_object_weight, c.w_class, c.w_l1, c.w_giou)
        detections = []
        for logits, boxes in zip(outputs["logits"], outputs["boxes"]):
            scores, labels = logits.softmax(dim=-1)[:, 1:].max(dim=1)
            keep = torch.nonzero(scores > c.score_thresh).flatten()
            keep = keep[scores[keep].argsort(descending=True)]
            detections.append({"boxes": clip_boxes_to_image(boxes[keep], size), "scores": scores[keep], "labels": labels[keep] + 1})
        return detections
