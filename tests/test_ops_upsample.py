"""cs_dense.ops.upsample against torch.nn.functional, hand computations and gradcheck."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from cs_dense.ops.upsample import (
    bed_of_nails_unpool,
    bilinear_kernel,
    conv2d_matrix,
    conv_transpose2d,
    conv_transpose2d_loop,
    max_unpool2d,
    nearest_unpool,
    overlap_counts,
)

DTYPES = [torch.float32, torch.float64]
TRANSPOSED = {"vectorised": conv_transpose2d, "loop": conv_transpose2d_loop}

# Sums of at most a few hundred products of N(0, 1) values: float32 rounding differs
# with the order of summation (ours folds stamps, PyTorch runs a convolution kernel).
TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


# ---------------------------------------------------------------- transposed convolution by hand


@pytest.mark.parametrize("impl", TRANSPOSED)
def test_worked_example_from_the_course(device, impl):
    # Input [[0, 1], [2, 3]], kernel [[0, 1], [2, 3]], stride 1: each input value stamps
    # value * kernel with its top-left at the value's position, on a 3 x 3 canvas:
    #   0 at (0,0): all zeros             1 at (0,1): [[0,1],[2,3]] at columns 1-2, rows 0-1
    #   2 at (1,0): [[0,2],[4,6]] rows 1-2  3 at (1,1): [[0,3],[6,9]] rows 1-2, columns 1-2
    # Sum: row 0 = [0, 0, 1]; row 1 = [0, 2 + 2 + 0, 3 + 3] = [0, 4, 6]; row 2 = [4, 6 + 6, 9].
    x = torch.tensor([[[[0.0, 1], [2, 3]]]], device=device)
    expected = torch.tensor([[[[0.0, 0, 1], [0, 4, 6], [4, 12, 9]]]], device=device)
    torch.testing.assert_close(TRANSPOSED[impl](x, x.clone()), expected)


@pytest.mark.parametrize("impl", TRANSPOSED)
def test_stride_two_padding_and_output_padding_by_hand(impl):
    # One input row [1, 2], kernel row [1, 1, 1], stride 2: stamps at columns 0-2 and 2-4,
    # canvas [1, 1, 1+2, 2, 2] = [1, 1, 3, 2, 2]. padding 1 drops a column each side ->
    # [1, 3, 2]; output_padding 1 then keeps one more column at the right -> [1, 3, 2, 2].
    x = torch.tensor([[[[1.0, 2.0]]]])
    w = torch.ones(1, 1, 1, 3)
    f = TRANSPOSED[impl]
    torch.testing.assert_close(f(x, w, stride=2), torch.tensor([[[[1.0, 1, 3, 2, 2]]]]))
    torch.testing.assert_close(f(x, w, stride=2, padding=(0, 1)), torch.tensor([[[[1.0, 3, 2]]]]))
    out = f(x, w, stride=2, padding=(0, 1), output_padding=(0, 1))
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 3, 2, 2]]]]))


def test_output_padding_past_the_canvas_is_zero():
    # dilation 3 allows output_padding 2 > stride 1; with padding 0 those columns lie
    # beyond every stamp: [1, 0, 0, 1] from one value with kernel [1, 1] dilated by 3.
    x = torch.ones(1, 1, 1, 1)
    out = conv_transpose2d(x, torch.ones(1, 1, 1, 2), dilation=3, output_padding=(0, 2))
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 0, 0, 1, 0, 0]]]]))


# ---------------------------------------------------------------- transposed convolution vs PyTorch


def random_setting(seed: int) -> dict:
    """A seeded random transposed-convolution case, small enough for the loop version."""
    g = torch.Generator().manual_seed(seed)

    def pick(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=g))

    stride = (pick(1, 3), pick(1, 3))
    dilation = (pick(1, 2), pick(1, 2))
    kernel = (pick(1, 4), pick(1, 4))
    padding = (pick(0, 2), pick(0, 2))
    output_padding = tuple(pick(0, max(s, d) - 1) for s, d in zip(stride, dilation))
    size = (pick(2, 6), pick(2, 6))
    # keep the output non-empty: padding at most what the canvas can lose
    for axis in range(2):
        full = (size[axis] - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1 + output_padding[axis]
        padding = tuple(min(p, (full - 1) // 2) if a == axis else p for a, p in enumerate(padding))
    return dict(
        batch=pick(1, 3),
        c_in=pick(1, 4),
        c_out=pick(1, 4),
        size=size,
        kernel=kernel,
        bias=bool(pick(0, 1)),
        kwargs=dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", TRANSPOSED)
@pytest.mark.parametrize("seed", range(10))
def test_matches_torch_on_random_settings(device, dtype, impl, seed):
    case = random_setting(seed)
    x = randn(case["batch"], case["c_in"], *case["size"], seed=seed, dtype=dtype, device=device)
    weight = randn(case["c_in"], case["c_out"], *case["kernel"], seed=seed + 100, dtype=dtype, device=device)
    bias = randn(case["c_out"], seed=seed + 200, dtype=dtype, device=device) if case["bias"] else None
    x_before, weight_before = x.clone(), weight.clone()
    expected = F.conv_transpose2d(x, weight, bias, **case["kwargs"])
    actual = TRANSPOSED[impl](x, weight, bias, **case["kwargs"])
    torch.testing.assert_close(actual, expected, **TOLERANCES[dtype])
    assert torch.equal(x, x_before) and torch.equal(weight, weight_before)  # inputs untouched


@pytest.mark.parametrize("impl", TRANSPOSED)
def test_matches_torch_on_every_small_setting(impl):
    # stride 1-3 x padding 0-2 x dilation 1-2 x every valid output_padding, square and not.
    x = randn(2, 3, 4, 5, seed=0)
    weight = randn(3, 2, 3, 2, seed=1)
    bias = randn(2, seed=2)
    for stride, padding, dilation in itertools.product((1, 2, 3), (0, 1, 2), (1, 2)):
        for output_padding in range(max(stride, dilation)):
            kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
            expected = F.conv_transpose2d(x, weight, bias, **kwargs)
            torch.testing.assert_close(TRANSPOSED[impl](x, weight, bias, **kwargs), expected, msg=str(kwargs))


@pytest.mark.parametrize("impl", TRANSPOSED)
def test_empty_batch(device, impl):
    x = torch.zeros(0, 3, 4, 5, device=device)
    weight = torch.ones(3, 2, 4, 3, device=device)
    bias = torch.arange(2.0, device=device)
    kwargs = dict(stride=2, padding=1, output_padding=(1, 0))
    expected = F.conv_transpose2d(x, weight, bias, **kwargs)
    actual = TRANSPOSED[impl](x, weight, bias, **kwargs)
    assert actual.shape == expected.shape == (0, 2, 9, 9)


@pytest.mark.parametrize("impl", TRANSPOSED)
def test_zero_input_channels_give_the_bias(impl):
    # PyTorch raises for C_in = 0; here the sum over no channels is 0, leaving the bias.
    # Size: H = (4 - 1) * 2 - 2 + (4 - 1) + 1 + 1 = 9, W = (5 - 1) * 2 - 2 + (3 - 1) + 0 + 1 = 9.
    x, weight, bias = torch.zeros(2, 0, 4, 5), torch.ones(0, 2, 4, 3), torch.tensor([1.0, 2.0])
    actual = TRANSPOSED[impl](x, weight, bias, stride=2, padding=1, output_padding=(1, 0))
    torch.testing.assert_close(actual, bias[:, None, None].expand(2, 2, 9, 9))


@pytest.mark.parametrize("impl", TRANSPOSED)
def test_transposed_gradcheck(impl):
    x = randn(2, 2, 3, 2, seed=3).requires_grad_()
    weight = randn(2, 3, 2, 3, seed=4).requires_grad_()
    bias = randn(3, seed=5).requires_grad_()

    def f(x, weight, bias):
        return TRANSPOSED[impl](x, weight, bias, stride=(2, 1), padding=(1, 0), output_padding=(1, 0), dilation=(1, 2))

    assert torch.autograd.gradcheck(f, (x, weight, bias))


def test_transposed_gradients_match_torch():
    x = randn(2, 3, 5, 4, seed=6).requires_grad_()
    weight = randn(3, 2, 4, 4, seed=7).requires_grad_()
    grad_out = randn(2, 2, 10, 8, seed=8)
    ours = torch.autograd.grad(conv_transpose2d(x, weight, stride=2, padding=1), (x, weight), grad_out)
    theirs = torch.autograd.grad(F.conv_transpose2d(x, weight, stride=2, padding=1), (x, weight), grad_out)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("impl", TRANSPOSED)
@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(stride=0), "stride"),
        (dict(stride=(1, 2, 3)), "stride"),
        (dict(stride=1.5), "stride"),
        (dict(padding=-1), "padding"),
        (dict(dilation=0), "dilation"),
        (dict(output_padding=-1), "output_padding"),
        (dict(stride=2, output_padding=2), "output_padding"),
        (dict(stride=2, dilation=3, output_padding=(0, 3)), "output_padding"),
        (dict(padding=5), "padding"),
        (dict(bias=torch.zeros(3)), "bias"),
    ],
)
def test_transposed_rejects_bad_arguments(impl, kwargs, argument):
    x, weight = torch.zeros(1, 2, 3, 3), torch.zeros(2, 4, 2, 2)
    with pytest.raises(ValueError, match=argument):
        TRANSPOSED[impl](x, weight, **kwargs)


@pytest.mark.parametrize("impl", TRANSPOSED)
def test_transposed_rejects_bad_shapes(impl):
    with pytest.raises(ValueError, match="weight"):  # groups=2 layout: [C_in, C_out / 2, kH, kW]
        TRANSPOSED[impl](torch.zeros(1, 4, 3, 3), torch.zeros(2, 2, 2, 2))
    with pytest.raises(ValueError, match="x"):
        TRANSPOSED[impl](torch.zeros(4, 3, 3), torch.zeros(4, 2, 2, 2))
    with pytest.raises(ValueError, match="x"):
        TRANSPOSED[impl](torch.zeros(1, 4, 0, 3), torch.zeros(4, 2, 2, 2))


# ---------------------------------------------------------------- conv2d_matrix


@pytest.mark.parametrize(
    "c_out, c_in, kernel, size, stride, padding",
    [
        (1, 1, (3, 3), (4, 4), 1, 0),  # the textbook 4 x 4 -> 2 x 2 example
        # (n + 2p - k) % s per axis is the output_padding the transpose needs to get back n
        (1, 1, (3, 3), (5, 5), 2, 1),  # (5 + 2 - 3) % 2 == 0: none needed
        (2, 3, (3, 2), (5, 6), 2, 1),  # (5 + 2 - 3) % 2 == (6 + 2 - 2) % 2 == 0: none needed
        (2, 3, (2, 3), (6, 7), (2, 3), (0, 1)),  # (6 - 2) % 2 == (7 + 2 - 3) % 3 == 0: none needed
        (3, 2, (3, 3), (6, 7), 2, 1),  # (6 + 2 - 3) % 2 == 1: output_padding 1 in H
        (2, 2, (1, 1), (3, 4), 3, 0),  # 1x1 kernel, stride 3: (3 - 1) % 3 == 2 in H, 0 in W
    ],
)
def test_conv2d_matrix_and_its_transpose(device, c_out, c_in, kernel, size, stride, padding):
    weight = randn(c_out, c_in, *kernel, seed=c_out * 10 + c_in, device=device)
    x = randn(c_in, *size, seed=1, device=device)
    M = conv2d_matrix(weight, size, stride=stride, padding=padding)
    y = F.conv2d(x[None], weight, stride=stride, padding=padding)[0]  # [C_out, H_out, W_out]
    assert M.shape == (y.numel(), x.numel())
    torch.testing.assert_close(M @ x.flatten(), y.flatten())
    # The adjoint maps back to [C_in, H, W] once output_padding restores the size that
    # the strided convolution rounded down: output_padding = (n + 2p - k) % s per axis.
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = padding if isinstance(padding, tuple) else (padding, padding)
    output_padding = tuple((n + 2 * pp - k) % ss for n, pp, k, ss in zip(size, p, kernel, s))
    g = randn(*y.shape, seed=2, device=device)
    back = F.conv_transpose2d(g[None], weight, stride=stride, padding=padding, output_padding=output_padding)[0]
    assert back.shape == x.shape
    torch.testing.assert_close(M.T @ g.flatten(), back.flatten())


def test_conv2d_matrix_by_hand():
    # 1-D is enough to see the band: kernel [1, 2] on 3 pixels, stride 1 ->
    # y0 = x0 + 2 x1, y1 = x1 + 2 x2.  With padding 1 the taps on the padding vanish:
    # y = [2 x0, x0 + 2 x1, x1 + 2 x2, x2].
    w = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(conv2d_matrix(w, (1, 3)), torch.tensor([[1.0, 2, 0], [0, 1, 2]]))
    expected = torch.tensor([[2.0, 0, 0], [1, 2, 0], [0, 1, 2], [0, 0, 1]])
    torch.testing.assert_close(conv2d_matrix(w, (1, 3), padding=(0, 1)), expected)


def test_conv2d_matrix_is_differentiable_in_the_weight():
    weight = randn(2, 1, 2, 2, seed=9).requires_grad_()
    assert torch.autograd.gradcheck(lambda w: conv2d_matrix(w, (3, 3), stride=1, padding=1), (weight,))


def test_conv2d_matrix_rejects_bad_arguments():
    with pytest.raises(ValueError, match="weight"):
        conv2d_matrix(torch.zeros(2, 3, 3), (4, 4))
    with pytest.raises(ValueError, match="input_size"):
        conv2d_matrix(torch.zeros(3, 3), (0, 4))
    with pytest.raises(ValueError, match="stride"):
        conv2d_matrix(torch.zeros(3, 3), (4, 4), stride=0)
    with pytest.raises(ValueError, match="input_size"):
        conv2d_matrix(torch.zeros(5, 5), (4, 4))


# ---------------------------------------------------------------- nearest and bed-of-nails unpooling


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_nearest_unpool_matches_interpolate(device, scale):
    x = randn(2, 3, 4, 5, seed=scale, device=device)
    expected = F.interpolate(x, scale_factor=scale, mode="nearest")
    torch.testing.assert_close(nearest_unpool(x, scale), expected, rtol=0, atol=0)


def test_unpooling_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    nearest = torch.tensor([[[[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]]])
    nails = torch.tensor([[[[1.0, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]]])
    torch.testing.assert_close(nearest_unpool(x, 2), nearest)
    torch.testing.assert_close(bed_of_nails_unpool(x, 2), nails)
    # a (1, 3) scale widens only: [1, 0, 0, 2, 0, 0] per row
    torch.testing.assert_close(bed_of_nails_unpool(x, (1, 3))[0, 0, 0], torch.tensor([1.0, 0, 0, 2, 0, 0]))


def test_bed_of_nails_against_a_loop(device):
    x = randn(2, 3, 3, 4, seed=11, device=device)
    expected = torch.zeros(2, 3, 9, 8, dtype=x.dtype, device=device)
    for i in range(3):
        for j in range(4):
            expected[:, :, 3 * i, 2 * j] = x[:, :, i, j]
    torch.testing.assert_close(bed_of_nails_unpool(x, (3, 2)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("op", [nearest_unpool, bed_of_nails_unpool])
def test_unpooling_empty_and_bad_arguments(op):
    assert op(torch.zeros(0, 3, 2, 2), 2).shape == (0, 3, 4, 4)
    assert op(torch.zeros(1, 3, 0, 2), 2).shape == (1, 3, 0, 4)
    for bad in (0, -1, 1.5, True, (2, 2, 2)):
        with pytest.raises(ValueError, match="scale"):
            op(torch.zeros(1, 1, 2, 2), bad)
    with pytest.raises(ValueError, match="x"):
        op(torch.zeros(2, 2), 2)


def test_unpooling_gradients():
    x = randn(1, 2, 2, 3, seed=12).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: nearest_unpool(t, 2), (x,))
    assert torch.autograd.gradcheck(lambda t: bed_of_nails_unpool(t, (2, 3)), (x,))


# ---------------------------------------------------------------- max unpooling


MAX_POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=2, stride=2),
    dict(kernel_size=3, stride=2, padding=1),  # overlapping windows: repeated indices
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(MAX_POOL_CASES)))
def test_max_unpool_matches_torch(device, dtype, case):
    kwargs = MAX_POOL_CASES[case]
    image = randn(2, 3, 7, 6, seed=case, dtype=dtype, device=device)
    pooled, indices = F.max_pool2d(image, return_indices=True, **kwargs)
    expected = F.max_unpool2d(pooled, indices, output_size=image.shape[-2:], **kwargs)
    actual = max_unpool2d(pooled, indices, output_size=image.shape[-2:], **kwargs)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    # and with the default output size (H - 1) * stride - 2 * padding + kernel_size, which
    # drops the last row when pooling rounded 7 rows down: indices there must not occur
    default = F.max_unpool2d(pooled, indices, **kwargs) if case == 1 else None
    if default is not None:  # 2 x 2 windows on 7 x 6 never pick row 6
        torch.testing.assert_close(max_unpool2d(pooled, indices, **kwargs), default, rtol=0, atol=0)


def test_max_unpool_by_hand():
    # 4 x 4 image, 2 x 2 windows: the maxima 6, 8, 9, 7 go back where they were found.
    image = torch.tensor([[[[1.0, 6, 2, 3], [0, 5, 8, 4], [9, 1, 0, 7], [2, 3, 1, 0]]]])
    pooled, indices = F.max_pool2d(image, 2, return_indices=True)
    expected = torch.tensor([[[[0.0, 6, 0, 0], [0, 0, 8, 0], [9, 0, 0, 7], [0, 0, 0, 0]]]])
    torch.testing.assert_close(max_unpool2d(pooled, indices, 2), expected)
    # hand-written indices (flat row * 4 + col) need no pooling at all
    own = torch.tensor([[[[15, 0], [5, 10]]]])
    expected = torch.zeros(16)
    expected[[15, 0, 5, 10]] = torch.tensor([6.0, 8, 9, 7])
    torch.testing.assert_close(max_unpool2d(pooled, own, 2).flatten(), expected)


def test_max_unpool_gradients():
    # gradcheck needs distinct indices: perturbing one of two values written to the same
    # place is not a smooth function (the write keeps one of them): 2 x 2 windows here;
    image = randn(1, 2, 5, 4, seed=13)
    pooled, indices = F.max_pool2d(image, 2, return_indices=True)
    pooled = pooled.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: max_unpool2d(t, indices, 2, output_size=(5, 4)), (pooled,))
    # and overlapping windows (repeated indices) only compared with PyTorch's gradient,
    # which likewise reads the output gradient back at every index.
    image = randn(1, 2, 5, 5, seed=13)
    pooled, indices = F.max_pool2d(image, 3, stride=2, padding=1, return_indices=True)
    planes = indices.reshape(2, 9)  # [B * C, H * W]
    assert any(plane.unique().numel() < plane.numel() for plane in planes)  # really repeated
    pooled = pooled.detach().requires_grad_()
    grad_out = randn(1, 2, 5, 5, seed=14)
    ours = torch.autograd.grad(max_unpool2d(pooled, indices, 3, 2, 1, (5, 5)), pooled, grad_out)[0]
    theirs = torch.autograd.grad(F.max_unpool2d(pooled, indices, 3, 2, 1, (5, 5)), pooled, grad_out)[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_max_unpool_empty_and_bad_arguments():
    empty = torch.zeros(0, 3, 2, 2)
    assert max_unpool2d(empty, empty.long(), 2).shape == (0, 3, 4, 4)
    pooled, indices = F.max_pool2d(torch.randn(1, 1, 4, 4), 2, return_indices=True)
    with pytest.raises(ValueError, match="output_size"):
        max_unpool2d(pooled, indices, 2, output_size=(6, 6))
    with pytest.raises(ValueError, match="indices"):
        max_unpool2d(pooled, indices, 2, output_size=(3, 3))  # index 15 is past 3 x 3
    with pytest.raises(ValueError, match="indices"):
        max_unpool2d(pooled, indices.int(), 2)
    with pytest.raises(ValueError, match="indices"):
        max_unpool2d(pooled, indices[..., :1], 2)
    with pytest.raises(ValueError, match="kernel_size"):
        max_unpool2d(pooled, indices, 0)


# ---------------------------------------------------------------- bilinear kernel


def test_bilinear_kernel_by_hand():
    # scale 2: k = 4, centre 1.5, tent 1 - |t - 1.5| / 2 = [1/4, 3/4, 3/4, 1/4].
    # scale 3: k = 5, centre 2, tent 1 - |t - 2| / 3 = [1/3, 2/3, 1, 2/3, 1/3].
    k2 = bilinear_kernel(2, 2, dtype=torch.float64)
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    torch.testing.assert_close(k2[0, 0], torch.outer(tent, tent))
    torch.testing.assert_close(k2[1, 1], torch.outer(tent, tent))
    assert k2[0, 1].abs().sum() == 0 and k2[1, 0].abs().sum() == 0  # no cross-channel mixing
    tent3 = torch.tensor([1, 2, 3, 2, 1], dtype=torch.float64) / 3
    torch.testing.assert_close(bilinear_kernel(1, 3, dtype=torch.float64)[0, 0], torch.outer(tent3, tent3))
    assert bilinear_kernel(3, 4).shape == (3, 3, 8, 8) and bilinear_kernel(3, 4).dtype == torch.float32


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_bilinear_kernel_is_interpolate_in_the_interior(device, scale):
    x = randn(2, 3, 5, 6, seed=scale, device=device)
    s = scale
    kernel = bilinear_kernel(3, s, dtype=x.dtype, device=device)
    ours = conv_transpose2d(x, kernel, stride=s, padding=s // 2)
    theirs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
    assert ours.shape == theirs.shape == (2, 3, 5 * s, 6 * s)
    # Equal away from the border: the first and last s // 2 rows and columns differ.
    b = s // 2
    inner = (..., slice(b, 5 * s - b), slice(b, 6 * s - b))
    torch.testing.assert_close(ours[inner], theirs[inner])
    if b:
        differs = (ours - theirs).abs() > 1e-9
        differs[inner] = False
        assert differs[..., :b, b:-b].all() and differs[..., -b:, b:-b].all()  # every border row
        assert differs[..., b:-b, :b].all() and differs[..., b:-b, -b:].all()  # every border column
    # Precisely: the convolution interpolates the input padded with one ring of zeros,
    # and with a replicated ring (interpolate's clamping) it is interpolate everywhere.
    zero_ring = F.interpolate(F.pad(x, (1, 1, 1, 1)), scale_factor=s, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, zero_ring[..., s : s + 5 * s, s : s + 6 * s])
    replicated = F.pad(x, (1, 1, 1, 1), mode="replicate")
    torch.testing.assert_close(conv_transpose2d(replicated, kernel, stride=s, padding=s // 2 + s), theirs)


def test_bilinear_kernel_fades_a_constant_at_the_border():
    # Ones upsampled by 2: interior all 1; the outermost ring misses one neighbour of
    # weight 1/4 along each axis -> 3/4 on edges, 9/16 at corners (interpolate: all 1).
    out = conv_transpose2d(torch.ones(1, 1, 3, 3), bilinear_kernel(1, 2), stride=2, padding=1)[0, 0]
    tent = torch.tensor([0.75, 1, 1, 1, 1, 0.75])
    torch.testing.assert_close(out, torch.outer(tent, tent))


def test_bilinear_kernel_rejects_bad_arguments():
    for name, args in (("channels", (0, 2)), ("scale", (3, 0)), ("scale", (3, 2.0)), ("channels", (True, 2))):
        with pytest.raises(ValueError, match=name):
            bilinear_kernel(*args)


# ---------------------------------------------------------------- overlap counts


def test_overlap_counts_by_hand():
    # Kernel 3, stride 2, 3 inputs along an axis: stamps cover 0-2, 2-4, 4-6 -> the
    # shared columns 2 and 4 get two stamps, the others one: a checkerboard in 2-D.
    row3 = torch.tensor([1, 1, 2, 1, 2, 1, 1])
    torch.testing.assert_close(overlap_counts(3, 2, 3), torch.outer(row3, row3))
    # Kernel 4, stride 2: 0-3, 2-5, 4-7 -> interior evenly covered twice.
    row4 = torch.tensor([1, 1, 2, 2, 2, 2, 1, 1])
    torch.testing.assert_close(overlap_counts(4, 2, 3), torch.outer(row4, row4))
    # The 2-D pattern for kernel 3, stride 2 on a 2 x 2 input, drawn:
    #   1 1 2 1 1
    #   1 1 2 1 1
    #   2 2 4 2 2
    #   1 1 2 1 1
    #   1 1 2 1 1
    drawn = torch.tensor([[1, 1, 2, 1, 1], [1, 1, 2, 1, 1], [2, 2, 4, 2, 2], [1, 1, 2, 1, 1], [1, 1, 2, 1, 1]])
    torch.testing.assert_close(overlap_counts(3, 2, 2), drawn)


@pytest.mark.parametrize("kernel, stride, size", [(3, 2, (4, 5)), ((4, 3), (2, 3), (3, 2)), (2, 3, 3), (5, 1, (2, 3))])
def test_overlap_counts_match_a_transposed_convolution_of_ones(kernel, stride, size):
    size = size if isinstance(size, tuple) else (size, size)
    kernel2 = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    expected = F.conv_transpose2d(torch.ones(1, 1, *size), torch.ones(1, 1, *kernel2), stride=stride)[0, 0]
    torch.testing.assert_close(overlap_counts(kernel, stride, size), expected.long())


def test_overlap_counts_empty_and_bad_arguments():
    assert overlap_counts(3, 2, (0, 4)).shape == (0, 9)
    with pytest.raises(ValueError, match="kernel_size"):
        overlap_counts(0, 2, 3)
    with pytest.raises(ValueError, match="stride"):
        overlap_counts(3, 0, 3)
    with pytest.raises(ValueError, match="input_size"):
        overlap_counts(3, 2, -1)
