"""The soft Dice loss against a loop over classes and pixels, and the sigmoid focal loss against
torchvision; gradcheck and hand cases for both."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from cs_dense.ops import dice_loss, sigmoid_focal_loss


def loop_dice_loss(logits, target, smooth=1.0, ignore_index=None, weight=None):
    """The formula, one class and one pixel at a time, in Python floats."""
    b, c = logits.shape[:2]
    probs = logits.double().softmax(1).reshape(b, c, -1).tolist()
    labels = target.reshape(b, -1).tolist()
    scores = []
    for k in range(c):
        inter = card = 0.0
        for i in range(b):
            for p, t in zip(probs[i][k], labels[i]):
                if t == ignore_index:
                    continue
                y = 1.0 if t == k else 0.0
                inter += p * y
                card += p + y
        scores.append((2 * inter + smooth) / (card + smooth))
    w = [1.0] * c if weight is None else weight.tolist()
    return 1 - sum(wk * s for wk, s in zip(w, scores)) / sum(w)


def sample(seed, b=2, c=4, h=5, w=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g, dtype=torch.float64) * 2, torch.randint(0, c, (b, h, w), generator=g)


@pytest.mark.parametrize("smooth", [0.0, 1.0, 10.0])
def test_against_the_loop(device, smooth):
    for seed in range(3):
        logits, target = sample(seed)
        got = dice_loss(logits.to(device), target.to(device), smooth=smooth)
        assert got.shape == () and got.device.type == device
        assert got.item() == pytest.approx(loop_dice_loss(logits, target, smooth), rel=1e-10)


def test_ignore_index_and_weights_against_the_loop():
    logits, target = sample(3)
    target[0, :2] = 255
    weight = torch.tensor([0.1, 1.0, 2.0, 0.5])
    got = dice_loss(logits, target, ignore_index=255, weight=weight)
    assert got.item() == pytest.approx(loop_dice_loss(logits, target, 1.0, 255, weight), rel=1e-10)


def test_float32_and_other_spatial_ranks():
    logits, target = sample(4)
    got32 = dice_loss(logits.float(), target)
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(loop_dice_loss(logits, target), rel=1e-5)
    flat = dice_loss(logits.flatten(2), target.flatten(1))  # [B, C, L]: 1-d "images"
    assert flat.item() == pytest.approx(loop_dice_loss(logits, target), rel=1e-10)


def test_gradcheck():
    logits, target = sample(5, b=1, c=3, h=3, w=4)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: dice_loss(x, target), (logits,))


def test_hand_cases():
    target = torch.tensor([[[0, 1], [1, 1]]])
    perfect = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).double() * 50  # softmax ~ one-hot
    assert dice_loss(perfect, target, smooth=0.0).item() == pytest.approx(0.0, abs=1e-12)
    wrong = torch.nn.functional.one_hot(1 - target, 2).movedim(-1, 1).double() * 50
    assert dice_loss(wrong, target, smooth=0.0).item() == pytest.approx(1.0, abs=1e-12)
    uniform = torch.zeros(1, 2, 2, 2, dtype=torch.float64)  # p = 1/2 everywhere
    # class 0: 2 * 0.5 / (2 + 1) = 1/3; class 1: 2 * 1.5 / (2 + 3) = 3/5; loss = 1 - (1/3 + 3/5) / 2
    assert dice_loss(uniform, target, smooth=0.0).item() == pytest.approx(1 - (1 / 3 + 3 / 5) / 2)
    # a class absent from the batch and never predicted counts as perfect with smoothing
    absent = torch.tensor([[[-50.0]], [[50.0]], [[-50.0]]], dtype=torch.float64)[None]  # [1, 3, 1, 1]
    assert dice_loss(absent, torch.tensor([[[1]]]), smooth=1.0).item() == pytest.approx(0.0, abs=1e-12)
    # without smoothing it scores 0: its probabilities are tiny but never exactly 0
    assert dice_loss(absent, torch.tensor([[[1]]]), smooth=0.0).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("logits", "target", "kwargs", "message"),
    [
        (torch.zeros(1, 3, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long), {}, "floating"),
        (torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), {}, "at least 2 classes"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), {}, "int64"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long), {}, r"shape \[1, 2, 2\]"),
        (torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 3), {}, "label 3, outside 0..2"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), {"smooth": -1.0}, "smooth"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), {"weight": torch.ones(2)}, "weight"),
    ],
)
def test_bad_input_is_named(logits, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dice_loss(logits, target, **kwargs)


# --------------------------------------------------------------------------- focal loss


def focal_sample(seed, shape=(3, 5, 4), dtype=torch.float64, soft=False):
    """Logits spread over [-6, 6] and 0/1 targets (or soft targets in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.rand(shape, generator=g, dtype=dtype) - 0.5) * 12
    targets = torch.rand(shape, generator=g, dtype=dtype) if soft else torch.randint(0, 2, shape, generator=g).to(dtype)
    return logits, targets


def _value_and_grad(fn, logits, targets, upstream, **kwargs):
    x = logits.detach().clone().requires_grad_(True)
    loss = fn(x, targets, **kwargs)
    (grad,) = torch.autograd.grad(loss, x, upstream if loss.ndim else None)
    return loss.detach(), grad


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha", [0.25, -1.0, 0.9])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_matches_torchvision(device, reduction, alpha, gamma):
    # float64: value and input gradient agree to rounding, for every reduction
    logits, targets = focal_sample(0)
    upstream = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kwargs = {"alpha": alpha, "gamma": gamma, "reduction": reduction}
    want, want_grad = _value_and_grad(tv_sigmoid_focal_loss, logits, targets, upstream, **kwargs)
    got, got_grad = _value_and_grad(sigmoid_focal_loss, logits.to(device), targets.to(device), upstream.to(device), **kwargs)
    assert got.device.type == device and got.shape == want.shape
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got_grad.cpu(), want_grad, rtol=1e-12, atol=1e-14)


def test_focal_loss_float32_and_soft_targets_match_torchvision():
    for soft in (False, True):
        logits, targets = focal_sample(2, shape=(40, 7), dtype=torch.float32, soft=soft)
        got = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
        assert got.dtype == torch.float32
        # float32: a few ulps of the per-element values
        torch.testing.assert_close(got, tv_sigmoid_focal_loss(logits, targets, 0.25, 2.0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_loss_saturated_logits_are_finite(device, gamma):
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0, 0.0])
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    upstream = torch.ones(5)
    want, want_grad = _value_and_grad(tv_sigmoid_focal_loss, logits, targets, upstream, alpha=0.25, gamma=gamma)
    got, got_grad = _value_and_grad(sigmoid_focal_loss, logits.to(device), targets.to(device), upstream.to(device), gamma=gamma)
    assert torch.isfinite(got).all() and torch.isfinite(got_grad).all()
    torch.testing.assert_close(got.cpu(), want)
    torch.testing.assert_close(got_grad.cpu(), want_grad)
    # confidently wrong: p_t = 0, (1 - p_t)^gamma = 1, CE = 100:
    # logit 100 on a negative costs (1 - 0.25) * 100 = 75, logit -100 on a positive 0.25 * 100 = 25
    assert got[2].item() == pytest.approx(75.0) and got[3].item() == pytest.approx(25.0)


def test_focal_loss_saturated_logits_have_finite_gradients_for_gamma_below_one():
    # The exact derivative of alpha_t * sigmoid(-z)^gamma * softplus(-z) at z = 100 is ~e^(-100 gamma),
    # finite and tiny; torchvision's is NaN here (inf * 0 once p_t rounds to 1), ours must be finite.
    logits = torch.tensor([100.0, -100.0], requires_grad=True)
    sigmoid_focal_loss(logits, torch.tensor([1.0, 0.0]), gamma=0.5).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() < 1e-6


def test_focal_loss_lecture_example_by_hand():
    # gamma = 2, alpha = 0.25; the logit with sigmoid(x) = p is log(p / (1 - p)).
    p = torch.tensor([0.99, 0.1, 0.01], dtype=torch.float64)
    logits = torch.log(p / (1 - p))
    targets = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    got = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    # easy positive, p_t = 0.99: CE = -log 0.99 = 0.0100503; FL = 0.25 * 0.01^2 * 0.0100503 = 2.5126e-7
    # hard positive, p_t = 0.1: CE = -log 0.1 = 2.302585; FL = 0.25 * 0.9^2 * 2.302585 = 0.25 * 0.81 * 2.302585 = 0.466273
    # easy background, p = 0.01 so p_t = 0.99, alpha_t = 1 - 0.25 = 0.75: FL = 0.75 * 1e-4 * 0.0100503 = 7.5377e-7
    assert got[0].item() == pytest.approx(2.5126e-7, rel=1e-4)
    assert got[1].item() == pytest.approx(0.466273, rel=1e-5)
    assert got[2].item() == pytest.approx(7.5377e-7, rel=1e-4)
    # against plain CE the easy positive shrinks 40000-fold (0.25 * 1e-4), the hard one only 5-fold (0.25 * 0.81)
    ce = -math.log(0.99), -math.log(0.1)
    assert got[0].item() / ce[0] == pytest.approx(2.5e-5) and got[1].item() / ce[1] == pytest.approx(0.2025)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_loss_without_focusing_is_bce(reduction):
    logits, targets = focal_sample(3)
    got = sigmoid_focal_loss(logits, targets, alpha=-1.0, gamma=0.0, reduction=reduction)
    want = F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_focal_loss_gradcheck():
    logits, targets = focal_sample(4, shape=(2, 3))
    logits.requires_grad_(True)
    for gamma in (0.5, 2.0):
        assert torch.autograd.gradcheck(lambda x, g=gamma: sigmoid_focal_loss(x, targets, 0.25, g, "sum"), (logits,))


def test_focal_loss_empty_input():
    empty = torch.zeros(0, 4)
    assert sigmoid_focal_loss(empty, empty).shape == (0, 4)
    assert sigmoid_focal_loss(empty, empty, reduction="sum").item() == 0.0


@pytest.mark.parametrize(
    ("inputs", "targets", "kwargs", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 2), {}, r"targets must have the shape of inputs \[2, 3\]"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), {}, "inputs must be a floating tensor"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"reduction": "max"}, "reduction must be one of"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"gamma": -0.5}, "gamma must be a number >= 0"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"alpha": 1.5}, "alpha must be a number <= 1"),
    ],
)
def test_focal_loss_bad_input_is_named(inputs, targets, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sigmoid_focal_loss(inputs, targets, **kwargs)
