"""Speed of cs_dense.ops.roi_align and roi_pool against torchvision.ops.

    python benchmarks/bench_roi.py           # full sizes (run on a quiet machine)
    python benchmarks/bench_roi.py --quick   # smoke run with tiny sizes

Two settings: a detector-like one (two 64-channel 50 x 50 maps at stride 8, i.e. 400 x
400 images, 512 boxes, 7 x 7 output) and the course's (eight 32-channel 16 x 16 maps,
128 boxes). RoI Align is timed with 2 samples per bin side and with adaptive sampling
(``sampling_ratio=-1``), forward only and forward + backward. Our RoI Pool builds a
``K x C x H x pw x W`` masked tensor (2.3 GB at the detector size with 512 boxes), so in
the detector setting it is timed on 64 boxes. Every result is checked against
torchvision before anything is timed.
"""

from __future__ import annotations

import torch
import torchvision
from common import interleaved_medians, print_environment, print_table, timing_arguments

from cs_dense.ops.roi import roi_align, roi_pool


def random_rois(batch: int, num: int, image_size: int, generator: torch.Generator) -> torch.Tensor:
    """Tensor[num, 5] of (batch_index, x1, y1, x2, y2): boxes of 4 px up to the whole image, some off its edge."""
    centre = torch.rand(num, 2, generator=generator) * image_size
    extent = 4 + torch.rand(num, 2, generator=generator) * (image_size - 4)
    corners = torch.cat([centre - extent / 2, centre + extent / 2], dim=1)  # [num, 4]
    index = torch.randint(0, batch, (num, 1), generator=generator).float()
    return torch.cat([index, corners], dim=1)


def forward_backward(op, x, grad_out):
    """Time of one forward and backward pass (the input gradient only)."""

    def run():
        return torch.autograd.grad(op(x), x, grad_out)[0]

    return run


def main() -> None:
    args, reps = timing_arguments(__doc__)
    # (label, B, C, H = W, stride, boxes for RoI Align, boxes for RoI Pool)
    settings = [("detector", 2, 64, 50, 8, 512, 64), ("course", 8, 32, 16, 4, 128, 128)]
    if args.quick:
        settings = [("detector (quick)", 2, 8, 20, 8, 32, 16), ("course (quick)", 2, 8, 16, 4, 16, 16)]
    print_environment()
    rows = []
    g = torch.Generator().manual_seed(0)
    for label, B, C, size, stride, n_align, n_pool in settings:
        x = torch.randn(B, C, size, size, generator=g)
        scale = 1 / stride
        rois = random_rois(B, n_align, size * stride, g)
        shape = f"{label} {B}x{C}x{size}x{size}, 1/{stride}"
        for sampling_ratio in (2, -1):
            candidates = {
                "ours": lambda: roi_align(x, rois, 7, scale, sampling_ratio, aligned=True),
                "theirs": lambda: torchvision.ops.roi_align(x, rois, 7, scale, sampling_ratio, aligned=True),
            }
            torch.testing.assert_close(candidates["ours"](), candidates["theirs"](), rtol=1e-4, atol=1e-4)
            t = interleaved_medians(candidates, reps)
            name = f"roi_align {shape}, {n_align} boxes, 7x7, sampling {sampling_ratio}"
            rows.append((name, t["ours"], t["theirs"], "torchvision"))

        leaf = x.clone().requires_grad_()
        grad_out = torch.randn(n_align, C, 7, 7, generator=g)
        candidates = {
            "ours": forward_backward(lambda t: roi_align(t, rois, 7, scale, 2, aligned=True), leaf, grad_out),
            "theirs": forward_backward(
                lambda t: torchvision.ops.roi_align(t, rois, 7, scale, 2, aligned=True), leaf, grad_out
            ),
        }
        torch.testing.assert_close(candidates["ours"](), candidates["theirs"](), rtol=1e-4, atol=1e-4)
        t = interleaved_medians(candidates, reps)
        name = f"roi_align forward+backward {shape}, {n_align} boxes, 7x7, sampling 2"
        rows.append((name, t["ours"], t["theirs"], "torchvision"))

        pool_rois = rois[:n_pool]
        candidates = {
            "ours": lambda: roi_pool(x, pool_rois, 7, scale),
            "theirs": lambda: torchvision.ops.roi_pool(x, pool_rois, 7, scale),
        }
        torch.testing.assert_close(candidates["ours"](), candidates["theirs"](), rtol=0, atol=0)
        t = interleaved_medians(candidates, reps)
        rows.append((f"roi_pool {shape}, {n_pool} boxes, 7x7", t["ours"], t["theirs"], "torchvision"))

        leaf = x.clone().requires_grad_()
        grad_out = torch.randn(n_pool, C, 7, 7, generator=g)
        candidates = {
            "ours": forward_backward(lambda t: roi_pool(t, pool_rois, 7, scale), leaf, grad_out),
            "theirs": forward_backward(lambda t: torchvision.ops.roi_pool(t, pool_rois, 7, scale), leaf, grad_out),
        }
        torch.testing.assert_close(candidates["ours"](), candidates["theirs"](), rtol=1e-5, atol=1e-5)
        t = interleaved_medians(candidates, reps)
        name = f"roi_pool forward+backward {shape}, {n_pool} boxes, 7x7"
        rows.append((name, t["ours"], t["theirs"], "torchvision"))
    print_table(rows)


if __name__ == "__main__":
    main()
