"""Learned and fixed upsampling: unpooling, transposed convolution, and their matrices.

The operations of course notebook 01. Those with a PyTorch counterpart keep its
argument names and semantics (``max_unpool2d`` and ``F.max_unpool2d``,
``conv_transpose2d`` and ``F.conv_transpose2d``), and the tests prove agreement.

Feature maps are ``Tensor[B, C, H, W]``. A transposed-convolution weight is
``Tensor[C_in, C_out, kH, kW]`` (input channels first, as in PyTorch, because it is the
weight of the convolution whose adjoint this is). ``stride``, ``padding``,
``output_padding`` and ``dilation`` accept an int or an ``(h, w)`` pair.

Grouped transposed convolutions (``groups > 1``) are not supported; a weight whose first
dimension is not ``C_in`` is rejected with ``ValueError``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cs_dense.validation import Pair, check_pair, describe

def _check_feature_map(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``Tensor[B, C, H, W]``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {describe(x)}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape [B, C, H, W], got {list(x.shape)}")


# ---------------------------------------------------------------- unpooling


def nearest_unpool(x: Tensor, scale: Pair) -> Tensor:
    """Nearest-neighbour upsampling: each value fills a ``scale x scale`` block.

    Equals ``F.interpolate(x, scale_factor=scale, mode="nearest")`` for integer scales.

    Args:
        x (Tensor[B, C, H, W]): feature map.
        scale: integer factor ``>= 1``, or an ``(sh, sw)`` pair.

    Returns:
        Tensor[B, C, H * sh, W * sw]: same dtype and device as ``x``.

    Raises:
        ValueError: if ``x`` is not 4-D or ``scale`` is not a positive int (pair).
    """
    _check_feature_map(x, "x")
    sh, sw = check_pair(scale, "scale", minimum=1)
    B, C, H, W = x.shape
    blocks = x[:, :, :, None, :, None].expand(B, C, H, sh, W, sw)  # [B, C, H, sh, W, sw]
    return blocks.reshape(B, C, H * sh, W * sw)  # rows of a block are adjacent in memory order


def bed_of_nails_unpool(x: Tensor, scale: Pair) -> Tensor:
    """"Bed of nails" upsampling: each value at the top-left of its block, zeros elsewhere.

    Args:
        x (Tensor[B, C, H, W]): feature map.
        scale: integer factor ``>= 1``, or an ``(sh, sw)`` pair.

    Returns:
        Tensor[B, C, H * sh, W * sw]: ``out[..., i * sh, j * sw] = x[..., i, j]``, all
        other entries 0; same dtype and device as ``x``.

    Raises:
        ValueError: if ``x`` is not 4-D or ``scale`` is not a positive int (pair).
    """
    _check_feature_map(x, "x")
    sh, sw = check_pair(scale, "scale", minimum=1)
    B, C, H, W = x.shape
    out = x.new_zeros(B, C, H, sh, W, sw)  # [B, C, H, sh, W, sw]
    out[:, :, :, 0, :, 0] = x  # writes into the fresh tensor only; x is untouched
    return out.reshape(B, C, H * sh, W * sw)


def max_unpool2d(
    x: Tensor,
    indices: Tensor,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    output_size: tuple[int, ...] | None = None,
) -> Tensor:
    """Inverse of max pooling: each value goes back to where its maximum was found.

    Same semantics as ``F.max_unpool2d``: ``indices`` are those returned by
    ``F.max_pool2d(..., return_indices=True)``, i.e. flat positions ``row * W_out + col``
    within each ``[H_out, W_out]`` plane; positions no index points at are 0. Where
    overlapping windows chose the same input element, the index repeats with the same
    value, so the result is still well defined (for arbitrary repeated indices one of the
    values wins, unspecified which, as in PyTorch); the gradient of ``x`` reads the output
    gradient back at ``indices``, so every copy of a repeated index receives it.

    Args:
        x (Tensor[B, C, H, W]): pooled values.
        indices (Tensor[B, C, H, W]): int64 flat positions in ``[0, H_out * W_out)``.
        kernel_size: pooling window, int or ``(kh, kw)``; only used for the default size.
        stride: pooling stride; ``None`` means ``kernel_size`` (as in pooling).
        padding: pooling padding.
        output_size: ``(H_out, W_out)`` (or a longer sequence ending with them), to undo
            the rounding down of pooling; each must lie strictly between
            ``default - stride`` and ``default + stride``.

    Returns:
        Tensor[B, C, H_out, W_out]: by default ``H_out = (H - 1) * sh - 2 * ph + kh``
        (and likewise for W); dtype and device of ``x``.

    Raises:
        ValueError: on bad shapes, sizes, or indices outside the output plane.
    """
    _check_feature_map(x, "x")
    if not isinstance(indices, Tensor) or indices.shape != x.shape or indices.dtype != torch.int64:
        got = describe(indices)
        raise ValueError(f"indices must be an int64 tensor of shape {list(x.shape)}, got {got}")
    kh, kw = check_pair(kernel_size, "kernel_size", minimum=1)
    sh, sw = check_pair(kernel_size if stride is None else stride, "stride", minimum=1)
    ph, pw = check_pair(padding, "padding", minimum=0)
    B, C, H, W = x.shape
    default = ((H - 1) * sh - 2 * ph + kh, (W - 1) * sw - 2 * pw + kw)
    if output_size is None:
        H_out, W_out = default
    else:
        H_out, W_out = (int(v) for v in tuple(output_size)[-2:])
        for size, base, step in ((H_out, default[0], sh), (W_out, default[1], sw)):
            if not base - step < size < base + step:
                raise ValueError(
                    f"output_size must lie strictly between {base - step} and {base + step} "
                    f"in each dimension, got {tuple(output_size)}"
                )
    if H_out < 1 or W_out < 1:
        raise ValueError(f"output size must be positive, got {(H_out, W_out)}")
    flat_indices = indices.reshape(B, C, H * W)  # [B, C, H*W]
    if flat_indices.numel() and (flat_indices.min() < 0 or flat_indices.max() >= H_out * W_out):
        raise ValueError(
            f"indices must lie in [0, {H_out * W_out}) for output size {(H_out, W_out)}, "
            f"got range [{int(flat_indices.min())}, {int(flat_indices.max())}]"
        )
    out = x.new_zeros(B, C, H_out * W_out).scatter(2, flat_indices, x.reshape(B, C, H * W))  # [B, C, Ho*Wo]
    return out.reshape(B, C, H_out, W_out)


# ---------------------------------------------------------------- transposed convolution


def _check_transposed(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Pair,
    padding: Pair,
    output_padding: Pair,
    dilation: Pair,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validate transposed-convolution arguments; return the pairs and the output size."""
    _check_feature_map(x, "x")
    _check_feature_map(weight, "weight")
    stride_ = check_pair(stride, "stride", minimum=1)
    padding_ = check_pair(padding, "padding", minimum=0)
    output_padding_ = check_pair(output_padding, "output_padding", minimum=0)
    dilation_ = check_pair(dilation, "dilation", minimum=1)
    B, C_in, H, W = x.shape
    if weight.shape[0] != C_in:
        raise ValueError(
            f"weight must have shape [C_in={C_in}, C_out, kH, kW] (groups=1 only), got {list(weight.shape)}"
        )
    C_out, kH, kW = weight.shape[1:]
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (C_out,)):
        got = describe(bias)
        raise ValueError(f"bias must have shape [C_out={C_out}], got {got}")
    for op, s, d in zip(output_padding_, stride_, dilation_):
        if op >= max(s, d):
            raise ValueError(
                f"output_padding must be smaller than stride or dilation, got output_padding={output_padding}, "
                f"stride={stride}, dilation={dilation}"
            )
    if B * C_in > 0 and min(H, W) == 0:
        raise ValueError(f"x may be empty only in B or C, got shape {list(x.shape)}")
    sizes = tuple(
        (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        for n, s, p, d, k, op in zip((H, W), stride_, padding_, dilation_, (kH, kW), output_padding_)
    )
    if min(sizes) < 1:
        raise ValueError(f"output size must be positive, got {sizes} (padding={padding} is too large)")
    return stride_, padding_, output_padding_, dilation_, sizes


def _crop(canvas: Tensor, padding: tuple[int, int], output_padding: tuple[int, int]) -> Tensor:
    """From the full canvas of stamps to the output: drop ``padding`` on every side, then
    extend bottom/right by ``output_padding`` (zeros where it runs past the canvas).

    Negative amounts in ``F.pad`` crop, so one call does both.
    """
    (ph, pw), (oph, opw) = padding, output_padding
    return F.pad(canvas, (-pw, opw - pw, -ph, oph - ph))


def conv_transpose2d_loop(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Pair = 1,
    padding: Pair = 0,
    output_padding: Pair = 0,
    dilation: Pair = 1,
) -> Tensor:
    """Transposed convolution, written as the definition: one kernel stamp per input pixel.

    Input pixel ``(i, j)`` adds ``x[b, :, i, j]``-weighted copies of the kernel into a
    canvas at rows ``i * sh + dh * t`` and columns ``j * sw + dw * u`` (kernel taps
    ``t, u``); overlapping stamps add up. The output is the canvas with ``padding`` cut
    from every side and ``output_padding`` extra rows/columns at the bottom/right.

    A Python loop over the ``H * W`` input positions (vectorised over batch and channels):
    for teaching and for small inputs only. :func:`conv_transpose2d` is the fast version.

    Args / Returns / Raises: as :func:`conv_transpose2d`.
    """
    stride, padding, output_padding, dilation, _ = _check_transposed(
        x, weight, bias, stride, padding, output_padding, dilation
    )
    B, C_in, H, W = x.shape
    C_out, kH, kW = weight.shape[1:]
    (sh, sw), (dh, dw) = stride, dilation
    span_h, span_w = dh * (kH - 1) + 1, dw * (kW - 1) + 1  # extent of one (dilated) stamp
    canvas = x.new_zeros(B, C_out, (H - 1) * sh + span_h, (W - 1) * sw + span_w)
    for i in range(H):
        for j in range(W):
            stamp = torch.einsum("bc,cokl->bokl", x[:, :, i, j], weight)  # [B, C_out, kH, kW]
            rows = slice(i * sh, i * sh + span_h, dh)
            cols = slice(j * sw, j * sw + span_w, dw)
            canvas[:, :, rows, cols] += stamp  # canvas is ours, so updating it in place is safe
    out = _crop(canvas, padding, output_padding)
    return out if bias is None else out + bias[:, None, None]  # [C_out, 1, 1] broadcasts over B, H, W


def conv_transpose2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Pair = 1,
    padding: Pair = 0,
    output_padding: Pair = 0,
    dilation: Pair = 1,
) -> Tensor:
    """Transposed convolution ("deconvolution"), same semantics as ``F.conv_transpose2d``.

    Computes every kernel stamp at once, one matrix product of the kernel with the input
    (``[C_out * kH * kW, C_in] @ [C_in, H * W]``), then lets ``F.fold`` add the stamps
    into place; see :func:`conv_transpose2d_loop` for the same thing one stamp at a time.

    Output size, per spatial dimension (``n`` = input size, ``k`` = kernel size)::

        n_out = (n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1

    ``output_padding`` only picks between the input sizes a strided convolution maps to
    the same ``n``; it must be smaller than ``stride`` or ``dilation`` (as in PyTorch).

    Args:
        x (Tensor[B, C_in, H, W]): input; ``B`` may be 0, and so may ``C_in`` (PyTorch
            raises there; here the sum over no channels is 0, leaving only the bias).
        weight (Tensor[C_in, C_out, kH, kW]): kernel; ``groups=1`` only.
        bias (Tensor[C_out], optional): added to every output pixel.
        stride, padding, output_padding, dilation: int or ``(h, w)``; ``stride`` and
            ``dilation >= 1``, ``padding`` and ``output_padding >= 0``.

    Returns:
        Tensor[B, C_out, H_out, W_out]: dtype and device of ``x``.

    Raises:
        ValueError: on bad shapes, arguments out of range, ``output_padding`` not smaller
            than ``stride`` or ``dilation``, or a non-positive output size.
    """
    stride, padding, output_padding, dilation, _ = _check_transposed(
        x, weight, bias, stride, padding, output_padding, dilation
    )
    B, C_in, H, W = x.shape
    C_out, kH, kW = weight.shape[1:]
    (sh, sw), (dh, dw) = stride, dilation
    kernels = weight.reshape(C_in, C_out * kH * kW).T  # [C_out*kH*kW, C_in]
    stamps = kernels @ x.reshape(B, C_in, H * W)  # [B, C_out*kH*kW, H*W], fold's layout
    canvas_size = ((H - 1) * sh + dh * (kH - 1) + 1, (W - 1) * sw + dw * (kW - 1) + 1)
    canvas = F.fold(stamps, canvas_size, (kH, kW), dilation=dilation, stride=stride)  # [B, C_out, *canvas_size]
    out = _crop(canvas, padding, output_padding)
    return out if bias is None else out + bias[:, None, None]  # [C_out, 1, 1] broadcasts over B, H, W


def conv2d_matrix(weight: Tensor, input_size: Pair, stride: Pair = 1, padding: Pair = 0) -> Tensor:
    """The matrix of a (cross-correlation) convolution acting on a flattened input.

    For ``x`` of shape ``[C_in, H, W]``::

        F.conv2d(x[None], weight, stride=stride, padding=padding)[0].flatten() == M @ x.flatten()

    and the transposed convolution with the same weight, stride and padding is
    multiplication by ``M.T`` (flattened ``[C_out, H_out, W_out]`` in, ``[C_in, H, W]``
    out) whenever it produces size ``H`` -- which needs
    ``output_padding = (H + 2 * padding - kH) % stride`` -- hence its name. Row
    ``(o, r, c)`` of ``M`` holds the kernel of output channel ``o`` at the input pixels
    window ``(r, c)`` covers; taps falling on the zero padding are dropped.

    Dense, ``O(out_numel * in_numel)`` memory: for small teaching examples.

    Args:
        weight (Tensor[C_out, C_in, kH, kW] or Tensor[kH, kW]): convolution kernel; a 2-D
            kernel is single-channel (``C_out = C_in = 1``).
        input_size: ``(H, W)`` or an int for a square input.
        stride: int or ``(h, w)``, ``>= 1``.
        padding: int or ``(h, w)``, ``>= 0`` (zero padding).

    Returns:
        Tensor[C_out * H_out * W_out, C_in * H * W]: dtype and device of ``weight``,
        differentiable with respect to it; ``H_out = (H + 2 * ph - kH) // sh + 1``.

    Raises:
        ValueError: on a bad weight shape, arguments out of range, or an empty output.
    """
    if not isinstance(weight, Tensor) or weight.dim() not in (2, 4):
        got = describe(weight)
        raise ValueError(f"weight must have shape [C_out, C_in, kH, kW] or [kH, kW], got {got}")
    weight4 = weight[None, None] if weight.dim() == 2 else weight  # [C_out, C_in, kH, kW]
    C_out, C_in, kH, kW = weight4.shape
    H, W = check_pair(input_size, "input_size", minimum=1)
    (sh, sw), (ph, pw) = check_pair(stride, "stride", minimum=1), check_pair(padding, "padding", minimum=0)
    H_out, W_out = (H + 2 * ph - kH) // sh + 1, (W + 2 * pw - kW) // sw + 1
    if H_out < 1 or W_out < 1 or min(C_out, C_in, kH, kW) == 0:
        raise ValueError(f"the kernel {list(weight.shape)} does not fit input_size {(H, W)} with padding {padding}")

    def axis(n: int, dim: int) -> Tensor:
        """``arange(n)`` placed on axis ``dim`` of a 6-D tensor (for broadcasting)."""
        shape = [1] * 6
        shape[dim] = n
        return torch.arange(n, device=weight.device).reshape(shape)

    # axes: [C_out, C_in, kH, kW, H_out, W_out]
    o, i, t, u, r, c = (axis(n, d) for d, n in enumerate((C_out, C_in, kH, kW, H_out, W_out)))
    in_row, in_col = r * sh - ph + t, c * sw - pw + u  # unpadded input pixel under each tap
    inside = (in_row >= 0) & (in_row < H) & (in_col >= 0) & (in_col < W)  # [1, 1, kH, kW, H_out, W_out]
    full = (C_out, C_in, kH, kW, H_out, W_out)
    rows = ((o * H_out + r) * W_out + c).expand(full)[inside.expand(full)]
    cols = ((i * H + in_row) * W + in_col).expand(full)[inside.expand(full)]
    values = weight4[..., None, None].expand(full)[inside.expand(full)]  # [n_taps]
    M = weight.new_zeros(C_out * H_out * W_out, C_in * H * W)
    # Each (row, col) pair occurs once (no dilation), but accumulate states the intent: sum.
    return M.index_put((rows, cols), values, accumulate=True)


# ---------------------------------------------------------------- bilinear kernel and overlaps


def bilinear_kernel(
    channels: int, scale: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """FCN's bilinear initialisation of a transposed convolution (Long et al., CVPR 2015, sec. 3.3).

    The kernel has size ``k = 2 * scale - scale % 2`` and is the outer product of a 1-D
    "tent" ``1 - |t - centre| / scale`` (``centre = (k - 1) / 2``) with itself; channel
    ``c`` only feeds channel ``c`` (off-diagonal kernels are 0).

    Relation to ``F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)``:
    with ``stride=scale, padding=scale // 2`` (and ``output_padding=0``) the transposed
    convolution returns ``[H * scale, W * scale]``, the same size, and output pixel ``o``
    mixes the two input pixels around the source coordinate ``(o + 0.5) / scale - 0.5``
    with linear weights -- exactly interpolate's rule. They differ only where that
    coordinate falls outside ``[0, H - 1]``, i.e. in the first and last ``scale // 2``
    rows and columns: interpolate clamps it to the edge (edge values repeat), while the
    convolution sees zeros beyond the input, so the border fades towards 0. Precisely::

        conv_transpose2d(x, k, stride=s, padding=s // 2)
            == F.interpolate(F.pad(x, (1, 1, 1, 1)), scale_factor=s, ...)[..., s:-s, s:-s]

    and replacing the zero padding by ``mode="replicate"`` (with ``padding=s // 2 + s``)
    reproduces ``F.interpolate(x, ...)`` everywhere.

    Args:
        channels: number of channels ``C >= 1`` (input and output).
        scale: integer upsampling factor ``>= 1``.
        dtype: of the result (the tent is computed in float64, then cast once).
        device: of the result.

    Returns:
        Tensor[C, C, k, k]: weight in ``[C_in, C_out, kH, kW]`` layout.

    Raises:
        ValueError: if ``channels`` or ``scale`` is not a positive int.
    """
    for name, value in (("channels", channels), ("scale", scale)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    k = 2 * scale - scale % 2
    centre = (k - 1) / 2
    tent = 1 - (torch.arange(k, dtype=torch.float64) - centre).abs() / scale  # [k]
    tent2d = tent[:, None] * tent[None, :]  # [k, 1] x [1, k] -> [k, k]
    eye = torch.eye(channels, dtype=torch.float64)[:, :, None, None]  # [C, C, 1, 1]
    return (eye * tent2d).to(dtype=dtype, device=device)  # [C, C, k, k]


def overlap_counts(kernel_size: Pair, stride: Pair, input_size: Pair) -> Tensor:
    """How many kernel stamps of a transposed convolution land on each output pixel.

    Uneven counts are where checkerboard artefacts come from (Odena et al., "Deconvolution
    and Checkerboard Artifacts", Distill 2016): when ``kernel_size`` is not a multiple of
    ``stride`` some pixels receive more stamps than their neighbours (kernel 3, stride 2:
    ``1 1 2 1 2 1 1`` along each axis), while kernel 4, stride 2 covers every interior
    pixel exactly twice (``1 1 2 2 2 2 1 1``). Counts are separable: the count at
    ``(r, c)`` is the row count at ``r`` times the column count at ``c``.

    No padding, no dilation: the full canvas of size ``(n - 1) * stride + kernel_size``.

    Args:
        kernel_size: int or ``(kh, kw)``, ``>= 1``.
        stride: int or ``(sh, sw)``, ``>= 1``.
        input_size: int or ``(H, W)``, ``>= 0``.

    Returns:
        Tensor[H_out, W_out]: int64 counts, ``H_out = (H - 1) * sh + kh`` (0 rows if ``H == 0``).

    Raises:
        ValueError: if an argument is not a non-negative / positive int (pair).
    """
    kernel = check_pair(kernel_size, "kernel_size", minimum=1)
    steps = check_pair(stride, "stride", minimum=1)
    sizes = check_pair(input_size, "input_size", minimum=0)
    per_axis = []
    for k, s, n in zip(kernel, steps, sizes):
        out = torch.arange((n - 1) * s + k if n else 0)[:, None]  # [n_out, 1]
        offset = out - torch.arange(n)[None, :] * s  # [n_out, n]: tap of input i hitting out
        per_axis.append(((offset >= 0) & (offset < k)).sum(dim=1))  # [n_out]
    rows, cols = per_axis
    return rows[:, None] * cols[None, :]  # [H_out, 1] x [1, W_out] -> [H_out, W_out]
