"""Anchors, box coding, anchor matching and the RPN against torchvision and hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead

from cs_dense.models.anchors import (
    IGNORED,
    NEGATIVE,
    AnchorGenerator,
    BoxCoder,
    base_anchors,
    grid_anchors,
    match_anchors,
    sample_balanced,
)
from cs_dense.models.rpn import RegionProposalNetwork, RPNHead, flatten_head_outputs, rpn_loss, rpn_targets, select_proposals
from cs_dense.ops.boxes import box_iou
from reference_loops import random_boxes


# ---------------------------------------------------------------- anchors


def test_base_anchors_by_hand():
    # Size 32, ratio 1: a 32 x 32 square centred on 0. Ratio 2 (h / w): w = 32 / sqrt 2 =
    # 22.63, h = 45.25; halves 11.31 and 22.63 round to 11 and 23.
    base = base_anchors((32,), (1.0, 2.0))
    torch.testing.assert_close(base, torch.tensor([[-16.0, -16, 16, 16], [-11, -23, 11, 23]]))


@pytest.mark.parametrize("feature_size, count", [((20, 15), 2700), ((38, 50), 17100)])
def test_anchor_counts_from_the_issue(feature_size, count):
    base = base_anchors((32, 64, 128), (0.5, 1.0, 2.0))
    assert grid_anchors(base, feature_size, (16, 16)).shape == (count, 4)


def test_grid_anchor_order_by_hand():
    # A 2 x 3 map with stride (8, 4) and two anchors: row (i * 3 + j) * 2 + a is anchor a
    # shifted by (4 j, 8 i).
    base = torch.tensor([[-1.0, -1, 1, 1], [-2, -3, 2, 3]])
    anchors = grid_anchors(base, (2, 3), (8, 4))
    for i in range(2):
        for j in range(3):
            for a in range(2):
                shift = torch.tensor([4.0 * j, 8 * i, 4 * j, 8 * i])
                torch.testing.assert_close(anchors[(i * 3 + j) * 2 + a], base[a] + shift)


@pytest.mark.parametrize(
    "sizes, ratios, feature_sizes, image_size",
    [
        (((32, 64, 128),), ((0.5, 1.0, 2.0),), [(20, 15)], (320, 240)),
        (((16, 24, 32, 48),), ((0.5, 1.0, 2.0),), [(16, 16)], (128, 128)),
        (((8,), (16, 24)), ((1.0,), (0.7, 1.3)), [(16, 12), (8, 6)], (128, 96)),
        (((20,),), ((1.0, 3.0),), [(7, 9)], (60, 80)),  # strides 8 and 8 by integer division
    ],
)
def test_anchor_generator_matches_torchvision(device, sizes, ratios, feature_sizes, image_size):
    images = torch.zeros(2, 3, *image_size, device=device)
    features = [torch.zeros(2, 4, h, w, device=device) for h, w in feature_sizes]
    ours = AnchorGenerator(sizes, ratios)(images, features)
    theirs = TVAnchorGenerator(sizes, ratios)(ImageList(images, [image_size] * 2), features)
    assert len(ours) == 2
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bad", [(), (0,), (-4, 8), (True,)])
def test_base_anchors_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="sizes"):
        base_anchors(bad, (1.0,))


def test_anchor_generator_wants_one_entry_per_map():
    with pytest.raises(ValueError, match="one entry per feature map"):
        AnchorGenerator(((32,), (64,)), ((1.0,),))
    with pytest.raises(ValueError, match="expected 1 feature maps"):
        AnchorGenerator()(torch.zeros(1, 3, 64, 64), [torch.zeros(1, 1, 8, 8)] * 2)


# ---------------------------------------------------------------- box coding


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("seed", range(3))
def test_encode_decode_match_torchvision_and_round_trip(device, weights, seed):
    boxes = random_boxes(50, seed, dtype=torch.float64).to(device)
    anchors = random_boxes(50, seed + 100, dtype=torch.float64).to(device)
    ours, theirs = BoxCoder(weights), tv_utils.BoxCoder(weights)
    deltas = ours.encode(boxes, anchors)
    torch.testing.assert_close(deltas, theirs.encode_single(boxes, anchors))
    torch.testing.assert_close(ours.decode(deltas, anchors), boxes)
    multi = torch.randn(50, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).to(device)
    torch.testing.assert_close(ours.decode(multi, anchors), theirs.decode_single(multi, anchors))


def test_encode_by_hand():
    # Anchor centre (10, 20), size 10 x 20; box centre (12, 25), size 20 x 10:
    # dx = 2 / 10, dy = 5 / 20, dw = log 2, dh = log 0.5.
    anchor = torch.tensor([[5.0, 10, 15, 30]])
    box = torch.tensor([[2.0, 20, 22, 30]])
    expected = torch.tensor([[0.2, 0.25, math.log(2), math.log(0.5)]])
    torch.testing.assert_close(BoxCoder().encode(box, anchor), expected)


@pytest.mark.parametrize("k", [1, 3])
def test_decode_no_references(k):
    # a detector whose scores are all under the threshold decodes nothing: [0, 4 K] in, [0, 4 K] out
    empty = torch.zeros(0, 4)
    assert BoxCoder().decode(torch.zeros(0, 4 * k), empty).shape == (0, 4 * k)
    assert tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(torch.zeros(0, 4 * k), empty).shape == (0, 4 * k)


def test_decode_clamps_before_exp():
    anchor = torch.tensor([[0.0, 0, 10, 10]])
    huge = torch.tensor([[0.0, 0, 100, 100]])
    boxes = BoxCoder().decode(huge, anchor)
    assert torch.isfinite(boxes).all()
    torch.testing.assert_close(boxes[0, 2] - boxes[0, 0], torch.tensor(10 * 1000 / 16))


def test_box_coder_errors():
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="same shape"):
        BoxCoder().encode(random_boxes(3, 0), random_boxes(4, 0))
    with pytest.raises(ValueError, match=r"deltas must have shape \[N, 4 \* K\]"):
        BoxCoder().decode(torch.zeros(3, 5), random_boxes(3, 0))


# ---------------------------------------------------------------- matching and sampling


def test_match_anchors_by_hand():
    # Two ground truths (rows), five anchors (columns).
    quality = torch.tensor(
        [
            [0.80, 0.50, 0.10, 0.00, 0.20],
            [0.75, 0.20, 0.25, 0.00, 0.65],
        ]
    )
    # a0: 0.80 >= 0.7 -> gt 0. a1: 0.5 in [0.3, 0.7) -> ignored. a2: 0.25 < 0.3 -> negative.
    # a3: 0 -> negative. a4: 0.65 ignored, but it is gt 1's best anchor... no: gt 1's best
    # is a0 (0.75), so a4 stays ignored; gt 1 gets no anchor of its own, as in the paper.
    expected = torch.tensor([0, IGNORED, NEGATIVE, NEGATIVE, IGNORED])
    torch.testing.assert_close(match_anchors(quality), expected)
    # Lower gt 1's IoU with a0: now a4 is gt 1's best anchor and is promoted.
    quality[1, 0] = 0.6
    torch.testing.assert_close(match_anchors(quality), torch.tensor([0, IGNORED, NEGATIVE, NEGATIVE, 1]))


def test_match_anchors_ties_promote_every_best_anchor():
    quality = torch.tensor([[0.4, 0.4, 0.1]])
    torch.testing.assert_close(match_anchors(quality), torch.tensor([0, 0, NEGATIVE]))
    torch.testing.assert_close(match_anchors(quality, allow_low_quality_matches=False), torch.tensor([IGNORED, IGNORED, NEGATIVE]))


def test_match_anchors_threshold_edges_are_inclusive():
    quality = torch.tensor([[0.7, 0.3, 0.2999]])
    assert match_anchors(quality, allow_low_quality_matches=False).tolist() == [0, IGNORED, NEGATIVE]


def test_match_anchors_without_ground_truth_and_without_overlap():
    assert match_anchors(torch.zeros(0, 4)).tolist() == [NEGATIVE] * 4
    # A ground truth touching no anchor promotes nothing (torchvision would match all to it).
    assert match_anchors(torch.zeros(1, 3)).tolist() == [NEGATIVE] * 3


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("low_quality", [True, False])
def test_match_anchors_matches_torchvision(device, seed, low_quality):
    gts = random_boxes(6, seed).to(device)
    anchors = grid_anchors(base_anchors((16, 32, 64), (0.5, 1.0, 2.0)), (16, 16), (8, 8)).to(device)
    quality = box_iou(gts, anchors)
    assert (quality.max(dim=1).values > 0).all()  # torchvision differs when a gt overlaps nothing
    theirs = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=low_quality)(quality)
    torch.testing.assert_close(match_anchors(quality, 0.7, 0.3, low_quality), theirs)


def test_match_anchors_errors():
    with pytest.raises(ValueError, match="low <= high"):
        match_anchors(torch.zeros(1, 1), high=0.3, low=0.7)
    with pytest.raises(ValueError, match="quality must have shape"):
        match_anchors(torch.zeros(3))


@pytest.mark.parametrize("num_pos, num_neg", [(300, 5000), (20, 5000), (20, 30), (0, 0)])
def test_sample_balanced_counts(num_pos, num_neg):
    labels = torch.cat([torch.ones(num_pos), torch.zeros(num_neg), -torch.ones(100)]).long()
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))]
    positive, negative = sample_balanced(labels, 256, 0.5, generator=torch.Generator().manual_seed(1))
    expected_pos = min(128, num_pos)
    assert int(positive.sum()) == expected_pos
    assert int(negative.sum()) == min(256 - expected_pos, num_neg)
    assert (labels[positive] == 1).all() and (labels[negative] == 0).all()
    # torchvision's sampler draws the same counts.
    tv_pos, tv_neg = tv_utils.BalancedPositiveNegativeSampler(256, 0.5)([labels])
    assert int(tv_pos[0].sum()) == int(positive.sum()) and int(tv_neg[0].sum()) == int(negative.sum())


def test_sample_balanced_is_uniform_over_candidates():
    labels = torch.tensor([1] * 10 + [0] * 10)
    g = torch.Generator().manual_seed(0)
    hits = sum(sample_balanced(labels, 4, 0.5, generator=g)[0].long() for _ in range(2000))
    # Each positive is drawn with probability 2 / 10: 400 of 2000 draws, sd ~18.
    assert (hits[:10] - 400).abs().max() < 90 and hits[10:].sum() == 0


# ---------------------------------------------------------------- RPN


def _tv_rpn(head, generator, **kwargs):
    return TVRegionProposalNetwork(
        generator, head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
        pre_nms_top_n=dict(training=kwargs["pre"], testing=kwargs["pre"]),
        post_nms_top_n=dict(training=kwargs["post"], testing=kwargs["post"]), nms_thresh=0.7,
    )


def _shared_heads(channels: int, num_anchors: int, seed: int) -> tuple[RPNHead, TVRPNHead]:
    torch.manual_seed(seed)
    ours = RPNHead(channels, num_anchors)
    theirs = TVRPNHead(channels, num_anchors)
    with torch.no_grad():
        for mine, tv in ((ours.conv, theirs.conv[0][0]), (ours.objectness, theirs.cls_logits), (ours.deltas, theirs.bbox_pred)):
            mine.weight.normal_(std=0.3)
            mine.bias.normal_(std=0.3)
            tv.weight.copy_(mine.weight)
            tv.bias.copy_(mine.bias)
    return ours, theirs


@pytest.mark.parametrize("seed", range(3))
def test_head_and_proposals_match_torchvision(seed):
    sizes, ratios = ((16, 32, 64),), ((0.5, 1.0, 2.0),)
    ours_head, tv_head = _shared_heads(8, 9, seed)
    images = torch.rand(2, 3, 128, 96, generator=torch.Generator().manual_seed(seed))
    features = [torch.randn(2, 8, 16, 12, generator=torch.Generator().manual_seed(seed + 1))]
    ours = RegionProposalNetwork(
        AnchorGenerator(sizes, ratios), ours_head,
        pre_nms_top_n=dict(training=300, testing=300), post_nms_top_n=dict(training=50, testing=50),
    ).eval()
    theirs = _tv_rpn(tv_head, TVAnchorGenerator(sizes, ratios), pre=300, post=50).eval()
    with torch.no_grad():
        our_props, _ = ours(images, features)
        their_props, _ = theirs(ImageList(images, [(128, 96)] * 2), {"0": features[0]})
    for a, b in zip(our_props, their_props):
        torch.testing.assert_close(a, b)


def test_flatten_order_matches_anchor_order():
    # Objectness of anchor a at (i, j) set to a code; flattening must list codes in anchor order.
    b, a, h, w = 1, 3, 2, 4
    code = torch.arange(h * w * a, dtype=torch.float32).view(h, w, a)  # code = (i * w + j) * a + a
    objectness = code.permute(2, 0, 1)[None]  # [1, A, H, W]
    deltas = code.permute(2, 0, 1)[:, None].expand(a, 4, h, w).reshape(1, 4 * a, h, w)
    flat_obj, flat_deltas = flatten_head_outputs([objectness], [deltas])
    torch.testing.assert_close(flat_obj[0], torch.arange(h * w * a, dtype=torch.float32))
    torch.testing.assert_close(flat_deltas[0], torch.arange(h * w * a, dtype=torch.float32)[:, None].expand(-1, 4))


def test_rpn_loss_matches_torchvision_when_the_sample_is_everything():
    # With a sample bigger than all labelled anchors, sampling is not random and the two
    # implementations must give the same losses.
    g = torch.Generator().manual_seed(0)
    anchors = grid_anchors(base_anchors((16, 32), (1.0,)), (12, 12), (8, 8))
    gts = [random_boxes(3, 1), random_boxes(2, 2)]
    coder = BoxCoder()
    labels, targets = zip(*(rpn_targets(anchors, gt, coder) for gt in gts))
    objectness = torch.randn(2, anchors.shape[0], generator=g)
    deltas = torch.randn(2, anchors.shape[0], 4, generator=g)
    ours = rpn_loss(objectness, deltas, torch.stack(labels), torch.stack(targets), batch_size_per_image=10_000, positive_fraction=0.5)
    tv = _tv_rpn(None, None, pre=1, post=1)
    tv.fg_bg_sampler = tv_utils.BalancedPositiveNegativeSampler(10_000, 0.5)
    tv_labels, tv_matched = tv.assign_targets_to_anchors([anchors, anchors], [{"boxes": gt} for gt in gts])
    tv_targets = tv.box_coder.encode(tv_matched, [anchors, anchors])
    for mine, theirs in zip(labels, tv_labels):
        # torchvision marks ignored anchors -1 too; its labels are float.
        torch.testing.assert_close(mine.float(), theirs)
    theirs = tv.compute_loss(objectness.reshape(-1, 1), deltas.reshape(-1, 4), list(tv_labels), list(tv_targets))
    torch.testing.assert_close(torch.stack(ours), torch.stack(list(theirs)))


def test_rpn_targets_without_objects_are_all_background():
    anchors = grid_anchors(base_anchors((16,), (1.0,)), (4, 4), (8, 8))
    labels, targets = rpn_targets(anchors, torch.zeros(0, 4), BoxCoder())
    assert labels.tolist() == [0] * 16 and targets.abs().sum() == 0


def test_select_proposals_keeps_top_and_removes_overlaps_by_hand():
    anchors = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 0.0005, 5]])
    objectness = torch.tensor([2.0, 1.0, 0.0, 5.0])
    boxes, scores = select_proposals(objectness, torch.zeros(4, 4), anchors, (64, 64), BoxCoder(), nms_thresh=0.7)
    # Anchor 3 is thinner than min_size; anchor 1 overlaps anchor 0 at IoU 9 / 11 > 0.7.
    torch.testing.assert_close(boxes, anchors[[0, 2]])
    torch.testing.assert_close(scores, torch.tensor([2.0, 0.0]).sigmoid())


def test_select_proposals_clips_to_the_image():
    anchors = torch.tensor([[-5.0, -5, 20, 20]])
    boxes, _ = select_proposals(torch.zeros(1), torch.zeros(1, 4), anchors, (16, 12), BoxCoder())
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0, 12, 16]]))


def test_rpn_requires_targets_in_training():
    rpn = RegionProposalNetwork(AnchorGenerator(((16,),), ((1.0,),)), RPNHead(4, 1))
    with pytest.raises(ValueError, match="targets are required"):
        rpn(torch.zeros(1, 3, 32, 32), [torch.zeros(1, 4, 4, 4)])
