"""Cross-check probes of notebook 01, upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.ops import (
    bed_of_nails_unpool,
    conv2d_matrix,
    conv_transpose2d,
    conv_transpose2d_loop,
    max_unpool2d,
    nearest_unpool,
)

_DTYPES = (torch.float32, torch.float64, torch.int64)


def _unpool_inputs(gen: torch.Generator) -> list[tuple[str, torch.Tensor, object]]:
    inputs = []
    for trial in range(5):
        B, C, H, W = (randint(gen, 1, 5) for _ in range(4))
        sh, sw = randint(gen, 1, 4), randint(gen, 1, 4)
        scale = sh if trial % 2 == 0 else (sh, sw)
        dtype = _DTYPES[trial % 3]
        x = (torch.randn(B, C, H, W, generator=gen, dtype=torch.float64) * 10).to(dtype)
        inputs.append((f"x {[B, C, H, W]} {dtype}, scale {scale}", x, scale))
    inputs.append(("scale 1", torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64), 1))
    inputs.append(("an empty batch, scale (2, 3)", torch.zeros(0, 3, 2, 2), (2, 3)))
    return inputs


def _nearest_unpool(gen: torch.Generator) -> list[Case]:
    return [Case(what, (x, scale), expected=nearest_unpool(x, scale)) for what, x, scale in _unpool_inputs(gen)]


def _bed_of_nails_unpool(gen: torch.Generator) -> list[Case]:
    return [Case(what, (x, scale), expected=bed_of_nails_unpool(x, scale)) for what, x, scale in _unpool_inputs(gen)]


def _pooled(gen: torch.Generator, pool: dict, H: int, W: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.randn(2, 3, H, W, generator=gen, dtype=dtype)
    return F.max_pool2d(image, return_indices=True, **pool)


def _max_unpool2d(gen: torch.Generator) -> list[Case]:
    cases = []
    # the default stride is the kernel size: sizes that are multiples of it need no output_size
    for explicit in (False, True):
        k = randint(gen, 2, 4)
        H, W = k * randint(gen, 2, 5), k * randint(gen, 2, 5)
        pooled, indices = _pooled(gen, dict(kernel_size=k), H, W, torch.float32)
        kwargs = {"stride": None} if explicit else {}
        cases.append(Case(f"kernel {k}, stride {'None' if explicit else 'left out'}, {H} x {W}", (pooled, indices, k),
                          kwargs, expected=max_unpool2d(pooled, indices, k)))
    for trial in range(4):
        kh, kw, sh, sw = (randint(gen, 1, 4) for _ in range(4))
        padding = (randint(gen, 0, kh // 2 + 1), randint(gen, 0, kw // 2 + 1))  # max_pool2d allows at most half the window
        pool = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=padding)
        H, W = randint(gen, 4, 11), randint(gen, 4, 11)
        pooled, indices = _pooled(gen, pool, H, W, (torch.float32, torch.float64)[trial % 2])
        # output_size as the image's full shape or as (H, W): both name the same size
        size = {"output_size": (2, 3, H, W) if trial % 2 else (H, W)}
        cases.append(Case(f"{H} x {W}, {pool}, output_size {size['output_size']}", (pooled, indices),
                          {**pool, **size}, expected=max_unpool2d(pooled, indices, **pool, **size)))
    # overlapping windows repeat indices; on odd sizes the default size, with its padding, is the image's
    pool = dict(kernel_size=3, stride=2, padding=1)
    H, W = 2 * randint(gen, 2, 6) + 1, 2 * randint(gen, 2, 6) + 1
    pooled, indices = _pooled(gen, pool, H, W, torch.float64)
    cases.append(Case(f"overlapping 3 x 3 windows, stride 2, padding 1, on {H} x {W}, no output_size",
                      (pooled, indices), pool, expected=max_unpool2d(pooled, indices, **pool)))
    return cases


def weighted_gradient(fn, x: torch.Tensor, *args, weights: torch.Tensor, **kwargs) -> torch.Tensor:
    """Recipe: the gradient of ``(fn(x, *args, **kwargs) * weights).sum()`` with respect to ``x``."""
    leaf = x.detach().clone().requires_grad_()
    return torch.autograd.grad((fn(leaf, *args, **kwargs) * weights).sum(), leaf)[0]


def _max_unpool2d_gradients(gen: torch.Generator) -> list[Case]:
    cases = []
    for pool in (dict(kernel_size=(2, 3), stride=(2, 2), padding=(1, 1)), dict(kernel_size=3, stride=2, padding=1)):
        H, W = randint(gen, 4, 9), randint(gen, 4, 9)
        pooled, indices = _pooled(gen, pool, H, W, torch.float64)
        kwargs = {**pool, "output_size": (H, W), "weights": torch.randn(2, 3, H, W, generator=gen, dtype=torch.float64)}
        # the gradient reads the weights back at the indices, repeated ones included
        cases.append(Case(f"gradient with respect to x, weighted output, {H} x {W}, {pool}", (pooled, indices), kwargs,
                          expected=weighted_gradient(max_unpool2d, pooled, indices, **kwargs)))
    return cases


def _transposed_inputs(gen: torch.Generator, trials: int, max_size: int) -> list[tuple[str, tuple, dict]]:
    """Random shapes and settings. The first case has several channels, a kernel and an input larger than 1 and no
    padding, so that its whole output is compared: a large padding can crop it to a few pixels."""
    inputs = []
    for trial in range(trials):
        low = 2 if trial == 0 else 1
        B, C_in, C_out = randint(gen, 1, 3), randint(gen, low, 4), randint(gen, low, 4)
        H, W, kH, kW = (randint(gen, low, max_size + 1), randint(gen, low, max_size + 1), randint(gen, low, 5),
                        randint(gen, low, 5))
        stride, dilation = (randint(gen, 1, 4), randint(gen, 1, 4)), (randint(gen, 1, 3), randint(gen, 1, 3))
        output_padding = tuple(randint(gen, 0, max(s, d)) for s, d in zip(stride, dilation))
        # the output, (n - 1) s - 2 p + d (k - 1) + o + 1, must keep at least one pixel
        full = [(n - 1) * s + d * (k - 1) + o + 1
                for n, s, d, k, o in zip((H, W), stride, dilation, (kH, kW), output_padding)]
        padding = tuple(randint(gen, 0, (f - 1) // 2 + 1) if trial else 0 for f in full)
        dtype = torch.float32 if trial == trials - 1 else torch.float64
        x = torch.randn(B, C_in, H, W, generator=gen, dtype=dtype)
        weight = torch.randn(C_in, C_out, kH, kW, generator=gen, dtype=dtype)
        bias = torch.randn(C_out, generator=gen, dtype=dtype) if trial % 2 else None
        settings = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
        what = f"x {[B, C_in, H, W]} {dtype}, weight {[C_in, C_out, kH, kW]}, bias {bias is not None}, {settings}"
        inputs.append((what, (x, weight, bias), settings))
    return inputs


def _conv_transpose2d_loop(gen: torch.Generator) -> list[Case]:
    return [Case(what, args, settings, expected=conv_transpose2d_loop(*args, **settings))
            for what, args, settings in _transposed_inputs(gen, 5, 5)]


def _conv_transpose2d(gen: torch.Generator) -> list[Case]:
    cases = [Case(what, args, settings, expected=conv_transpose2d(*args, **settings))
             for what, args, settings in _transposed_inputs(gen, 6, 10)]
    x = torch.zeros(0, 2, 3, 3, dtype=torch.float64)
    weight = torch.randn(2, 3, 2, 2, generator=gen, dtype=torch.float64)
    cases.append(Case("an empty batch, stride 2", (x, weight, None), {"stride": 2},
                      expected=conv_transpose2d(x, weight, None, stride=2)))
    return cases


def reaches_inputs(fn, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, **settings) -> list[bool]:
    """Recipe: whether the autograd graph of ``fn``'s output leads back to x, weight and bias.

    It follows the graph without running it: autograd is forbidden in this exercise.
    """
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = fn(*leaves[:2], leaves[2] if bias is not None else None, **settings)
    if type(out) is not torch.Tensor or out.grad_fn is None:
        return [False] * len(leaves)
    found, seen, todo = set(), set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            found.add(id(variable))
        todo.extend(child for child, _ in node.next_functions)
    return [id(leaf) in found for leaf in leaves]


def _conv_transpose2d_graph(gen: torch.Generator) -> list[Case]:
    cases = []
    for with_bias in (True, False):
        x, weight = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(3, 2, 3, 3, generator=gen)
        bias = torch.randn(2, generator=gen) if with_bias else None
        settings = dict(stride=2, padding=1, output_padding=1)
        expected = [True] * (3 if with_bias else 2)
        cases.append(Case(f"the result depends differentiably on x, weight{', bias' if with_bias else ''}",
                          (x, weight, bias), settings, expected=expected))
    return cases


def _conv2d_matrix(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        kH, kW = randint(gen, 1, 4), randint(gen, 1, 4)
        ph, pw = randint(gen, 0, kH), randint(gen, 0, kW)
        H, W = randint(gen, max(1, kH - 2 * ph), 8), randint(gen, max(1, kW - 2 * pw), 8)
        stride = (randint(gen, 1, 4), randint(gen, 1, 4))
        shape = (kH, kW) if trial == 0 else (randint(gen, 1, 4), randint(gen, 1, 4), kH, kW)
        dtype = (torch.float32, torch.float64)[trial % 2]
        weight = torch.randn(*shape, generator=gen, dtype=dtype)
        settings = dict(stride=stride, padding=(ph, pw))
        cases.append(Case(f"weight {list(shape)} {dtype}, input {(H, W)}, {settings}", (weight, (H, W)), settings,
                          expected=conv2d_matrix(weight, (H, W), **settings)))
    weight = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64)
    cases.append(Case("a square input given as an int, stride 2, padding 1", (weight, 5), {"stride": 2, "padding": 1},
                      expected=conv2d_matrix(weight, 5, stride=2, padding=1)))
    return cases


PROBES = {
    "test_unpool": (
        Probe("nearest_unpool", "nearest_unpool", _nearest_unpool),
        Probe("bed_of_nails_unpool", "bed_of_nails_unpool", _bed_of_nails_unpool),
    ),
    "test_max_unpool": (
        Probe("max_unpool2d", "max_unpool2d", _max_unpool2d),
        Probe("max_unpool2d", "max_unpool2d", _max_unpool2d_gradients,
              recipe="cs_dense.grading.probes.upsampling.weighted_gradient"),
    ),
    "test_conv_transpose2d_loop": (Probe("conv_transpose2d_loop", "conv_transpose2d_loop", _conv_transpose2d_loop),),
    "test_conv_transpose2d": (
        Probe("conv_transpose2d", "conv_transpose2d", _conv_transpose2d, stand_in=("conv_transpose2d_loop",)),
        Probe("conv_transpose2d", "conv_transpose2d", _conv_transpose2d_graph,
              recipe="cs_dense.grading.probes.upsampling.reaches_inputs"),
    ),
    "test_conv2d_matrix": (Probe("conv2d_matrix", "conv2d_matrix", _conv2d_matrix),),
}
