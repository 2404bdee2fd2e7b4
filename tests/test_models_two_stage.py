"""The RoI head's targets, loss and post-processing against torchvision; the whole detector's contract."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from cs_dense.data.shapes import ShapesDataset
from cs_dense.models.anchors import BoxCoder
from cs_dense.models.two_stage import (
    ROI_BOX_WEIGHTS,
    DetectorConfig,
    TwoStageDetector,
    fast_rcnn_loss,
    postprocess_detections,
    roi_targets,
)
from reference_loops import random_boxes, training_losses


def tv_roi_heads(score_thresh=0.05, nms_thresh=0.5, detections=100) -> RoIHeads:
    return RoIHeads(None, None, None, 0.5, 0.5, 128, 0.25, ROI_BOX_WEIGHTS, score_thresh, nms_thresh, detections)


@pytest.mark.parametrize("seed", range(4))
def test_roi_targets_match_torchvision(seed):
    gts = random_boxes(4, seed)
    labels = torch.randint(1, 4, (4,), generator=torch.Generator().manual_seed(seed))
    # proposals near the ground truths, so that all three outcomes occur
    jitter = torch.randn(60, 4, generator=torch.Generator().manual_seed(seed + 10)) * 6
    proposals = gts.repeat(15, 1) + jitter
    proposals = torch.cat([proposals[:, :2].minimum(proposals[:, 2:]), proposals[:, :2].maximum(proposals[:, 2:])], 1)
    ours_labels, ours_targets = roi_targets(proposals, gts, labels, BoxCoder(ROI_BOX_WEIGHTS))
    heads = tv_roi_heads()
    matched, tv_labels = heads.assign_targets_to_proposals([proposals], [gts], [labels])
    torch.testing.assert_close(ours_labels, tv_labels[0])
    assert (ours_labels > 0).any() and (ours_labels == 0).any()  # both outcomes are exercised
    tv_targets = heads.box_coder.encode([gts[matched[0]]], [proposals])[0]
    fg = ours_labels > 0
    torch.testing.assert_close(ours_targets[fg], tv_targets[fg])


def test_roi_targets_without_objects():
    labels, targets = roi_targets(random_boxes(5, 0), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), BoxCoder())
    assert labels.tolist() == [0] * 5 and targets.abs().sum() == 0


@pytest.mark.parametrize("seed", range(3))
def test_fast_rcnn_loss_matches_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    logits, deltas = torch.randn(40, 4, generator=g), torch.randn(40, 16, generator=g)
    labels, targets = torch.randint(0, 4, (40,), generator=g), torch.randn(40, 4, generator=g)
    ours = fast_rcnn_loss(logits, deltas, labels, targets)
    theirs = fastrcnn_loss(logits, deltas, [labels[:25], labels[25:]], [targets[:25], targets[25:]])
    torch.testing.assert_close(torch.stack(ours), torch.stack(theirs))


def test_fast_rcnn_loss_uses_only_the_true_class_deltas():
    # One foreground proposal of class 2: only deltas[8:12] matter.
    logits = torch.zeros(1, 3)
    deltas = torch.full((1, 12), 100.0)
    deltas[0, 8:12] = torch.tensor([0.5, 0.0, 0.0, 0.0])
    _, loss_box = fast_rcnn_loss(logits, deltas, torch.tensor([2]), torch.zeros(1, 4))
    # smooth L1 with beta 1/9 of 0.5: 0.5 - 0.5 / 9 = 0.4444
    torch.testing.assert_close(loss_box, torch.tensor(0.5 - 0.5 / 9))


@pytest.mark.parametrize("seed", range(4))
def test_postprocess_matches_torchvision(device, seed):
    g = torch.Generator().manual_seed(seed)
    proposals = random_boxes(200, seed).to(device)
    logits = (torch.randn(200, 4, generator=g) * 3).to(device)
    deltas = torch.randn(200, 16, generator=g).to(device)
    ours = postprocess_detections(logits, deltas, proposals, (128, 120), 0.05, 0.5, 30, coder=BoxCoder(ROI_BOX_WEIGHTS))
    boxes, scores, labels = tv_roi_heads(0.05, 0.5, 30).postprocess_detections(logits, deltas, [proposals], [(128, 120)])
    assert len(ours["boxes"]) == 30
    torch.testing.assert_close(ours["boxes"], boxes[0])
    torch.testing.assert_close(ours["scores"], scores[0])
    torch.testing.assert_close(ours["labels"], labels[0])


def _batch(count: int):
    samples = [ShapesDataset("train")[i] for i in range(count)]
    return [image for image, _ in samples], [target for _, target in samples]


def test_detector_training_and_inference_contract():
    torch.manual_seed(0)
    model = TwoStageDetector(DetectorConfig())
    images, targets = _batch(2)
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        detections = model(images, targets)  # targets are ignored in eval mode
    assert len(detections) == 2
    for det in detections:
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape == (len(det["scores"]), 4) and det["labels"].dtype == torch.int64
        assert ((det["labels"] >= 1) & (det["labels"] <= 3)).all()


def test_detector_learns_a_few_images():
    # 60 steps on 4 images: the losses must fall well below their starting values.
    torch.manual_seed(0)
    model = TwoStageDetector(DetectorConfig())
    totals = training_losses(model, *_batch(4))
    assert sum(totals[-5:]) / 5 < 0.5 * sum(totals[:5]) / 5


def test_detector_input_errors():
    model = TwoStageDetector()
    with pytest.raises(ValueError, match="targets are required"):
        model([torch.zeros(3, 64, 64)])
    model.eval()
    with pytest.raises(ValueError, match="multiples of 8"):
        model([torch.zeros(3, 60, 64)])
    with pytest.raises(ValueError, match="one shape"):
        model([torch.zeros(3, 64, 64), torch.zeros(3, 32, 64)])


def test_detector_config_derives_the_stride_and_checks_its_fields():
    assert DetectorConfig().stride == 8
    with pytest.raises(TypeError, match="stride"):
        DetectorConfig(stride=16)  # the stride is the backbone's, not a setting
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        DetectorConfig(num_classes=1)
    with pytest.raises(ValueError, match="anchor_sizes must be a non-empty sequence of positive numbers"):
        DetectorConfig(anchor_sizes=())
    with pytest.raises(ValueError, match=r"rpn_post_nms_top_n \(testing\) must be an int >= 1"):
        DetectorConfig(rpn_post_nms_top_n=(300, 0))
