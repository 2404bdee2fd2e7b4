"""Cross-check probes of notebook 04, anchors and the region proposal network."""

from __future__ import annotations

import torch
from torch import nn

from cs_dense.grading import CheckFailure, compare, stand_ins
from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.models import BoxCoder, RPNHead, base_anchors, grid_anchors, match_anchors, rpn_loss, select_proposals
from cs_dense.models.anchors import BBOX_XFORM_CLIP
from cs_dense.models.rpn import flatten_head_outputs
from cs_dense.ops import box_iou

_GRADIENTS = "cs_dense.grading.probes.recipes.gradients"
_F32 = {"rtol": 1e-5, "atol": 1e-4}  # float32 coordinates up to 200 through log and exp


def _boxes(gen: torch.Generator, n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n boxes of 2..60 pixels in a 200 x 200 image."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 140
    return torch.cat([xy, xy + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 58 + 2], 1).to(dtype)


# ------------------------------------------------------------------ anchors


def _base_anchors(gen: torch.Generator) -> list[Case]:
    half = ((5.0,), (1.0,))
    cases = [Case("size 5, ratio 1: +-2.5 rounds half to even", half, expected=base_anchors(*half))]
    for _ in range(5):
        sizes = tuple(float(v) for v in torch.randint(4, 300, (randint(gen, 1, 6),), generator=gen))
        ratios = tuple(round(float(v), 3) for v in torch.rand(randint(gen, 1, 5), generator=gen) * 3 + 0.2)
        cases.append(Case(f"sizes {sizes}, ratios {ratios}", (sizes, ratios), expected=base_anchors(sizes, ratios)))
    return cases


def _grid_anchors(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        base = base_anchors((16.0, 40.0), (0.5, 1.0, 3.0), dtype=(torch.float32, torch.float64)[trial % 2])
        size = (randint(gen, 2, 13), randint(gen, 2, 13)) if trial else (1, 1)
        stride = (randint(gen, 1, 33), randint(gen, 1, 33))
        cases.append(Case(f"{size[0]} x {size[1]} map, strides {stride}, {base.dtype}", (base, size, stride),
                          expected=grid_anchors(base, size, stride)))
    return cases


# ----------------------------------------------------------------- box coding


def _encode_boxes(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial, dtype in enumerate((torch.float64, torch.float32, torch.float64, torch.float32)):
        boxes, anchors = _boxes(gen, 40, dtype), _boxes(gen, 40, dtype)
        tolerance = _F32 if dtype == torch.float32 else {}
        if trial < 2:
            cases.append(Case(f"40 pairs, default weights, {dtype}", (boxes, anchors),
                              expected=BoxCoder().encode(boxes, anchors), **tolerance))
        else:
            weights = tuple(round(float(v), 3) for v in torch.rand(4, generator=gen) * 9 + 1)
            cases.append(Case(f"40 pairs, weights {weights}, {dtype}", (boxes, anchors, weights),
                              expected=BoxCoder(weights).encode(boxes, anchors), **tolerance))
    empty = torch.zeros(0, 4)
    cases.append(Case("no boxes", (empty, empty), expected=BoxCoder().encode(empty, empty)))
    return cases


def _decode_boxes(gen: torch.Generator) -> list[Case]:
    cases = []
    for dtype in (torch.float64, torch.float32, torch.float64):
        anchors = _boxes(gen, 40, dtype)
        deltas = torch.randn(40, 4, generator=gen, dtype=torch.float64).to(dtype)
        weights = tuple(round(float(v), 3) for v in torch.rand(4, generator=gen) * 9 + 1)
        tolerance = _F32 if dtype == torch.float32 else {}
        cases.append(Case(f"40 deltas, weights {weights}, {dtype}", (deltas, anchors, weights),
                          expected=BoxCoder(weights).decode(deltas, anchors), **tolerance))
    anchors = _boxes(gen, 20)
    wild = torch.randn(20, 4, generator=gen, dtype=torch.float64) * 6  # dw, dh beyond log(1000 / 16) at times
    cases.append(Case("20 wild deltas, clamped at log(1000 / 16)", (wild, anchors),
                      expected=BoxCoder(clamp=BBOX_XFORM_CLIP).decode(wild, anchors)))
    cases.append(Case("20 wild deltas, clamp 1.5", (wild, anchors), {"clamp": 1.5},
                      expected=BoxCoder(clamp=1.5).decode(wild, anchors)))
    return cases


# ------------------------------------------------------------------ labelling


def _labels(gt_boxes: torch.Tensor, anchors: torch.Tensor, high: float, low: float) -> tuple[torch.Tensor, ...]:
    """The course's labels (1, 0, -1) and each anchor's matched ground truth (meaningful where positive)."""
    matches = match_anchors(box_iou(gt_boxes, anchors), high, low)
    labels = torch.where(matches >= 0, 1, torch.where(matches == -1, 0, -1))
    return labels, matches.clamp(min=0)


def _labels_judge(what: str, gt_boxes: torch.Tensor, anchors: torch.Tensor, high: float, low: float):
    """labels exactly; matched exactly where positive, and any ground truth index elsewhere (0 without any)."""
    labels, matched = _labels(gt_boxes, anchors, high, low)
    positive, count = labels == 1, gt_boxes.shape[0]

    def judge(value: object) -> None:
        if type(value) not in (tuple, list) or len(value) != 2:
            raise CheckFailure(f"[{what}] label_anchors must return (labels, matched), got {type(value).__name__}")
        compare(value[0], labels, case=f"{what}: labels")
        got = value[1]
        if type(got) is not torch.Tensor or got.dtype != torch.int64 or got.shape != labels.shape:
            raise CheckFailure(f"[{what}] matched must be an int64 tensor of shape {list(labels.shape)}, got "
                               f"{getattr(got, 'dtype', type(got).__name__)} {list(getattr(got, 'shape', []))}")
        compare(got[positive], matched[positive], case=f"{what}: matched ground truth of the positive anchors")
        if ((got < 0) | (got >= max(count, 1))).any():
            raise CheckFailure(f"[{what}] matched holds {got[(got < 0) | (got >= max(count, 1))][:5].tolist()}, "
                               f"not indices of the {count} ground-truth boxes (0 when there are none)")

    return judge


def _label_problem(gen: torch.Generator, m: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Boxes of 8, 16 or 32 pixels a side, anchors near them, inside them and anywhere, and thresholds that some
    anchors' best IoU equals exactly. An anchor inside a box has IoU (its area) / (a power of 2): the same number
    in float32 and float64, so the thresholds are met exactly whatever precision the IoU is computed in."""
    xy = torch.randint(0, 80, (m, 2), generator=gen)
    wh = 2 ** torch.randint(3, 6, (m, 2), generator=gen)
    gt_boxes = torch.cat([xy, xy + wh], 1)
    near = gt_boxes.repeat(6, 1) + torch.randint(-3, 4, (6 * m, 4), generator=gen)
    inner_wh = (torch.rand(12 * m, 2, generator=gen) * wh.repeat(12, 1)).floor() + 1
    inner_xy = xy.repeat(12, 1) + ((wh.repeat(12, 1) - inner_wh) * torch.rand(12 * m, 2, generator=gen)).floor()
    xy = torch.randint(0, 100, (60, 2), generator=gen)
    anywhere = torch.cat([xy, xy + torch.randint(4, 40, (60, 2), generator=gen)], 1)
    anchors = torch.cat([near, torch.cat([inner_xy, inner_xy + inner_wh], 1), anywhere]).float()
    iou = box_iou(gt_boxes.float(), anchors)
    best = iou.max(dim=0).values
    # exact multiples of 1/1024, and no ground truth's best anchor (those are positive anyway)
    exact = best[((best * 1024).round() == best * 1024) & ~torch.isin(best, iou.max(dim=1).values)]
    high_pool = exact[(exact > 0.45) & (exact < 0.9)]
    high = float(high_pool[randint(gen, 0, len(high_pool))]) if len(high_pool) else 0.7
    low_pool = exact[(exact > 0.05) & (exact < min(high, 0.4))]
    low = float(low_pool[randint(gen, 0, len(low_pool))]) if len(low_pool) else 0.3
    return gt_boxes.float(), anchors, high, low


def _label_anchors(gen: torch.Generator) -> list[Case]:
    cases = []
    for m in (1, 3, 6):
        gt_boxes, anchors, high, low = _label_problem(gen, m)
        what = f"{m} ground truth, {len(anchors)} anchors, thresholds {high:.4f} and {low:.4f} met exactly by some"
        cases.append(Case(what, (gt_boxes, anchors, high, low),
                          judge=_labels_judge(what, gt_boxes, anchors, high, low)))
    gt = torch.tensor([[0.0, 0, 10, 10]])
    ties = torch.tensor([[0.0, 0, 10, 5], [0, 5, 10, 10], [0, 0, 10, 2]])
    far = torch.tensor([[100.0, 100, 110, 110]])
    for what, gt_boxes, anchors in (("two anchors tied at a box's best IoU 0.5", gt, ties),
                                    ("no ground-truth boxes", torch.zeros(0, 4), ties),
                                    ("a box overlapping no anchor", far, ties)):
        cases.append(Case(what, (gt_boxes, anchors), judge=_labels_judge(what, gt_boxes, anchors, 0.7, 0.3)))
    return cases


# ------------------------------------------------------------------ sampling


def _check_draw(what: str, value: object, labels: torch.Tensor, batch_size: int, fraction: float) -> None:
    """A right draw: two bool masks over the labels, drawing only from their label, as many as the budget allows."""
    num_pos = min(int(batch_size * fraction), int((labels == 1).sum()))
    num_neg = min(batch_size - num_pos, int((labels == 0).sum()))
    if type(value) not in (tuple, list) or len(value) != 2:
        raise CheckFailure(f"[{what}] sample_anchors must return (positive, negative), got {type(value).__name__}")
    for name, mask, label, count in (("positive", value[0], 1, num_pos), ("negative", value[1], 0, num_neg)):
        if type(mask) is not torch.Tensor or mask.dtype != torch.bool or mask.shape != labels.shape:
            raise CheckFailure(f"[{what}] {name} must be a bool tensor of shape {list(labels.shape)}, got "
                               f"{getattr(mask, 'dtype', type(mask).__name__)} {list(getattr(mask, 'shape', []))}")
        if (mask & (labels != label)).any():
            raise CheckFailure(f"[{what}] {name} anchors drawn where the label is not {label}")
        if int(mask.sum()) != count:
            raise CheckFailure(f"[{what}] {int(mask.sum())} {name} anchors drawn, expected {count}")


def _draw_judge(what: str, labels: torch.Tensor, batch_size: int, fraction: float):
    def judge(value: object) -> None:
        _check_draw(what, value, labels, batch_size, fraction)

    return judge


def _make_labels(gen: torch.Generator, positives: int, negatives: int, ignored: int) -> torch.Tensor:
    labels = torch.tensor([1] * positives + [0] * negatives + [-1] * ignored, dtype=torch.int64)
    return labels[torch.randperm(len(labels), generator=gen)]


def _sample_anchors(gen: torch.Generator) -> list[Case]:
    problems = [((20, 600, 30), 256, 0.5), ((300, 600, 30), 256, 0.5), ((10, 30, 50), 256, 0.5), ((0, 0, 5), 256, 0.5)]
    for _ in range(3):
        counts = [randint(gen, 0, 400) for _ in range(3)]
        problems.append((counts, randint(gen, 1, 512), round(float(torch.rand((), generator=gen)), 3)))
    cases = []
    for counts, batch_size, fraction in problems:
        labels = _make_labels(gen, *counts)
        what = f"{list(counts)} positive/negative/ignored, batch {batch_size}, fraction {fraction}"
        seed = randint(gen, 0, 2**31)
        cases.append(Case(what, (labels, batch_size, fraction, torch.Generator().manual_seed(seed)),
                          judge=_draw_judge(what, labels, batch_size, fraction)))
    return cases


def repeated_draws(sample_anchors, labels, batch_size, positive_fraction, seeds) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's draws with a fresh generator per seed: positive masks and negative masks, stacked."""
    draws = [sample_anchors(labels, batch_size, positive_fraction, torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws])


def _draws_judge(what: str, labels: torch.Tensor, seeds: list[int]):
    """Every draw right, the same seed the same draw, and every anchor drawn about equally often."""
    def judge(value: object) -> None:
        if type(value) not in (tuple, list) or len(value) != 2:
            raise CheckFailure(f"[{what}] expected the stacked positive and negative masks, got {type(value).__name__}")
        for i in range(len(seeds)):
            _check_draw(f"{what}, draw {i}", (value[0][i], value[1][i]), labels, 4, 0.5)
        if not (torch.equal(value[0][0], value[0][-1]) and torch.equal(value[1][0], value[1][-1])):
            raise CheckFailure(f"[{what}] two generators with the same seed drew different anchors: "
                               f"draw from the generator passed in, and only from it")
        # 2 of 10 each time: every positive and negative drawn about 0.2 * len(seeds) = 30 times (sd about 5)
        for name, masks, label in (("positives", value[0], 1), ("negatives", value[1], 0)):
            hits = masks[:-1, labels == label].sum(dim=0)
            if (hits - 0.2 * (len(seeds) - 1)).abs().max() > 24:
                raise CheckFailure(f"[{what}] {name} are not drawn uniformly: counts {hits.tolist()} in "
                                   f"{len(seeds) - 1} draws of 2 out of 10 (expected about 30 each)")
    return judge


def _sample_uniformity(gen: torch.Generator) -> list[Case]:
    labels = _make_labels(gen, 10, 10, 5)
    seeds = torch.randperm(10**6, generator=gen)[:150].tolist()
    seeds.append(seeds[0])
    what = "150 draws of 2 positives and 2 negatives out of 10 each, and a seed repeated"
    return [Case(what, (labels, 4, 0.5, seeds), judge=_draws_judge(what, labels, seeds))]


# ------------------------------------------------------------------ the head


def head_outputs(student_class, in_channels, num_anchors, weights, feature):
    """Build the student's RPNHead, load ``weights`` into its layers conv, objectness and deltas, run it on ``feature``.

    Runs in the kernel: returns the head's outputs as they are.
    """
    head = student_class(in_channels, num_anchors)
    with torch.no_grad():
        for name, value in weights.items():
            layer_name, kind = name.split(".")
            layer = getattr(head, layer_name, None)
            if not isinstance(layer, nn.Conv2d):
                raise TypeError(f"RPNHead needs an nn.Conv2d attribute named {layer_name!r}")
            param = getattr(layer, kind)
            if param is None or param.shape != value.shape:
                raise ValueError(f"RPNHead's {name} has shape {list(getattr(param, 'shape', []))}, "
                                 f"expected {list(value.shape)}")
            param.copy_(value)
        return head(feature)


def head_parameters(student_class, in_channels, num_anchors) -> dict[str, torch.Tensor]:
    """The parameters of a freshly built student RPNHead, by name."""
    return {name: p.detach() for name, p in student_class(in_channels, num_anchors).named_parameters()}


def _rpn_head(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        sizes = (8, 3, 2, 4, 5) if trial == 0 else [randint(gen, 1, 10) for _ in range(5)]
        channels, anchors, batch, height, width = sizes
        reference = RPNHead(channels, anchors)
        weights = {name: torch.randn(p.shape, generator=gen) * 0.3 for name, p in reference.state_dict().items()}
        reference.load_state_dict(weights)
        feature = torch.randn(batch, channels, height, width, generator=gen)
        with torch.no_grad():
            expected = flatten_head_outputs(*reference([feature]))
        cases.append(Case(f"{channels} channels, {anchors} anchors, batch {batch}, {height} x {width}",
                          (channels, anchors, weights, feature), expected=expected))
    return cases


def _init_judge(what: str, channels: int, anchors: int):
    shapes = {name: p.shape for name, p in RPNHead(channels, anchors).named_parameters()}

    def judge(value: object) -> None:
        if type(value) is not dict:
            raise CheckFailure(f"[{what}] expected the parameters by name, got {type(value).__name__}")
        for name, shape in shapes.items():
            if name not in value or value[name].shape != shape:
                raise CheckFailure(f"[{what}] RPNHead({channels}, {anchors}) needs a parameter {name} of shape "
                                   f"{list(shape)}, got {list(getattr(value.get(name), 'shape', []))}")
        extra = sum(p.numel() for p in value.values()) - sum(s.numel() for s in shapes.values())
        if extra:
            raise CheckFailure(f"[{what}] RPNHead({channels}, {anchors}) has {extra} parameters more than "
                               f"its three convolutions")
        for name in shapes:
            if name.endswith("bias") and value[name].abs().max() > 0:
                raise CheckFailure(f"[{what}] {name} should start at 0")
        weights = torch.cat([value[name].flatten() for name in shapes if name.endswith("weight")])
        std = float(weights.float().std())
        if not 0.009 < std < 0.011 or abs(float(weights.float().mean())) > 0.001:
            raise CheckFailure(f"[{what}] the weights should start normal with mean 0 and std 0.01, "
                               f"got mean {float(weights.mean()):.4f}, std {std:.4f}")

    return judge


def _rpn_head_init(gen: torch.Generator) -> list[Case]:
    what = "a fresh RPNHead(16, 9): zero biases, weights of std 0.01"
    return [Case(what, (16, 9), judge=_init_judge(what, 16, 9))]


# ------------------------------------------------------------------ the loss


def _reference_rpn_loss(objectness, deltas, labels, targets, positive, negative):
    """The package's rpn_loss on exactly the given sample: unsampled anchors ignored, a budget taking all the rest."""
    sampled = torch.where(positive, 1, torch.where(negative, 0, -1))
    return rpn_loss(objectness, deltas, sampled, targets, labels.shape[1], 1.0, torch.Generator())


def _rpn_problem(gen: torch.Generator, batch: int, n: int, dtype: torch.dtype = torch.float64) -> tuple:
    labels = torch.randint(-1, 2, (batch, n), generator=gen)
    positive = (labels == 1) & (torch.rand(batch, n, generator=gen) < 0.7)
    negative = (labels == 0) & (torch.rand(batch, n, generator=gen) < 0.5)
    objectness = (torch.randn(batch, n, generator=gen, dtype=torch.float64) * 2).to(dtype)
    deltas = (torch.randn(batch, n, 4, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
    targets = (torch.randn(batch, n, 4, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
    return objectness, deltas, labels, targets, positive, negative


def _rpn_loss(gen: torch.Generator) -> list[Case]:
    tolerance = {"rtol": 1e-6, "atol": 1e-8}
    cases = []
    for trial in range(3):
        batch, n = 1 + trial, randint(gen, 30, 80)
        problem = _rpn_problem(gen, batch, n)
        cases.append(Case(f"{batch} images x {n} anchors, a random sample", problem,
                          expected=_reference_rpn_loss(*problem), **tolerance))
    objectness, deltas, labels, targets, positive, negative = _rpn_problem(gen, 2, 50)
    problems = (
        ("every labelled anchor sampled", (objectness, deltas, labels, targets, labels == 1, labels == 0)),
        ("errors far above beta", (objectness, deltas + torch.tensor([5.0, -3, 5, -3], dtype=torch.float64), labels,
                                   targets, positive, negative)),
        ("nothing sampled", (objectness, deltas, labels, targets, *torch.zeros(2, *labels.shape, dtype=torch.bool))),
    )
    for what, problem in problems:
        cases.append(Case(what, problem, expected=_reference_rpn_loss(*problem), **tolerance))
    problem = _rpn_problem(gen, 2, 40, torch.float32)
    cases.append(Case("2 images x 40 anchors, float32", problem, expected=_reference_rpn_loss(*problem),
                      rtol=1e-5, atol=1e-6))
    return cases


def _rpn_loss_gradients(gen: torch.Generator) -> list[Case]:
    problem = _rpn_problem(gen, 2, 40)
    cases = []
    for index, name, wrt in ((0, "loss_objectness", 0), (1, "loss_box", 1)):
        leaf = problem[wrt].clone().requires_grad_()
        args = list(problem)
        args[wrt] = leaf
        expected = torch.autograd.grad(_reference_rpn_loss(*args)[index], leaf)
        cases.append(Case(f"the gradient of {name}", problem, {"wrt": (wrt,), "key": index}, expected=expected,
                          rtol=1e-6, atol=1e-8))
    return cases


# ------------------------------------------------------------------ proposals


def _reference_decode(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0), clamp=BBOX_XFORM_CLIP):
    return BoxCoder(weights, clamp).decode(deltas, anchors)


def with_reference_decode(select_proposals, *args, **kwargs):
    """The student's select_proposals with the package's decoding in place of their decode_boxes."""
    with stand_ins(select_proposals, {"decode_boxes": _reference_decode}):
        return select_proposals(*args, **kwargs)


def _select_proposals(gen: torch.Generator) -> list[Case]:
    anchors = grid_anchors(base_anchors((16, 24, 32, 48), (0.5, 1.0, 2.0)), (8, 8), (8, 8))  # 768 on a 64 x 64 image
    n = anchors.shape[0]
    cases = []
    by_hand = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 0.0005, 5], [-5, -5, 20, 70]])
    logits = torch.tensor([2.0, 1.0, 0.0, 5.0, -1.0])
    cases.append(Case("by hand: a sliver dropped, a near duplicate suppressed, a box clipped",
                      (logits, torch.zeros(5, 4), by_hand, (64, 64)),
                      expected=select_proposals(logits, torch.zeros(5, 4), by_hand, (64, 64), BoxCoder(), 1000, 100)))
    for trial in range(4):
        # distinct logits 0.01 apart: no ties in the order
        objectness = torch.linspace(-4, 4, n)[torch.randperm(n, generator=gen)]
        deltas = torch.randn(n, 4, generator=gen) * (0.2, 0.6)[trial % 2]
        pre, post = randint(gen, 20, 1000), randint(gen, 1, 200)
        thresh, min_size = round(float(torch.rand((), generator=gen)) * 0.6 + 0.3, 3), (1e-3, 2.0)[trial % 2]
        size = (64, randint(gen, 40, 80))
        cases.append(Case(f"{n} anchors, image {size}, pre {pre}, post {post}, NMS {thresh}, min_size {min_size}",
                          (objectness, deltas, anchors, size, pre, post, thresh, min_size),
                          expected=select_proposals(objectness, deltas, anchors, size, BoxCoder(), pre, post, thresh,
                                                    min_size)))
    return cases


PROBES = {
    "test_base_anchors": (Probe("base_anchors", "base_anchors", _base_anchors),),
    "test_grid_anchors": (Probe("grid_anchors", "grid_anchors", _grid_anchors),),
    "test_box_coding": (
        Probe("encode_boxes", "encode_boxes", _encode_boxes),
        Probe("decode_boxes", "encode_boxes", _decode_boxes),
    ),
    "test_label_anchors": (Probe("label_anchors", "label_anchors", _label_anchors),),
    "test_sample_anchors": (
        Probe("sample_anchors", "sample_anchors", _sample_anchors),
        Probe("sample_anchors", "sample_anchors", _sample_uniformity,
              recipe="cs_dense.grading.probes.anchors_rpn.repeated_draws"),
    ),
    "test_rpn_head": (
        Probe("RPNHead", "RPNHead", _rpn_head, recipe="cs_dense.grading.probes.anchors_rpn.head_outputs"),
        Probe("RPNHead", "RPNHead", _rpn_head_init, recipe="cs_dense.grading.probes.anchors_rpn.head_parameters"),
    ),
    "test_rpn_loss": (
        Probe("rpn_loss", "rpn_loss", _rpn_loss),
        Probe("rpn_loss", "rpn_loss", _rpn_loss_gradients, recipe=_GRADIENTS),
    ),
    "test_select_proposals": (
        Probe("select_proposals", "select_proposals", _select_proposals,
              recipe="cs_dense.grading.probes.anchors_rpn.with_reference_decode"),
    ),
}
