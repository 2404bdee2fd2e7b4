"""Region-of-interest pooling: a fixed-size feature grid cut out of a feature map per box.

The operations of course notebook 05, with the names, arguments and results of
``torchvision.ops.roi_align`` and ``torchvision.ops.roi_pool`` (the tests prove
agreement), written in plain PyTorch and vectorised over boxes and bins.

Coordinates. A box ``(x1, y1, x2, y2)`` is given in image pixels and multiplied by
``spatial_scale`` (1/8 for a stride-8 feature map) to land on the feature map. Feature
value ``[i, j]`` is then treated as sitting at the point ``(x, y) = (j, i)``.

* **RoI Pool** (Fast R-CNN) rounds the scaled corners to whole cells, splits the
  rounded box into ``ph x pw`` bins with ``floor``/``ceil`` edges and takes the
  maximum of each bin. Both roundings move the pooled region by up to half a feature
  cell -- four image pixels at stride 8 -- so the pooled features no longer line up
  with the box, which costs localisation accuracy (Mask R-CNN, He et al. 2017, sec. 3).
* **RoI Align** (Mask R-CNN) keeps the coordinates continuous: each bin is sampled on a
  regular ``s x s`` grid of points, each point is read by bilinear interpolation
  (:func:`bilinear_sample`) and the bin is the mean of its samples.
* ``aligned`` fixes a half-pixel slip in the original RoI Align. Under the course's
  convention (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, its centre is at
  ``(j + 0.5, i + 0.5)``) a continuous box coordinate ``u`` falls at index ``u - 0.5``
  of the feature grid, whose values sit at integers. ``aligned=True`` subtracts that 0.5 after
  scaling, so a box ``(0, 0, 1, 1)`` samples around cell ``(0, 0)``'s centre; the legacy
  ``aligned=False`` samples it half a cell down and to the right, and also stretches
  boxes smaller than one cell to one cell.

Deliberate differences from torchvision: boxes with ``x2 < x1`` or ``y2 < y1`` raise
``ValueError`` (torchvision quietly treats them as one-cell boxes), boxes are cast to the
dtype and device of ``input`` (torchvision insists they match), and gradients of
:func:`roi_pool` are shared equally among tied maxima of a bin (torchvision gives them to
the first). Gradients flow to ``input`` only; boxes are constants, as in torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from cs_dense.ops.boxes import check_boxes
from cs_dense.validation import Pair, check_int, check_pair, describe

#: Bilinear reads further than this outside the map (in cells) are 0, not the edge
#: value: torchvision's (and Caffe2's) rule, so that boxes hanging off the map fade out.
OUTSIDE_MARGIN = 1.0


# ---------------------------------------------------------------- bilinear sampling


def _hat_weights(coord: Tensor, size: int) -> Tensor:
    """Linear-interpolation weights of fractional positions along one axis of length ``size``.

    The weight of cell ``j`` is the "hat" ``max(0, 1 - |t - j|)`` of the position ``t``
    clamped to ``[0, size - 1]``: at most two neighbouring cells get weight, summing to
    1, and positions past the last cell read the edge. Positions more than
    :data:`OUTSIDE_MARGIN` outside ``[0, size]`` get all-zero weights.

    Args:
        coord (Tensor[...]): positions, in cells; cell ``j`` sits at ``j``.
        size: number of cells, ``>= 1``.

    Returns:
        Tensor[..., size]: dtype and device of ``coord``.
    """
    inside = (coord >= -OUTSIDE_MARGIN) & (coord <= size - 1 + OUTSIDE_MARGIN)  # [-1, size]
    cells = torch.arange(size, dtype=coord.dtype, device=coord.device)  # [size]
    t = coord.clamp(0, size - 1)[..., None]  # [..., 1]
    hat = (1 - (t - cells).abs()).clamp(min=0)  # [..., 1] against [size] -> [..., size]
    return hat * inside[..., None]


def bilinear_sample(feature: Tensor, y: Tensor | float, x: Tensor | float) -> Tensor:
    """Values of a feature map at fractional positions, by bilinear interpolation.

    Value ``[:, i, j]`` sits at ``(y, x) = (i, j)``. A point between four cells mixes
    them with weights given by its distances to them: at ``y = i + a, x = j + b``
    (``0 <= a, b < 1``)::

        (1 - a)(1 - b) f[i, j] + (1 - a) b f[i, j+1] + a (1 - b) f[i+1, j] + a b f[i+1, j+1]

    Near and beyond the border, RoI Align's rules (torchvision, Caffe2): a coordinate in
    ``[-1, 0)`` is moved to 0 and one beyond ``size - 1`` to ``size - 1`` (the edge value
    is repeated), but a point with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` reads 0.

    Interpolation is separable: the weights are a row weight times a column weight, so
    this is computed as ``weights_y @ feature @ weights_x`` -- the form :func:`roi_align`
    uses to average many samples at once.

    Args:
        feature (Tensor[C, H, W]): floating point, ``H, W >= 1``.
        y (Tensor[...] or float): row positions, in cells.
        x (Tensor[...] or float): column positions, in cells; broadcast against ``y``.

    Returns:
        Tensor[C, ...]: one value per channel and point (``...`` is the broadcast shape
        of ``y`` and ``x``); dtype and device of ``feature``, differentiable in both
        ``feature`` and the positions.

    Raises:
        ValueError: if ``feature`` is not a floating ``[C, H, W]`` tensor with ``H, W >= 1``,
            or ``y`` and ``x`` do not broadcast.

    Example::

        >>> f = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
        >>> bilinear_sample(f, 0.5, 0.5)  # the mean of the four cells
        tensor([1.5000])
    """
    if not isinstance(feature, Tensor) or feature.dim() != 3 or not feature.is_floating_point():
        got = describe(feature)
        raise ValueError(f"feature must be a floating-point tensor of shape [C, H, W], got {got}")
    C, H, W = feature.shape
    if H == 0 or W == 0:
        raise ValueError(f"feature must have H, W >= 1 to be sampled, got shape {list(feature.shape)}")
    y = torch.as_tensor(y, dtype=feature.dtype, device=feature.device)
    x = torch.as_tensor(x, dtype=feature.dtype, device=feature.device)
    try:
        y, x = torch.broadcast_tensors(y, x)
    except RuntimeError:
        raise ValueError(f"y and x must broadcast, got shapes {list(y.shape)} and {list(x.shape)}") from None
    weights_y = _hat_weights(y, H)  # [..., H]
    weights_x = _hat_weights(x, W)  # [..., W]
    return torch.einsum("...h,chw,...w->c...", weights_y, feature, weights_x)


# ---------------------------------------------------------------- argument checks


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """The ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` of a list of per-image boxes.

    The form of the ``boxes`` argument of :func:`roi_align` and :func:`roi_pool` that the
    notebooks' exercises take; the package's detectors convert with this before they pool.

    Args:
        boxes: one ``Tensor[L_i, 4]`` of xyxy boxes per image (at least one image), all of one
            dtype and device.

    Returns:
        Tensor[sum L_i, 5]: image 0's rows first, in their order, then image 1's, ...

    Raises:
        ValueError: ``boxes`` is empty or holds something other than ``Tensor[L, 4]``.
    """
    if not isinstance(boxes, (list, tuple)) or not boxes:
        raise ValueError(f"boxes must be a non-empty list of Tensor[L, 4], got {describe(boxes)}")
    for index, image_boxes in enumerate(boxes):
        if not isinstance(image_boxes, Tensor) or image_boxes.dim() != 2 or image_boxes.shape[1] != 4:
            raise ValueError(f"boxes[{index}] must be a Tensor[L, 4] of xyxy boxes, got {describe(image_boxes)}")
    return torch.cat([torch.cat([torch.full_like(b[:, :1], index), b], dim=1) for index, b in enumerate(boxes)])


def _rois(input: Tensor, boxes: Tensor | Sequence[Tensor], spatial_scale: float) -> Tensor:
    """Check the arguments shared by both poolings; return ``Tensor[K, 5]`` rows
    ``(batch_index, x1, y1, x2, y2)`` in the dtype and on the device of ``input``."""
    if not isinstance(input, Tensor) or input.dim() != 4 or not input.is_floating_point():
        got = describe(input)
        raise ValueError(f"input must be a floating-point tensor of shape [B, C, H, W], got {got}")
    B, C, H, W = input.shape
    if H == 0 or W == 0:
        raise ValueError(f"input must have H, W >= 1, got shape {list(input.shape)}")
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float)) or not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be a positive number, got {spatial_scale!r}")
    if not math.isfinite(spatial_scale):
        raise ValueError(f"spatial_scale must be finite, got {spatial_scale!r}")

    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2) rows or a list of "
                f"Tensor[L, 4], got shape {list(boxes.shape)}"
            )
        rois = boxes.detach().to(dtype=input.dtype, device=input.device)
    elif isinstance(boxes, (list, tuple)):
        if len(boxes) > B:
            raise ValueError(f"boxes is a list of {len(boxes)} tensors but input holds only B={B} images")
        for index, image_boxes in enumerate(boxes):
            if not isinstance(image_boxes, Tensor) or image_boxes.dim() != 2 or image_boxes.shape[1] != 4:
                got = describe(image_boxes)
                raise ValueError(f"boxes[{index}] must be a Tensor[L, 4] of xyxy boxes, got {got}")
        per_image = [b.detach().to(dtype=input.dtype, device=input.device) for b in boxes]
        rois = boxes_to_rois(per_image) if per_image else input.new_zeros(0, 5)
    else:
        raise ValueError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {describe(boxes)}")

    index = rois[:, 0]  # [K]
    bad = (index != index.round()) | (index < 0) | (index >= B)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"boxes[:, 0] must be integer batch indices in [0, {B}), row {row} has {index[row].item()}")
    check_boxes(rois[:, 1:], "boxes")
    return rois


# ---------------------------------------------------------------- RoI Align


def _bin_weights(start: Tensor, end: Tensor, bins: int, size: int, sampling_ratio: int, aligned: bool) -> Tensor:
    """Mean interpolation weights of each bin's sample points along one axis.

    Bin ``p`` of a box ``[start, end)`` (already scaled and shifted) is sampled at
    ``start + (p + (i + 0.5) / n) * (end - start) / bins`` for ``i < n``, where ``n``
    is ``sampling_ratio`` or, if that is ``<= 0``, ``ceil((end - start) / bins)`` for
    this box. Boxes need different ``n``, so every box gets as many points as the
    largest and the extras are masked out.

    Returns:
        Tensor[K, bins, size]: row ``[k, p]`` averages the :func:`_hat_weights` of bin
        ``p``'s points of box ``k``.
    """
    length = end - start  # [K]
    if not aligned:
        length = length.clamp(min=1)  # legacy: boxes under one cell are stretched to one
    bin_size = length / bins  # [K]
    if sampling_ratio > 0:
        count = torch.full_like(length, sampling_ratio)
    else:
        count = torch.ceil(length / bins)  # [K]; 0 for an empty box when aligned
    most = max(int(count.max()), 1) if count.numel() else 1
    bin_index = torch.arange(bins, dtype=start.dtype, device=start.device)[:, None]  # [bins, 1]
    point = torch.arange(most, dtype=start.dtype, device=start.device)  # [most]
    divisor = count.clamp(min=1)[:, None, None]  # [K, 1, 1]; boxes with no points are masked anyway
    # [K, 1, 1] + [bins, 1] * [K, 1, 1] + [most] * [K, 1, 1] / [K, 1, 1] -> [K, bins, most]
    # (the order of operations of torchvision's kernel, so float32 rounds the same way)
    size_ = bin_size[:, None, None]
    coord = start[:, None, None] + bin_index * size_ + (point + 0.5) * size_ / divisor
    used = point < count[:, None, None]  # [K, 1, most]
    weights = _hat_weights(coord, size) * used[..., None]  # [K, bins, most, size]
    return weights.sum(dim=2) / divisor


def roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: Pair,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI Align (Mask R-CNN, He et al. 2017, sec. 3): a ``ph x pw`` grid of bin averages per box.

    Same arguments and results as ``torchvision.ops.roi_align``. Each box is scaled by
    ``spatial_scale`` (then shifted by -0.5 if ``aligned``), cut into ``ph x pw`` equal
    bins, and each bin is the mean of ``n_h x n_w`` bilinear samples (see
    :func:`bilinear_sample`) on a regular grid inside it: ``n = sampling_ratio`` if
    positive, else ``ceil(box size / bins)`` per box and axis.

    Because interpolation is separable, the mean over a bin's samples is a product of a
    mean row weight and a mean column weight. The weights of all boxes and bins are
    built at once as ``Tensor[K, ph, H]`` and ``Tensor[K, pw, W]``, and the output is
    two matrix products with the feature map -- no loop over boxes, bins or samples.
    Cost grows with ``K * ph * B * H * C * W``: fine for the course's maps, slower than
    torchvision's kernel (which only touches the samples) on large ones.

    Args:
        input (Tensor[B, C, H, W]): feature maps, floating point, ``H, W >= 1``.
        boxes (Tensor[K, 5] or list of Tensor[L, 4]): either rows
            ``(batch_index, x1, y1, x2, y2)`` or one xyxy tensor per image (the ``i``-th
            for image ``i``, at most ``B`` of them); image pixels, ``x1 <= x2``,
            ``y1 <= y2``. Cast to the dtype and device of ``input``; not differentiated.
        output_size: ``(ph, pw)``, or an int for a square grid; each ``>= 1``.
        spatial_scale: feature-map cells per image pixel (1 / stride), ``> 0``.
        sampling_ratio: samples per bin along each axis; ``<= 0`` for adaptive.
        aligned: shift boxes by -0.5 cell after scaling so that box coordinates refer to
            cell edges (pixel centres at +0.5); ``False`` is the original, shifted, form.

    Returns:
        Tensor[K, C, ph, pw]: boxes in the order given (image by image for a list);
        dtype and device of ``input``, differentiable in ``input``.

    Raises:
        ValueError: if ``input`` is not a floating ``[B, C, H, W]`` tensor, ``boxes`` has
            the wrong shape, a bad batch index or an inverted box, ``output_size`` is not
            positive, ``spatial_scale <= 0``, or ``sampling_ratio`` / ``aligned`` have the
            wrong type.
    """
    rois = _rois(input, boxes, spatial_scale)  # [K, 5]
    ph, pw = check_pair(output_size, "output_size", minimum=1)
    check_int("sampling_ratio", sampling_ratio)
    if not isinstance(aligned, bool):
        raise ValueError(f"aligned must be a bool, got {aligned!r}")
    B, C, H, W = input.shape
    shift = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - shift).unbind(dim=1)  # each [K]
    rows = _bin_weights(y1, y2, ph, H, sampling_ratio, aligned)  # [K, ph, H]
    cols = _bin_weights(x1, x2, pw, W, sampling_ratio, aligned)  # [K, pw, W]
    # Route each box's row weights to its own image (zeros for the others): a gather
    # input[batch] would copy a whole [C, H, W] map per box instead.
    image = torch.arange(B, device=input.device)
    owner = (rois[:, 0, None].long() == image).to(input.dtype)  # [K, 1] vs [B] -> [K, B]
    rows = rows[:, :, None, :] * owner[:, None, :, None]  # [K, ph, 1, H] * [K, 1, B, 1] -> [K, ph, B, H]
    pooled_rows = torch.einsum("kpbh,bchw->kpcw", rows, input)  # [K, ph, C, W]
    return torch.einsum("kpcw,kqw->kcpq", pooled_rows, cols).contiguous()  # [K, C, ph, pw]


# ---------------------------------------------------------------- RoI Pool


def _round_half_away(values: Tensor) -> Tensor:
    """Round to the nearest integer, halves away from zero (C's ``round``).

    ``torch.round`` sends halves to the even neighbour (2.5 -> 2); torchvision's kernel
    uses C's rule (2.5 -> 3, -2.5 -> -3). Only exact halves differ, so fix those.
    """
    whole = values.trunc()
    half = (values - whole).abs() == 0.5  # exact: subtracting the integer part loses nothing
    return torch.where(half, whole + values.sign(), values.round())


def _bin_masks(start: Tensor, end: Tensor, bins: int, size: int, dtype: torch.dtype) -> Tensor:
    """Which cells of one axis each RoI Pool bin covers.

    A box spanning whole cells ``start..end`` (inclusive, at least one cell) is split
    into ``bins`` bins of ``(end - start + 1) / bins`` cells; bin ``p`` covers cells
    ``floor(p * s)`` up to ``ceil((p + 1) * s)`` (exclusive) past ``start``, clipped to
    ``[0, size)``. Neighbouring bins can share a cell; a bin can be empty after clipping.

    Returns:
        Tensor[K, bins, size] bool.
    """
    cells = (end - start + 1).clamp(min=1)  # [K], int64
    bin_size = cells.to(dtype)[:, None] / bins  # [K, 1]; in input's dtype, as torchvision computes it
    p = torch.arange(bins, dtype=dtype, device=start.device)  # [bins]
    first = (torch.floor(p * bin_size).long() + start[:, None]).clamp(0, size)  # [K, bins]
    stop = (torch.ceil((p + 1) * bin_size).long() + start[:, None]).clamp(0, size)  # [K, bins]
    index = torch.arange(size, device=start.device)  # [size]
    return (index >= first[..., None]) & (index < stop[..., None])  # [K, bins, 1] vs [size] -> [K, bins, size]


def roi_pool(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size: Pair, spatial_scale: float = 1.0) -> Tensor:
    """RoI Pool (Fast R-CNN, Girshick 2015, sec. 2.1): a ``ph x pw`` grid of bin maxima per box.

    Same arguments and results as ``torchvision.ops.roi_pool``. Each scaled box corner
    is rounded to a whole cell (halves away from zero), the box then spans cells
    ``x1..x2`` and ``y1..y2`` inclusive (at least one), and is split into ``ph x pw``
    bins with floor / ceil edges (see :func:`_bin_masks`); each output is the maximum of
    its bin, or 0 for a bin that lies entirely off the map.

    A bin is a rectangle, so its maximum is the maximum over its rows of the maximum
    over its columns: masked maxima along W, then along H. The intermediate holds
    ``K * C * H * pw * W`` values -- meant for the course's small maps (up to 64 x 64).

    Gradients go to each bin's maximum (shared equally between exact ties).

    Args:
        input (Tensor[B, C, H, W]): feature maps, floating point, ``H, W >= 1``.
        boxes (Tensor[K, 5] or list of Tensor[L, 4]): as for :func:`roi_align`.
        output_size: ``(ph, pw)``, or an int for a square grid; each ``>= 1``.
        spatial_scale: feature-map cells per image pixel (1 / stride), ``> 0``.

    Returns:
        Tensor[K, C, ph, pw]: dtype and device of ``input``, differentiable in ``input``.

    Raises:
        ValueError: as for :func:`roi_align`.
    """
    rois = _rois(input, boxes, spatial_scale)  # [K, 5]
    ph, pw = check_pair(output_size, "output_size", minimum=1)
    B, C, H, W = input.shape
    x1, y1, x2, y2 = _round_half_away(rois[:, 1:] * spatial_scale).long().unbind(dim=1)  # each [K]
    rows = _bin_masks(y1, y2, ph, H, input.dtype)  # [K, ph, H]
    cols = _bin_masks(x1, x2, pw, W, input.dtype)  # [K, pw, W]
    maps = input[rois[:, 0].long()]  # [K, C, H, W]
    # [K, C, H, 1, W] masked by [K, 1, 1, pw, W] -> max over W -> [K, C, H, pw]
    col_max = maps[:, :, :, None, :].masked_fill(~cols[:, None, None], -math.inf).amax(dim=-1)
    # [K, C, 1, pw, H] masked by [K, 1, ph, 1, H] -> max over H -> [K, C, ph, pw]
    bin_max = col_max.transpose(2, 3)[:, :, None].masked_fill(~rows[:, None, :, None], -math.inf).amax(dim=-1)
    empty = ~(rows.any(dim=2)[:, :, None] & cols.any(dim=2)[:, None, :])  # [K, ph, 1] & [K, 1, pw] -> [K, ph, pw]
    return bin_max.masked_fill(empty[:, None], 0.0)
