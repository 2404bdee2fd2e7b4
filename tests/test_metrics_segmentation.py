"""Segmentation metrics against plain-Python references: counting pixels one by one and
intersecting pixel sets."""

from __future__ import annotations

import math

import pytest
import torch

from cs_dense.metrics import confusion_matrix, dice, mean_iou, per_class_iou, pixel_accuracy


def loop_confusion(preds, targets, num_classes, ignore_index=None):
    counts = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(preds.flatten().tolist(), targets.flatten().tolist()):
        if t != ignore_index:
            counts[t][p] += 1
    return counts


def set_iou(preds, targets, c):
    """IoU of class c as sets of pixel positions; None when both sets are empty."""
    pred = {i for i, p in enumerate(preds.flatten().tolist()) if p == c}
    true = {i for i, t in enumerate(targets.flatten().tolist()) if t == c}
    union = pred | true
    return len(pred & true) / len(union) if union else None


def random_labels(shape, num_classes, seed):
    return torch.randint(0, num_classes, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(5))
def test_confusion_matrix_counts_every_pixel(device, seed):
    num_classes = 2 + seed
    targets = random_labels((3, 17, 11), num_classes, seed)
    # mostly right, with random mistakes, so both diagonal and off-diagonal entries are busy
    preds = torch.where(random_labels((3, 17, 11), 4, seed + 100) == 0, random_labels((3, 17, 11), num_classes, seed + 200), targets)
    got = confusion_matrix(preds.to(device), targets.to(device), num_classes)
    assert got.dtype == torch.int64 and got.device.type == device
    assert got.tolist() == loop_confusion(preds, targets, num_classes)


def test_per_class_iou_and_mean_against_pixel_sets():
    for seed in range(5):
        targets = random_labels((2, 20, 20), 5, seed)
        preds = random_labels((2, 20, 20), 5, seed + 1)
        preds[0, :10] = targets[0, :10]
        targets[targets == 4] = 0  # class 4: predicted but never present -> IoU 0, counts
        preds[preds == 3] = 1
        targets[targets == 3] = 2  # class 3: never predicted, never present -> NaN, skipped
        confusion = confusion_matrix(preds, targets, 5)
        expected = [set_iou(preds, targets, c) for c in range(5)]
        got = per_class_iou(confusion)
        assert got.dtype == torch.float64
        assert math.isnan(got[3]) and expected[3] is None
        assert got[4] == 0.0
        for c in (0, 1, 2, 4):
            assert got[c].item() == pytest.approx(expected[c], rel=1e-12)
        present = [v for v in expected if v is not None]
        assert mean_iou(confusion) == pytest.approx(sum(present) / len(present), rel=1e-12)
        assert pixel_accuracy(confusion) == pytest.approx((preds == targets).double().mean().item(), rel=1e-12)


def test_dice_by_hand_and_its_relation_to_iou():
    # class 1: prediction covers 4 pixels, truth 6, 3 shared -> Dice = 2*3 / (4 + 6) = 0.6, IoU = 3/7
    targets = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    preds = torch.tensor([[1, 1, 1, 0, 0, 0, 1, 0]])
    confusion = confusion_matrix(preds, targets, 2)
    assert confusion.tolist() == [[1, 1], [3, 3]]
    assert dice(confusion)[1].item() == pytest.approx(0.6)
    assert per_class_iou(confusion)[1].item() == pytest.approx(3 / 7)
    iou = per_class_iou(confusion)
    torch.testing.assert_close(dice(confusion), 2 * iou / (1 + iou))


def test_ignore_index_drops_pixels_and_counts_add_up_over_batches():
    targets = random_labels((4, 9, 9), 3, 0)
    preds = random_labels((4, 9, 9), 3, 1)
    targets[:, 0] = 255
    whole = confusion_matrix(preds, targets, 3, ignore_index=255)
    assert whole.tolist() == loop_confusion(preds, targets, 3, ignore_index=255)
    assert whole.sum() == 4 * 8 * 9
    parts = sum(confusion_matrix(preds[i], targets[i], 3, ignore_index=255) for i in range(4))
    assert torch.equal(parts, whole)


def test_empty_and_perfect():
    assert confusion_matrix(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3).sum() == 0
    assert math.isnan(pixel_accuracy(torch.zeros(3, 3, dtype=torch.long)))
    assert math.isnan(mean_iou(torch.zeros(3, 3, dtype=torch.long)))
    labels = random_labels((5, 5), 3, 0)
    confusion = confusion_matrix(labels, labels, 3)
    assert mean_iou(confusion) == 1.0 and pixel_accuracy(confusion) == 1.0


@pytest.mark.parametrize(
    ("preds", "targets", "num_classes", "message"),
    [
        (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), 3, "preds must be an integer tensor"),
        (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 3, "same shape"),
        (torch.full((2,), 3), torch.zeros(2, dtype=torch.long), 3, r"preds holds label 3, outside 0..2"),
        (torch.zeros(2, dtype=torch.long), torch.full((2,), -1), 3, r"targets holds label -1"),
        (torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 0, "positive int"),
    ],
)
def test_bad_input_is_named(preds, targets, num_classes, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(preds, targets, num_classes)


def test_metrics_reject_a_non_square_matrix():
    with pytest.raises(ValueError, match=r"square \[C, C\]"):
        mean_iou(torch.zeros(3, 2, dtype=torch.long))
