"""Single-object classification plus localisation: the multitask loss and the two-headed model."""

from __future__ import annotations

import math

import pytest
import torch

from cs_dense.models import SingleObjectLocalizer, localization_loss


def loop_loss(logits, box_pred, labels, boxes, box_weight, box_loss):
    """The definition, one image and one coordinate at a time, in Python floats."""
    ce, reg = 0.0, 0.0
    for b in range(len(labels)):
        row = logits[b].tolist()
        top = max(row)
        ce += top + math.log(sum(math.exp(v - top) for v in row)) - row[int(labels[b])]
        for got, want in zip(box_pred[b].tolist(), boxes[b].tolist()):
            d = abs(got - want)
            reg += d * d if box_loss == "l2" else (0.5 * d * d if d < 1 else d - 0.5)
    ce, reg = ce / len(labels), reg / (4 * len(labels))
    return ce, reg, ce + box_weight * reg


def test_hand_computed_case():
    # equal logits over 3 classes: CE = ln 3; one coordinate off by 0.2 out of 8: L2 = 0.04 / 8
    logits = torch.zeros(2, 3)
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, 0.3, 0.6, 0.9]])
    pred = boxes.clone()
    pred[1, 2] += 0.2
    loss = localization_loss(logits, pred, torch.tensor([0, 2]), boxes, box_weight=10.0)
    torch.testing.assert_close(loss["classification"], torch.tensor(math.log(3)))
    torch.testing.assert_close(loss["box"], torch.tensor(0.04 / 8))
    torch.testing.assert_close(loss["total"], torch.tensor(math.log(3) + 10 * 0.04 / 8))
    smooth = localization_loss(logits, pred, torch.tensor([0, 2]), boxes, box_loss="smooth_l1")
    torch.testing.assert_close(smooth["box"], torch.tensor(0.5 * 0.04 / 8))


@pytest.mark.parametrize("box_loss", ["l2", "smooth_l1"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_the_loop_definition(device, box_loss, seed):
    g = torch.Generator().manual_seed(seed)
    B, C = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(2, 6, (1,), generator=g))
    logits = torch.randn(B, C, generator=g, dtype=torch.float64) * 3
    boxes = torch.rand(B, 4, generator=g, dtype=torch.float64)
    pred = boxes + torch.randn(B, 4, generator=g, dtype=torch.float64) * 1.5  # errors on both sides of 1
    labels = torch.randint(0, C, (B,), generator=g)
    weight = float(torch.rand(1, generator=g)) * 5
    loss = localization_loss(logits.to(device), pred.to(device), labels.to(device), boxes.to(device), weight, box_loss)
    expected = loop_loss(logits, pred, labels, boxes, weight, box_loss)
    for key, want in zip(("classification", "box", "total"), expected):
        assert loss[key].device.type == device
        torch.testing.assert_close(loss[key].cpu(), torch.tensor(want, dtype=torch.float64))


def test_gradients_reach_both_heads():
    model = SingleObjectLocalizer(num_classes=3, channels=8, width=4)
    logits, boxes = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 3) and boxes.shape == (2, 4)
    assert ((boxes >= 0) & (boxes <= 1)).all()
    localization_loss(logits, boxes, torch.tensor([0, 1]), torch.rand(2, 4))["total"].backward()
    for head in (model.class_head, model.box_head):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_bad_arguments_are_named():
    logits, boxes, labels = torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got \[0, 3\]"):
        localization_loss(logits, boxes, torch.tensor([0, 3]), boxes)
    with pytest.raises(ValueError, match="same batch size B = 2"):
        localization_loss(logits, torch.zeros(3, 4), labels, boxes)
    with pytest.raises(ValueError, match=r"box_pred must be a floating tensor of shape \[B, 4\]"):
        localization_loss(logits, torch.zeros(2, 5), labels, boxes)
    with pytest.raises(ValueError, match="labels must be a torch.int64 tensor"):
        localization_loss(logits, boxes, labels.int(), boxes)
    with pytest.raises(ValueError, match="box_weight must be a number >= 0"):
        localization_loss(logits, boxes, labels, boxes, box_weight=-1)
    with pytest.raises(ValueError, match="box_loss must be one of"):
        localization_loss(logits, boxes, labels, boxes, box_loss="l1")
    with pytest.raises(ValueError, match=r"images must be a floating tensor of shape \[B, 3, H, W\]"):
        SingleObjectLocalizer()(torch.zeros(3, 32, 32))
