"""Anchor machinery shared by both stages of a two-stage detector.

* :func:`base_anchors` and :func:`grid_anchors` place ``A = len(sizes) * len(aspect_ratios)``
  boxes at every position of a feature map; :class:`AnchorGenerator` does it for a batch
  of images and a list of feature maps. Order and values are those of torchvision's
  ``AnchorGenerator``: position-major (row by row, then column), anchor-minor, and within
  one position ratio-major, size-minor. An anchor of size ``s`` and aspect ratio
  ``r = h / w`` has area ``s**2``: ``w = s / sqrt(r)``, ``h = s * sqrt(r)``. Anchors are
  centred on ``(j * stride_x, i * stride_y)`` (the top-left corner of each cell, as in
  torchvision), and the base anchors are rounded to whole pixels (a Detectron legacy kept
  for agreement).
* :class:`BoxCoder` turns a box into regression targets ``(dx, dy, dw, dh)`` relative to a
  reference box and back (Girshick et al., "Rich feature hierarchies...", CVPR 2014,
  appendix C; Ren et al., "Faster R-CNN", NeurIPS 2015, eq. 2).
* :func:`match_anchors` labels each anchor with the ground truth it regresses to, as
  negative, or as ignored; :func:`sample_balanced` draws the anchors a loss looks at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cs_dense.ops.boxes import check_boxes
from cs_dense.validation import check_positive_numbers

#: Largest ``dw``/``dh`` passed to ``exp`` when decoding: a box at most 1000/16 = 62.5 times
#: wider than its anchor, so a wild prediction early in training cannot overflow.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)
#: Labels that :func:`match_anchors` gives to anchors matched to no ground truth.
NEGATIVE = -1
IGNORED = -2


def base_anchors(
    sizes: Sequence[float], aspect_ratios: Sequence[float], dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """The ``A`` anchors of one position, centred on the origin.

    Args:
        sizes: anchor sizes in pixels (square root of the area).
        aspect_ratios: height / width of each anchor shape.

    Returns:
        Tensor[A, 4]: xyxy, ``A = len(aspect_ratios) * len(sizes)``, ratio-major
        (all sizes of the first ratio come first), rounded to whole pixels.

    Raises:
        ValueError: if ``sizes`` or ``aspect_ratios`` is empty or holds a non-positive value.
    """
    sizes = torch.as_tensor(check_positive_numbers("sizes", sizes), dtype=dtype, device=device)
    ratios = torch.as_tensor(check_positive_numbers("aspect_ratios", aspect_ratios), dtype=dtype, device=device)
    h_scale = ratios.sqrt()  # h = s * sqrt(r), w = s / sqrt(r): area s**2, h / w = r
    widths = (sizes[None, :] / h_scale[:, None]).reshape(-1)  # [R * S], ratio-major
    heights = (sizes[None, :] * h_scale[:, None]).reshape(-1)
    return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()


def grid_anchors(base: Tensor, feature_size: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Copies of ``base`` at every position of a feature map.

    Args:
        base (Tensor[A, 4]): anchors of one position (see :func:`base_anchors`).
        feature_size: ``(Hf, Wf)`` of the feature map.
        stride: ``(stride_y, stride_x)`` in image pixels per feature-map cell.

    Returns:
        Tensor[Hf * Wf * A, 4]: xyxy; anchor ``a`` of position ``(i, j)`` is row
        ``(i * Wf + j) * A + a``, centred on ``(j * stride_x, i * stride_y)``.
    """
    if base.ndim != 2 or base.shape[1] != 4:
        raise ValueError(f"base must have shape [A, 4], got {list(base.shape)}")
    (height, width), (stride_y, stride_x) = feature_size, stride
    if min(height, width) < 0 or min(stride_y, stride_x) <= 0:
        raise ValueError(f"feature_size must be >= 0 and stride > 0, got {feature_size} and {stride}")
    ys = torch.arange(height, dtype=base.dtype, device=base.device) * stride_y
    xs = torch.arange(width, dtype=base.dtype, device=base.device) * stride_x
    ys, xs = torch.meshgrid(ys, xs, indexing="ij")  # [Hf, Wf] each
    shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4)  # [Hf * Wf, 1, 4]
    return (shifts + base[None]).reshape(-1, 4)  # [Hf * Wf, A, 4] -> [Hf * Wf * A, 4]


class AnchorGenerator(nn.Module):
    """Anchors for every image of a batch and every feature map, like torchvision's.

    Args:
        sizes: one tuple of sizes per feature map.
        aspect_ratios: one tuple of ratios (height / width) per feature map.

    The stride of a feature map is ``image_size // feature_size`` per axis (integer
    division, as torchvision), so a 128-pixel image with a 16-cell map has stride 8.
    """

    def __init__(self, sizes: Sequence[Sequence[float]] = ((32, 64, 128),), aspect_ratios=((0.5, 1.0, 2.0),)):
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"sizes and aspect_ratios need one entry per feature map, got {len(sizes)} and {len(aspect_ratios)}"
            )
        self.sizes = [tuple(s) for s in sizes]
        self.aspect_ratios = [tuple(r) for r in aspect_ratios]
        for s, r in zip(self.sizes, self.aspect_ratios):
            base_anchors(s, r)  # validates

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, images: Tensor, features: Sequence[Tensor]) -> list[Tensor]:
        """Anchors of each image.

        Args:
            images (Tensor[B, C, H, W]): the (padded) batch the features come from.
            features: one Tensor[B, C', Hf, Wf] per feature map, as many as ``sizes``.

        Returns:
            B tensors [sum over maps of Hf * Wf * A, 4], the maps in order; all equal.
        """
        if len(features) != len(self.sizes):
            raise ValueError(f"expected {len(self.sizes)} feature maps (one per entry of sizes), got {len(features)}")
        height, width = images.shape[-2:]
        per_map = []
        for feature, sizes, ratios in zip(features, self.sizes, self.aspect_ratios):
            fh, fw = feature.shape[-2:]
            base = base_anchors(sizes, ratios, dtype=feature.dtype, device=feature.device)
            per_map.append(grid_anchors(base, (fh, fw), (height // fh, width // fw)))
        anchors = torch.cat(per_map)
        return [anchors for _ in range(images.shape[0])]


class BoxCoder:
    """Encode boxes as offsets from reference boxes, and decode them back.

    For a reference (anchor or proposal) with centre ``(xa, ya)`` and size ``(wa, ha)``
    and a box with ``(x, y, w, h)``, the targets are::

        dx = wx * (x - xa) / wa     dw = ww * log(w / wa)
        dy = wy * (y - ya) / ha     dh = wh * log(h / ha)

    Centre offsets are measured in reference widths, so the target does not depend on the
    reference's scale; sizes in log space, so doubling and halving are symmetric. The
    weights scale the targets to roughly unit variance (Faster R-CNN's second stage uses
    ``(10, 10, 5, 5)``). Widths are ``x2 - x1`` (no ``+1``). ``decode`` clamps ``dw``, ``dh`` to
    ``clamp`` before ``exp``; otherwise ``decode(encode(b, r), r) == b``.

    Args:
        weights: ``(wx, wy, ww, wh)``, positive.
        clamp: largest ``dw / ww`` and ``dh / wh`` used by ``decode``.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), clamp: float = BBOX_XFORM_CLIP):
        weights = check_positive_numbers("weights", weights)
        if len(weights) != 4:
            raise ValueError(f"weights must be (wx, wy, ww, wh), got {weights!r}")
        self.weights = weights
        self.clamp = clamp

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, clamp={self.clamp:.4g})"

    def encode(self, boxes: Tensor, references: Tensor) -> Tensor:
        """Regression targets of ``boxes[i]`` relative to ``references[i]``.

        Args:
            boxes (Tensor[N, 4]): xyxy targets.
            references (Tensor[N, 4]): xyxy anchors or proposals, positive width and height.

        Returns:
            Tensor[N, 4]: ``(dx, dy, dw, dh)``.
        """
        check_boxes(boxes, "boxes")
        check_boxes(references, "references")
        if boxes.shape != references.shape:
            raise ValueError(f"boxes and references must have the same shape, got {list(boxes.shape)} and {list(references.shape)}")
        wx, wy, ww, wh = self.weights
        rw, rh, rx, ry = _size_centre(references)
        bw, bh, bx, by = _size_centre(boxes)
        return torch.stack(
            [wx * (bx - rx) / rw, wy * (by - ry) / rh, ww * torch.log(bw / rw), wh * torch.log(bh / rh)], dim=1
        )

    def decode(self, deltas: Tensor, references: Tensor) -> Tensor:
        """Boxes from regression outputs ``deltas`` relative to ``references``.

        Args:
            deltas (Tensor[N, 4 * K]): ``K`` sets of ``(dx, dy, dw, dh)`` per reference
                (one per class in the second stage; ``K = 1`` in the RPN).
            references (Tensor[N, 4]): xyxy.

        Returns:
            Tensor[N, 4 * K]: xyxy boxes, ``K`` per reference, in the layout of ``deltas``.
        """
        check_boxes(references, "references")
        if deltas.ndim != 2 or deltas.shape[1] % 4 or deltas.shape[0] != references.shape[0]:
            raise ValueError(
                f"deltas must have shape [N, 4 * K] with N = {references.shape[0]} references, got {list(deltas.shape)}"
            )
        n = deltas.shape[0]
        wx, wy, ww, wh = self.weights
        rw, rh, rx, ry = (v[:, None] for v in _size_centre(references.to(deltas.dtype)))  # [N, 1] each
        d = deltas.reshape(n, deltas.shape[1] // 4, 4)  # [N, K, 4]; also for N = 0
        x = d[..., 0] / wx * rw + rx  # [N, K]
        y = d[..., 1] / wy * rh + ry
        w = torch.exp((d[..., 2] / ww).clamp(max=self.clamp)) * rw
        h = torch.exp((d[..., 3] / wh).clamp(max=self.clamp)) * rh
        return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=2).reshape(n, deltas.shape[1])


def _size_centre(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return widths, heights, boxes[:, 0] + widths / 2, boxes[:, 1] + heights / 2


def match_anchors(
    quality: Tensor, high: float = 0.7, low: float = 0.3, allow_low_quality_matches: bool = True
) -> Tensor:
    """Assign each anchor (column) to a ground truth (row), or label it negative or ignored.

    Rules (Faster R-CNN, section 3.1.2), with ``best`` the highest quality of an anchor
    over all ground truths and ``g`` the ground truth reaching it (the first on ties):

    * ``best >= high``: matched to ``g``;
    * ``best < low``: :data:`NEGATIVE` (-1);
    * ``low <= best < high``: :data:`IGNORED` (-2): neither taught as object nor background;
    * with ``allow_low_quality_matches``, an anchor that reaches the highest quality some
      ground truth has with any anchor (every anchor tied for it) is matched to ``g``
      anyway (its own best ground truth, which may be another one), so every ground truth
      gets at least one anchor. A ground truth that overlaps no anchor at all (highest
      quality 0) promotes nothing: torchvision's ``Matcher`` would match every
      non-overlapping anchor to ground truth 0 in that case.

    Args:
        quality (Tensor[M, N]): IoU of M ground truths with N anchors.
        high, low: thresholds, ``0 <= low <= high <= 1``.

    Returns:
        Tensor[N] int64: the matched ground truth in ``[0, M)``, or -1, or -2.
        With ``M = 0`` every anchor is negative.
    """
    if quality.ndim != 2:
        raise ValueError(f"quality must have shape [M ground truths, N anchors], got {list(quality.shape)}")
    if not 0 <= low <= high <= 1:
        raise ValueError(f"thresholds must satisfy 0 <= low <= high <= 1, got low={low}, high={high}")
    m, n = quality.shape
    if m == 0:
        return torch.full((n,), NEGATIVE, dtype=torch.int64, device=quality.device)
    best, best_gt = quality.max(dim=0)  # [N]: first ground truth on ties
    matches = best_gt.clone()
    matches[best < high] = IGNORED
    matches[best < low] = NEGATIVE
    if allow_low_quality_matches and n:
        highest = quality.max(dim=1, keepdim=True).values  # [M, 1]
        is_best = (quality == highest) & (highest > 0)  # [M, N]
        promoted = is_best.any(dim=0)
        matches[promoted] = best_gt[promoted]
    return matches


def sample_balanced(
    labels: Tensor, batch_size: int = 256, positive_fraction: float = 0.5, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw at most ``batch_size`` anchors, at most ``positive_fraction`` of them positive.

    Positives (``labels >= 1``) are drawn first, up to ``int(batch_size * positive_fraction)``;
    negatives (``labels == 0``) fill the rest; ignored anchors (``labels < 0``) are never
    drawn. Without this the loss would see thousands of easy background anchors per object.

    Args:
        labels (Tensor[N] int): 1 (or any class >= 1) positive, 0 negative, -1 ignored.
        generator: randomness of the draw (the global one if ``None``).

    Returns:
        ``(positive, negative)``: two Tensor[N] bool masks of the drawn anchors.
    """
    if labels.ndim != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {list(labels.shape)}")
    if batch_size < 0 or not 0 <= positive_fraction <= 1:
        raise ValueError(f"need batch_size >= 0 and 0 <= positive_fraction <= 1, got {batch_size}, {positive_fraction}")
    positive = torch.nonzero(labels >= 1).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    num_pos = min(int(batch_size * positive_fraction), positive.numel())
    num_neg = min(batch_size - num_pos, negative.numel())
    masks = []
    for candidates, count in ((positive, num_pos), (negative, num_neg)):
        order = torch.randperm(candidates.numel(), generator=generator, device="cpu").to(candidates.device)
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[candidates[order[:count]]] = True
        masks.append(mask)
    return masks[0], masks[1]
