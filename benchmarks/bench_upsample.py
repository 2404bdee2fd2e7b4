"""Speed of cs_dense.ops.upsample.conv_transpose2d against F.conv_transpose2d.

    python benchmarks/bench_upsample.py           # full sizes (run on a quiet machine)
    python benchmarks/bench_upsample.py --quick   # smoke run with tiny sizes

U-Net-like decoder steps: B=8, 64 -> 32 channels, 32 x 32 input, kernel 2 stride 2 (the
U-Net up-convolution) and kernel 4 stride 2 padding 1 (the DCGAN / FCN-style one).
Besides ours (one matmul for all stamps, then ``F.fold``) two alternatives we measured:
the same stamps added with ``scatter_add``, and the textbook identity "transposed
convolution = ordinary convolution of the zero-inserted input with the flipped kernel".
Every result is checked against PyTorch before anything is timed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import interleaved_medians, print_environment, print_table, timing_arguments

from cs_dense.ops.upsample import conv_transpose2d


def stamps_scatter_add(x, weight, stride, padding):
    """Square kernel, dilation 1, no output_padding: all stamps, then ``scatter_add``."""
    B, C_in, H, W = x.shape
    C_out, k = weight.shape[1], weight.shape[2]
    canvas_h, canvas_w = (H - 1) * stride + k, (W - 1) * stride + k
    stamps = weight.reshape(C_in, -1).T @ x.reshape(B, C_in, H * W)  # [B, C_out*k*k, H*W]
    tap = torch.arange(k)
    rows = torch.arange(H)[None, :] * stride + tap[:, None]  # [k, H]
    cols = torch.arange(W)[None, :] * stride + tap[:, None]  # [k, W]
    target = rows[:, None, :, None] * canvas_w + cols[None, :, None, :]  # [k, k, H, W]
    target = target.reshape(1, 1, -1).expand(B, C_out, -1)  # [B, C_out, k*k*H*W]
    canvas = x.new_zeros(B, C_out, canvas_h * canvas_w)
    canvas = canvas.scatter_add(2, target, stamps.reshape(B, C_out, -1))
    canvas = canvas.reshape(B, C_out, canvas_h, canvas_w)
    return canvas[:, :, padding : canvas_h - padding, padding : canvas_w - padding]


def zero_insertion(x, weight, stride, padding):
    """Square kernel, dilation 1, no output_padding: conv2d of the zero-inserted input."""
    B, C_in, H, W = x.shape
    k = weight.shape[2]
    spread = x.new_zeros(B, C_in, (H - 1) * stride + 1, (W - 1) * stride + 1)
    spread[:, :, ::stride, ::stride] = x  # stride - 1 zeros between neighbours
    border = k - 1 - padding  # negative would crop; F.pad handles both
    spread = F.pad(spread, (border, border, border, border))
    return F.conv2d(spread, weight.flip(2, 3).transpose(0, 1))  # [C_out, C_in, k, k], flipped


def main() -> None:
    args, reps = timing_arguments(__doc__)
    B, C_in, C_out, size = (2, 16, 8, 16) if args.quick else (8, 64, 32, 32)
    print_environment()
    rows = []
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C_in, size, size, generator=g)
    for k, stride, padding in ((2, 2, 0), (4, 2, 1)):
        weight = torch.randn(C_in, C_out, k, k, generator=g) / (C_in * k) ** 0.5
        candidates = {
            "ours": lambda: conv_transpose2d(x, weight, stride=stride, padding=padding),
            "scatter": lambda: stamps_scatter_add(x, weight, stride, padding),
            "zeros": lambda: zero_insertion(x, weight, stride, padding),
            "torch": lambda: F.conv_transpose2d(x, weight, stride=stride, padding=padding),
        }
        expected = candidates["torch"]()
        for name in ("ours", "scatter", "zeros"):
            torch.testing.assert_close(candidates[name](), expected, rtol=1e-4, atol=1e-4, msg=name)
        t = interleaved_medians(candidates, reps)
        label = f"conv_transpose2d {B}x{C_in}x{size}x{size} -> {C_out}, k{k} s{stride} p{padding}"
        rows.append((label, t["ours"], t["torch"], "F.conv_transpose2d"))
        rows.append((label, t["ours"], t["scatter"], "stamps + scatter_add"))
        rows.append((label, t["ours"], t["zeros"], "zero insertion + F.conv2d"))
    print_table(rows)


if __name__ == "__main__":
    main()
