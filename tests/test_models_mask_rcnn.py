"""The Mask R-CNN detector: its mask loss and masks rebuilt from torchvision's ops, its contract, its ablations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import maskrcnn_loss as tv_maskrcnn_loss
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste
from torchvision.ops import box_iou as tv_box_iou
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops import roi_pool as tv_roi_pool

from cs_dense.models.mask_rcnn import MaskRCNN, MaskRCNNConfig, mask_positives, softmax_mask_loss
from cs_dense.models.masks import paste_masks_in_image
from cs_dense.models.two_stage import DetectorConfig
from reference_loops import random_boxes, shapes_detection_batch, training_losses

LOSSES = {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box_reg", "loss_mask"}


def _batch(count: int, device="cpu"):
    return shapes_detection_batch(count, ("boxes", "labels", "masks"), device)


def _captured(model: MaskRCNN):
    """Hooks that record the backbone's feature map and the RPN's proposals of the next forward."""
    seen = {}
    model.backbone.register_forward_hook(lambda module, args, out: seen.__setitem__("feature", out))
    model.rpn.register_forward_hook(lambda module, args, out: seen.__setitem__("proposals", out[0]))
    return seen


def _all_positives(proposals, targets):
    """Every proposal or ground-truth box with IoU >= 0.5, and its ground truth, by torchvision's box_iou."""
    boxes, matched = [], []
    for props, target in zip(proposals, targets):
        candidates = torch.cat([props.detach(), target["boxes"].float()])
        best, index = tv_box_iou(target["boxes"].float(), candidates).max(dim=0)
        boxes.append(candidates[best >= 0.5])
        matched.append(index[best >= 0.5])
    return boxes, matched


@pytest.mark.parametrize("conventions", ["torchvision", "aligned"])
def test_mask_loss_is_rebuilt_from_torchvision(device, conventions):
    # With a limit above the number of positives, every positive trains the mask head and
    # the (order-free) mean loss can be rebuilt: torchvision's box IoU for the positives,
    # its RoI Align for the features, its maskrcnn_loss for torchvision's conventions and
    # its RoI Align over the masks (aligned=True) for the course's targets.
    torch.manual_seed(0)
    model = MaskRCNN(MaskRCNNConfig(mask_rois_per_image=100_000, conventions=conventions)).to(device)
    images, targets = _batch(4, device)
    seen = _captured(model)
    loss = model(images, targets)["loss_mask"]
    boxes, matched = _all_positives(seen["proposals"], targets)
    assert sum(len(b) for b in boxes) > 20  # the ground truths and some proposals
    rois = torch.cat([torch.full((len(b), 1), float(i), device=device) for i, b in enumerate(boxes)])
    rois = torch.cat([rois, torch.cat(boxes)], 1)
    logits = model.mask_head(tv_roi_align(seen["feature"], rois, 14, 1 / 8, sampling_ratio=2, aligned=True))
    labels = [t["labels"] for t in targets]
    if conventions == "torchvision":
        expected = tv_maskrcnn_loss(logits, boxes, [t["masks"] for t in targets], labels, matched)
    else:
        projected = [
            tv_roi_align(t["masks"][:, None].float(), torch.cat([m[:, None].float(), b], 1), 28, 1.0, -1, aligned=True)
            for t, b, m in zip(targets, boxes, matched)
        ]
        classes = torch.cat([lab[m] for lab, m in zip(labels, matched)])
        chosen = logits[torch.arange(len(classes)), classes]
        expected = F.binary_cross_entropy_with_logits(chosen, torch.cat(projected)[:, 0].clamp(0, 1))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("conventions", ["aligned", "torchvision"])
def test_masks_are_the_predicted_class_pasted_into_each_box(device, conventions):
    torch.manual_seed(0)
    model = MaskRCNN(MaskRCNNConfig(conventions=conventions)).to(device)
    images, targets = _batch(4, device)
    training_losses(model, images, targets, steps=15)  # so that there are detections
    model.eval()
    seen = _captured(model)
    with torch.no_grad():
        detections = model(images)
    assert sum(len(d["boxes"]) for d in detections) > 0
    for i, det in enumerate(detections):
        count = len(det["boxes"])
        assert det["masks"].shape == (count, 128, 128) and det["masks"].dtype == torch.bool
        rois = torch.cat([torch.full((count, 1), float(i), device=device), det["boxes"]], 1)
        with torch.no_grad():
            logits = model.mask_head(tv_roi_align(seen["feature"], rois, 14, 1 / 8, sampling_ratio=2, aligned=True))
        probabilities = logits[torch.arange(count), det["labels"]].sigmoid()[:, None]  # [D, 1, 28, 28]
        if conventions == "aligned":
            expected = paste_masks_in_image(probabilities, det["boxes"], (128, 128))
        else:
            expected = tv_paste(probabilities, det["boxes"], (128, 128))[:, 0] >= 0.5
        assert torch.equal(det["masks"], expected)


def test_training_contract_and_gradients():
    torch.manual_seed(0)
    model = MaskRCNN()
    images, targets = _batch(2)
    losses = model(images, targets)
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.mask_head.parameters())
    model.eval()
    with torch.no_grad():
        detections = model(images, targets)  # targets are ignored in eval mode
    assert [set(d) for d in detections] == [{"boxes", "scores", "labels", "masks"}] * 2


def test_mask_loss_is_zero_and_attached_without_objects():
    torch.manual_seed(0)
    model = MaskRCNN()
    images, targets = _batch(2)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 128, 128, dtype=torch.uint8)}
    losses = model(images, [empty, empty])
    assert losses["loss_mask"].item() == 0 and losses["loss_mask"].requires_grad


@pytest.mark.parametrize("config", [
    MaskRCNNConfig(), MaskRCNNConfig(mask_roi_op="pool"), MaskRCNNConfig(mask_loss="softmax"),
    MaskRCNNConfig(conventions="torchvision"),
], ids=["paper", "roi_pool", "softmax", "torchvision"])
def test_every_variant_learns_the_masks_of_a_few_images(config):
    torch.manual_seed(0)
    model = MaskRCNN(config)
    images, targets = _batch(4)
    captured = []
    model.register_forward_hook(lambda module, args, out: captured.append(out["loss_mask"].item()))
    training_losses(model, images, targets, steps=40)
    assert sum(captured[-5:]) / 5 < 0.5 * sum(captured[:5]) / 5


def test_roi_pool_variant_pools_with_roi_pool():
    torch.manual_seed(0)
    model = MaskRCNN(MaskRCNNConfig(mask_roi_op="pool"))
    feature = torch.randn(2, 64, 16, 16)
    boxes = [random_boxes(5, 0), random_boxes(3, 1)]
    expected = tv_roi_pool(feature, boxes, 14, 1 / 8)
    torch.testing.assert_close(model.mask_features(feature, boxes), expected)


def test_mask_positives_against_a_loop():
    g = torch.Generator().manual_seed(0)
    gt = random_boxes(3, 5)
    proposals = torch.cat([gt.repeat(10, 1) + torch.randn(30, 4, generator=g) * 4, random_boxes(30, 6)])
    proposals = torch.cat([proposals[:, :2].minimum(proposals[:, 2:]), proposals[:, :2].maximum(proposals[:, 2:])], 1)
    candidates = torch.cat([proposals, gt])
    expected = {}
    for row, box in enumerate(candidates):
        ious = [tv_box_iou(box[None], g_box[None]).item() for g_box in gt]
        if max(ious) >= 0.5:
            expected[tuple(box.tolist())] = max(range(len(gt)), key=lambda j: ious[j])
    assert 3 < len(expected) < len(candidates)
    boxes, matched = mask_positives(proposals, gt, limit=1000)
    assert {tuple(b.tolist()): m.item() for b, m in zip(boxes, matched)} == expected
    boxes, matched = mask_positives(proposals, gt, limit=3)
    assert len(boxes) == 3 and all(expected[tuple(b.tolist())] == m.item() for b, m in zip(boxes, matched))
    boxes, matched = mask_positives(proposals, gt[:0], limit=3)
    assert boxes.shape == (0, 4) and matched.shape == (0,)


def test_softmax_mask_loss_against_a_pixel_loop():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 32, 32)
    masks[0, 4:20, 6:18] = 1
    masks[1, 10:30, 12:28] = 1
    boxes = torch.tensor([[5.0, 3.0, 19.0, 21.0], [11.0, 9.0, 29.0, 31.0], [4.0, 4.0, 20.0, 20.0]])
    matched, labels = torch.tensor([0, 1, 0]), torch.tensor([2, 3])
    logits = torch.randn(3, 4, 6, 6, generator=g)
    loss = softmax_mask_loss(logits, [boxes], [masks], [labels], [matched])
    targets = tv_roi_align(masks[:, None], torch.cat([matched[:, None].float(), boxes], 1), 6, 1.0, -1, aligned=True)[:, 0]
    total = 0.0
    for k in range(3):
        for a in range(6):
            for b in range(6):
                cls = labels[matched[k]].item() if targets[k, a, b] >= 0.5 else 0
                total -= torch.log_softmax(logits[k, :, a, b], 0)[cls].item()
    assert loss.item() == pytest.approx(total / (3 * 36), rel=1e-5)


def test_input_errors():
    model = MaskRCNN()
    images, targets = _batch(1)
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'masks'"):
        model(images, [{"boxes": targets[0]["boxes"], "labels": targets[0]["labels"]}])
    with pytest.raises(ValueError, match="targets are required"):
        model(images)
    with pytest.raises(ValueError, match="config must be a MaskRCNNConfig"):
        MaskRCNN(DetectorConfig())


@pytest.mark.parametrize("field, value, message", [
    ("mask_layers", (), "mask_layers must be a non-empty tuple"),
    ("mask_layers", (64, 0), r"mask_layers\[1\] must be an int >= 1"),
    ("mask_pool", 0, "mask_pool must be an int >= 1"),
    ("mask_rois_per_image", 0, "mask_rois_per_image must be an int >= 1"),
    ("mask_roi_op", "max", "mask_roi_op must be one of"),
    ("mask_loss", "hinge", "mask_loss must be one of"),
    ("conventions", "detectron", "conventions must be one of"),
    ("num_classes", 1, "num_classes must be an int >= 2"),  # the detector's own checks still run
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        MaskRCNNConfig(**{field: value})
