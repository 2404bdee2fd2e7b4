"""Small matplotlib helpers the notebooks share: images, boxes, masks, PR curves.

Every helper draws on an ``Axes`` you pass in and returns what it added, so a notebook
keeps control of the figure layout. Tensors may live on any device; they are copied to
the CPU for drawing.

Pixel convention (see the package docstring, :mod:`cs_dense`): pixel ``(i, j)`` covers
``[j, j+1) x [i, i+1)`` in box coordinates, while ``imshow`` puts the *centre* of pixel ``(i, j)`` at ``(j, i)``.
A box coordinate ``x`` therefore sits at ``x - 0.5`` on an image's axes; the helpers here
apply that shift so that a box drawn over an image hugs exactly the pixels it covers.
"""

from __future__ import annotations

import matplotlib.patches as mpatches
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from torch import Tensor

from cs_dense.metrics.ap import precision_envelope
from cs_dense.validation import describe

#: One colour per class index (0 is background), reused cyclically beyond the list.
PALETTE = ("tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")
#: Colour of boxes drawn without labels or explicit colours.
DEFAULT_COLOR = "tab:blue"
#: imshow centres pixel j at x = j; box coordinates put its left edge at x = j.
PIXEL_EDGE_OFFSET = -0.5


def _numpy(x) -> np.ndarray:
    """A NumPy copy of a tensor (any device) or array-like."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def class_color(label: int) -> str:
    """The palette colour of a class index."""
    return PALETTE[int(label) % len(PALETTE)]


def show_image(ax: Axes, image: Tensor):
    """Show an RGB image with pixel centres at integer coordinates and no axis ticks.

    The view is then frozen to the image, so boxes drawn later that stick out of the
    image are clipped instead of widening the axes.

    Args:
        ax: where to draw.
        image (Tensor[3, H, W]): float RGB in ``[0, 1]``.

    Returns:
        AxesImage: the image.

    Raises:
        ValueError: if ``image`` is not ``[3, H, W]``.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape [3, H, W], got {list(image.shape)}")
    shown = ax.imshow(_numpy(image.permute(1, 2, 0)).clip(0, 1), interpolation="nearest")
    ax.set_autoscale_on(False)
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def draw_boxes(
    ax: Axes,
    boxes: Tensor,
    labels: Tensor | None = None,
    scores: Tensor | None = None,
    class_names: tuple[str, ...] | None = None,
    colors=None,
    linestyle: str = "-",
) -> list[mpatches.Rectangle]:
    """Draw xyxy boxes as rectangles that follow the pixel-coverage convention.

    A box ``(3, 3, 8, 8)`` covers pixels 3..7 in each direction. ``imshow`` centres
    those pixels at 3..7, so their outer edges are at 2.5 and 7.5: the rectangle is drawn
    from ``(x1 - 0.5, y1 - 0.5)`` with width ``x2 - x1`` and height ``y2 - y1``.

    A caption (class name and/or score) is written above each box when ``labels`` or
    ``scores`` is given.

    Args:
        ax: where to draw (usually after :func:`show_image`).
        boxes (Tensor[N, 4]): xyxy, pixels.
        labels (Tensor[N] | None): class index per box; picks the colour and the caption.
        scores (Tensor[N] | None): confidence per box, shown with two decimals.
        class_names: name of each class index, for the caption (default: the index).
        colors: one colour string (``"red"``, ``"#ff8800"``) for all boxes, or a sequence
            with one colour per box.
            Default: the class colour when ``labels`` is given, else ``DEFAULT_COLOR``.
        linestyle: matplotlib line style of the rectangles (e.g. ``"--"``).

    Returns:
        list[Rectangle]: the N rectangles added, in the order of ``boxes``.

    Raises:
        ValueError: if ``boxes`` is not ``[N, 4]`` or a per-box argument has another length.
    """
    xyxy = _numpy(boxes)
    if xyxy.size == 0:
        xyxy = xyxy.reshape(0, 4)
    if xyxy.ndim != 2 or xyxy.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {list(xyxy.shape)}")
    N = xyxy.shape[0]
    label_list = None if labels is None else [int(v) for v in _numpy(labels).reshape(-1)]
    score_list = None if scores is None else [float(v) for v in _numpy(scores).reshape(-1)]
    if colors is None:
        color_list = [class_color(v) for v in label_list] if label_list is not None else [DEFAULT_COLOR] * N
    elif isinstance(colors, str):
        color_list = [colors] * N
    else:
        color_list = list(colors)
    for name, values in (("labels", label_list), ("scores", score_list), ("colors", color_list)):
        if values is not None and len(values) != N:
            raise ValueError(f"{name} must have one entry per box ({N}), got {len(values)}")

    rectangles = []
    for i, (x1, y1, x2, y2) in enumerate(xyxy.tolist()):
        corner = (x1 + PIXEL_EDGE_OFFSET, y1 + PIXEL_EDGE_OFFSET)
        rect = mpatches.Rectangle(
            corner, x2 - x1, y2 - y1, fill=False, edgecolor=color_list[i], linewidth=2, linestyle=linestyle
        )
        ax.add_patch(rect)
        rectangles.append(rect)
        caption = []
        if label_list is not None:
            caption.append(class_names[label_list[i]] if class_names is not None else str(label_list[i]))
        if score_list is not None:
            caption.append(f"{score_list[i]:.2f}")
        if caption:
            ax.text(
                *corner,
                " ".join(caption),
                fontsize=7,
                color="white",
                va="bottom",
                ha="left",
                bbox={"facecolor": color_list[i], "alpha": 0.8, "pad": 1, "edgecolor": "none"},
                clip_on=True,
            )
    return rectangles


def overlay_masks(ax: Axes, masks: Tensor, colors=None, alpha: float = 0.4):
    """Tint the pixels of each instance mask with its colour, in one semi-transparent layer.

    Where masks overlap, the later mask's colour wins. Masks share the image's pixel grid,
    so no offset is needed (``imshow`` places them like the image).

    Args:
        ax: where to draw (after :func:`show_image`).
        masks (Tensor[N, H, W]): bool or 0/1 integers.
        colors: one colour per mask (default: ``PALETTE`` in turn, skipping background).
        alpha: opacity of the tint, in ``[0, 1]``.

    Returns:
        AxesImage: the overlay.

    Raises:
        ValueError: if ``masks`` is not ``[N, H, W]`` or ``colors`` has another length.
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape [N, H, W], got {list(masks.shape)}")
    N, H, W = masks.shape
    if colors is None:
        colors = [PALETTE[1 + i % (len(PALETTE) - 1)] for i in range(N)]
    if len(colors) != N:
        raise ValueError(f"colors must have one entry per mask ({N}), got {len(colors)}")
    layer = np.zeros((H, W, 4))  # RGBA, fully transparent
    for mask, color in zip(_numpy(masks).astype(bool), colors):
        layer[mask] = (*to_rgba(color)[:3], alpha)
    return ax.imshow(layer, interpolation="nearest")


def plot_pr_curve(ax: Axes, precision, recall, interpolated: bool = True, label: str | None = None) -> list:
    """Plot a precision/recall curve: the raw points and, optionally, their monotone envelope.

    The raw curve is one marker per ranked detection joined by a thin line. The envelope
    is drawn as a step function that holds ``max(precision[k:])`` on ``(recall[k-1],
    recall[k]]`` starting at recall 0; its area is the all-point AP.

    Args:
        ax: where to draw; axes get labels and limits ``[0, 1]``.
        precision (Tensor[K]): precision after each ranked detection.
        recall (Tensor[K]): recall after each ranked detection (non-decreasing).
        interpolated: also draw the envelope.
        label: legend label; the envelope gets ``"<label> (interpolated)"``.

    Returns:
        list[Line2D]: the lines added (raw, then envelope if drawn).

    Raises:
        ValueError: if the two curves have different lengths.
    """
    p = torch.as_tensor(_numpy(precision), dtype=torch.float64).reshape(-1)
    r = torch.as_tensor(_numpy(recall), dtype=torch.float64).reshape(-1)
    if p.shape != r.shape:
        raise ValueError(f"precision and recall must have the same length, got {p.numel()} and {r.numel()}")
    raw_label = label if label is not None else "raw"
    lines = ax.plot(r.numpy(), p.numpy(), marker="o", markersize=4, linewidth=0.8, alpha=0.7, label=raw_label)
    if interpolated and p.numel() > 0:
        env = precision_envelope(p)
        xs = torch.cat([r.new_zeros(1), r]).numpy()
        ys = torch.cat([env[:1], env]).numpy()
        env_label = f"{label} (interpolated)" if label is not None else "interpolated"
        lines += ax.step(xs, ys, where="pre", linewidth=2, color=lines[0].get_color(), label=env_label)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    return lines


def label_image(labels: Tensor, background: str = "black") -> Tensor:
    """Colour a map of class labels with the class palette, ready for :func:`show_image`.

    Args:
        labels (Tensor[H, W] integer): class per pixel (0 = background).
        background: the colour of class 0 (the palette's grey is meant for boxes and
            reads poorly as a large area).

    Returns:
        Tensor[3, H, W] float32 RGB in ``[0, 1]``, on the CPU.

    Raises:
        ValueError: if ``labels`` is not a 2-d integer tensor with non-negative labels.
    """
    if not isinstance(labels, Tensor) or labels.dim() != 2 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor [H, W], got {describe(labels)}"
                         f"{' ' + str(list(labels.shape)) if isinstance(labels, Tensor) else ''}")
    labels = labels.detach().cpu().long()
    if labels.numel() and labels.min() < 0:
        raise ValueError(f"labels must be non-negative, got {labels.min().item()}")
    count = int(labels.max()) + 1 if labels.numel() else 1
    colors = torch.tensor([to_rgba(background if c == 0 else class_color(c))[:3] for c in range(count)], dtype=torch.float32)
    return colors[labels].permute(2, 0, 1)
