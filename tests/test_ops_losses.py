"""The soft Dice loss against a loop over classes and pixels, gradcheck and hand cases."""

from __future__ import annotations

import pytest
import torch

from cs_dense.ops import dice_loss


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
