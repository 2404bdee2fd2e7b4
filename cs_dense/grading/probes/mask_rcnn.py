"""Cross-check probes of notebook 08, Mask R-CNN."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from cs_dense.grading.checks import CheckFailure
from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.models import mask_iou, maskrcnn_inference, maskrcnn_loss, paste_masks_in_image, project_masks_on_boxes
from cs_dense.validation import describe


def _boxes(gen: torch.Generator, k: int, H: float, W: float, side: float, dtype=torch.float32, start: float = -3.0):
    """k boxes, top left corners in [start, start + W) x [start, start + H), sides 0.2 to 0.2 + side."""
    xy = torch.rand(k, 2, generator=gen, dtype=torch.float64) * torch.tensor([W, H]) + start
    return torch.cat([xy, xy + torch.rand(k, 2, generator=gen, dtype=torch.float64) * side + 0.2], 1).to(dtype)


def _project_masks_on_boxes(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        G, H, W = randint(gen, 1, 5), randint(gen, 8, 40), randint(gen, 8, 40)
        K, M = randint(gen, 1, 8), randint(gen, 1, 20)
        hard = torch.rand(G, H, W, generator=gen) > 0.5
        masks = (hard, hard.to(torch.uint8), torch.rand(G, H, W, generator=gen))[trial % 3]
        dtype, aligned = (torch.float32, torch.float64)[trial % 2], trial % 2 == 0
        args = (masks, _boxes(gen, K, H, W, 20, dtype), torch.randint(0, G, (K,), generator=gen), M, aligned)
        what = f"G {G}, {H} x {W}, K {K}, M {M}, masks {masks.dtype}, boxes {dtype}, aligned={aligned}"
        cases.append(Case(what, args, expected=project_masks_on_boxes(*args)))
    masks = torch.rand(2, 10, 12, generator=gen) > 0.5
    no_boxes = (masks, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 7)
    cases.append(Case("no boxes", no_boxes, expected=project_masks_on_boxes(*no_boxes)))
    cases.append(Case("a matched index equal to G", (masks, torch.tensor([[1.0, 1, 5, 5]]), torch.tensor([2])),
                      raises="ValueError"))
    return cases


def mask_head_logits(head_class, in_channels, num_classes, conv_layers, dilation, weights, features) -> torch.Tensor:
    """Build the student's head, load ``weights`` (a (weight, bias) pair per 3x3 conv, then the upsampling and the
    logits layer) through its ``convs``, ``upsample`` and ``logits``, and run it on ``features``."""
    head = head_class(in_channels, num_classes, conv_layers, dilation)
    layers = _head_layers(head)
    if len(layers) != len(weights):
        raise ValueError(f"convs should hold {len(weights) - 2} nn.Conv2d layers, has {len(layers) - 2}")
    with torch.no_grad():
        for k, (layer, (weight, bias)) in enumerate(zip(layers, weights)):
            if layer.weight.shape != weight.shape or layer.bias is None:
                raise ValueError(f"layer {k} should have a weight of shape {list(weight.shape)} and a bias, got "
                                 f"{list(layer.weight.shape)}, bias {layer.bias is not None}")
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        return head(features)


def mask_head_init(head_class, in_channels, num_classes, conv_layers) -> list[tuple[float, float]]:
    """(standard deviation of the weights, largest absolute bias) of each layer of a new student head."""
    return [(layer.weight.std().item(), layer.bias.abs().max().item())
            for layer in _head_layers(head_class(in_channels, num_classes, conv_layers))]


def _head_layers(head) -> list[nn.Module]:
    """The convolutions of a head in order, through the attributes the notebook names."""
    for name, kind in (("convs", nn.Sequential), ("upsample", nn.ConvTranspose2d), ("logits", nn.Conv2d)):
        if not isinstance(getattr(head, name, None), kind):
            raise TypeError(f"MaskHead needs an attribute {name!r} that is an nn.{kind.__name__}")
    return [m for m in head.convs if isinstance(m, nn.Conv2d)] + [head.upsample, head.logits]


def _mask_head(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        in_channels, num_classes = randint(gen, 1, 12), randint(gen, 2, 7)
        layers = tuple(int(w) for w in torch.randint(1, 10, (randint(gen, 1, 5),), generator=gen))
        dilation, S, K = randint(gen, 1, 3), randint(gen, 1, 10), (0, randint(gen, 1, 6))[trial > 0]
        if trial == 4:
            in_channels, num_classes, layers, dilation, S = 64, 4, (64, 64), 1, 14  # section 6's head
        tv_heads = MaskRCNNHeads(in_channels, list(layers), dilation)
        tv_predictor = MaskRCNNPredictor(layers[-1], layers[-1], num_classes)
        tv_layers = [block[0] for block in tv_heads] + [tv_predictor.conv5_mask, tv_predictor.mask_fcn_logits]
        weights = []
        with torch.no_grad():
            for layer in tv_layers:
                fan_in = layer.weight[0].numel()
                weight = torch.randn(layer.weight.shape, generator=gen) * (2 / fan_in) ** 0.5
                bias = torch.randn(layer.bias.shape, generator=gen) * 0.1
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
                weights.append((weight, bias))
            features = torch.randn(K, in_channels, S, S, generator=gen)
            expected = tv_predictor(tv_heads(features))
        what = f"MaskHead({in_channels}, {num_classes}, {layers}, {dilation}) on [{K}, {in_channels}, {S}, {S}]"
        args = (in_channels, num_classes, layers, dilation, weights, features)
        cases.append(Case(what, args, expected=expected, rtol=1e-4, atol=1e-5))
    wrong = (in_channels, num_classes, layers, dilation, weights, torch.zeros(2, in_channels // 2, S, S))
    cases.append(Case(f"features with {in_channels // 2} channels for a {in_channels}-channel head", wrong,
                      raises="ValueError"))
    return cases


def _mask_head_init(gen: torch.Generator) -> list[Case]:
    num_classes, layers = 16, (96, 96, 96, 96)
    # He normal with fan_out: out_channels times the kernel's area (for the transposed conv, PyTorch's dim 1)
    fan_outs = [width * 9 for width in layers] + [layers[-1] * 4, num_classes]
    what = f"the initialisation of MaskHead(64, {num_classes}, {layers})"

    def judge(answer) -> None:
        if type(answer) not in (tuple, list) or len(answer) != len(fan_outs):
            raise CheckFailure(f"[{what}] expected {len(fan_outs)} (std, bias) pairs, got {describe(answer)}")
        for k, ((std, bias), fan_out) in enumerate(zip(answer, fan_outs)):
            ratio = std / (2 / fan_out) ** 0.5
            if not 0.85 < ratio < 1.15:
                raise CheckFailure(f"[{what}] layer {k}: weight std {std:.4g} is {ratio:.2f} times He's "
                                   f"sqrt(2 / fan_out) with fan_out {fan_out}")
            if bias != 0:
                raise CheckFailure(f"[{what}] layer {k}: biases should start at 0, the largest is {bias:.3g}")

    return [Case(what, (64, num_classes, layers), judge=judge)]


def _mask_batch(gen: torch.Generator, images: int, H: int, W: int, C: int, M: int, dtype=torch.float32):
    """Logits for the positive RoIs of some images, and their ground truths, as maskrcnn_loss takes them."""
    proposals, masks, labels, matched = [], [], [], []
    for _ in range(images):
        G, K = randint(gen, 1, 5), randint(gen, 0, 7)
        masks.append(torch.rand(G, H, W, generator=gen) > 0.4)
        labels.append(torch.randint(1, C, (G,), generator=gen))
        proposals.append(_boxes(gen, K, H * 0.7, W * 0.7, 12, dtype, start=0.0))
        matched.append(torch.randint(0, G, (K,), generator=gen))
    K = sum(len(p) for p in proposals)
    logits = (torch.randn(K, C, M, M, generator=gen, dtype=torch.float64) * 3).to(dtype)
    return logits, proposals, masks, labels, matched


def _no_positive(gen: torch.Generator) -> tuple:
    """The arguments of maskrcnn_loss for one image with a ground truth and no positive RoI."""
    masks = [torch.rand(1, 8, 8, generator=gen) > 0.5]
    return torch.zeros(0, 3, 7, 7), [torch.zeros(0, 4)], masks, [torch.tensor([1])], [torch.zeros(0, dtype=torch.int64)]


def _maskrcnn_loss(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        images, C, M = randint(gen, 1, 4), randint(gen, 2, 6), randint(gen, 1, 15)
        H, W = randint(gen, 10, 40), randint(gen, 10, 40)
        dtype, aligned = (torch.float32, torch.float64)[trial % 2], trial // 2 == 0
        args = (*_mask_batch(gen, images, H, W, C, M, dtype), aligned)
        cases.append(Case(f"{images} images, {len(args[0])} RoIs, C {C}, M {M}, {dtype}, aligned={aligned}", args,
                          expected=maskrcnn_loss(*args)))
    empty = _no_positive(gen)
    cases.append(Case("no positive RoI", empty, expected=maskrcnn_loss(*empty)))
    return cases


def _maskrcnn_loss_gradient(gen: torch.Generator) -> list[Case]:
    cases = []
    for args in (_mask_batch(gen, 2, 20, 24, 4, 6), _no_positive(gen)):
        logits = args[0].clone().requires_grad_()
        (expected,) = torch.autograd.grad(maskrcnn_loss(logits, *args[1:]), logits)
        cases.append(Case(f"the gradient with respect to the logits, {len(logits)} RoIs", args, {"wrt": (0,)},
                          expected=(expected,)))
    return cases


def _maskrcnn_inference(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        counts = [randint(gen, 0, 5) if trial < 3 else 0 for _ in range(randint(gen, 1, 4))]
        C, M = randint(gen, 2, 7), randint(gen, 1, 20)
        args = ((torch.randn(sum(counts), C, M, M, generator=gen) * 4),
                [torch.randint(1, C, (n,), generator=gen) for n in counts])
        cases.append(Case(f"detections per image {counts}, C {C}, M {M}", args, expected=maskrcnn_inference(*args)))
    return cases


def _pasted(masks: torch.Tensor, boxes: torch.Tensor, image_size, threshold: float, what: str, band: float = 1e-4):
    """A judge of pasted masks: the reference's pixels, except those whose value is within ``band`` of the threshold."""
    surely = paste_masks_in_image(masks.double(), boxes, image_size, min(1.0, threshold + band))
    maybe = paste_masks_in_image(masks.double(), boxes, image_size, max(0.0, threshold - band))

    def judge(answer) -> None:
        if type(answer) is not torch.Tensor or answer.dtype != torch.bool or answer.shape != surely.shape:
            raise CheckFailure(f"[{what}] expected a bool tensor of shape {list(surely.shape)}, got {describe(answer)}")
        wrong = (answer != surely) & (surely == maybe)
        if bool(wrong.any()):
            d, y, x = (int(i) for i in wrong.nonzero()[0])
            raise CheckFailure(f"[{what}] {int(wrong.sum())} pixels differ from the reference; the first is mask {d}, "
                               f"row {y}, column {x}: expected {bool(surely[d, y, x])}")

    return judge


def _paste_masks_in_image(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        D, M = randint(gen, 1, 5), randint(gen, 1, 9)
        H, W = randint(gen, 1, 20), randint(gen, 1, 20)
        dtype = (torch.float32, torch.float64)[trial % 2]
        masks = torch.rand(D, M, M, generator=gen, dtype=torch.float64)
        if trial == 2:
            masks = (masks > 0.5).double()
        sides = torch.rand(D, 2, generator=gen, dtype=torch.float64) * 14
        sides[sides < 3] /= 8  # some boxes narrower than a pixel
        xy = torch.rand(D, 2, generator=gen, dtype=torch.float64) * torch.tensor([W + 6.0, H + 6.0]) - 6
        boxes = torch.cat([xy, xy + sides + 1e-3], 1).to(dtype)
        threshold = float(torch.rand((), generator=gen)) if trial % 2 else 0.5
        masks = (masks[:, None] if trial == 3 else masks).to(dtype)
        what = f"{list(masks.shape)} masks on {H} x {W}, {dtype}, threshold {threshold:.3f}"
        args = (masks, boxes, (H, W), threshold)
        cases.append(Case(what, args, judge=_pasted(*args, what)))
    # Random sizes can leave every box off the image or thinner than a pixel; this one always
    # covers hundreds of pixels, so a mis-placed sampling grid cannot go unseen.
    M, side = randint(gen, 4, 9), 12 + 6 * float(torch.rand((), generator=gen))
    masks, xy = torch.rand(2, M, M, generator=gen), 2 + 4 * torch.rand(2, 2, generator=gen)
    args = (masks, torch.cat([xy, xy + side], 1), (24, 24), 0.5)
    what = f"2 masks of {M} x {M}, boxes of side {side:.1f} inside a 24 x 24 image"
    cases.append(Case(what, args, judge=_pasted(*args, what)))
    cases.append(Case("no masks", (torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 7)),
                      expected=torch.zeros(0, 5, 7, dtype=torch.bool)))
    cases.append(Case("a probability of 1.5", (torch.full((1, 2, 2), 1.5), torch.tensor([[0.0, 0, 4, 4]]), (4, 4)),
                      raises="ValueError"))
    return cases


def _mask_iou(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        N, M = randint(gen, 0 if trial == 3 else 1, 6), randint(gen, 1, 6)
        H, W = randint(gen, 1, 40), randint(gen, 1, 40)
        density = float(torch.rand((), generator=gen))
        masks1, masks2 = torch.rand(N, H, W, generator=gen) < density, torch.rand(M, H, W, generator=gen) < density
        masks1[:1] = False  # an empty mask
        dtype = (torch.bool, torch.uint8, torch.float32, torch.bool)[trial]
        args = (masks1.to(dtype), masks2.to(dtype))
        cases.append(Case(f"{N} x {M} masks of {H} x {W}, density {density:.2f}, {dtype}", args,
                          expected=mask_iou(*args)))
    # Random densities and sizes can leave no pair overlapping; at a density of a half on
    # 16 x 16 pixels every pair shares about 64 of them.
    args = (torch.rand(3, 16, 16, generator=gen) < 0.5, torch.rand(4, 16, 16, generator=gen) < 0.5)
    cases.append(Case("3 x 4 overlapping masks of 16 x 16, density 0.5", args, expected=mask_iou(*args)))
    return cases


PROBES = {
    "test_project_masks_on_boxes": (
        Probe("project_masks_on_boxes", "project_masks_on_boxes", _project_masks_on_boxes),
    ),
    "test_MaskHead": (
        Probe("MaskHead", "MaskHead", _mask_head, recipe="cs_dense.grading.probes.mask_rcnn.mask_head_logits"),
        Probe("MaskHead", "MaskHead", _mask_head_init, recipe="cs_dense.grading.probes.mask_rcnn.mask_head_init"),
    ),
    "test_maskrcnn_loss": (
        Probe("maskrcnn_loss", "maskrcnn_loss", _maskrcnn_loss, stand_in=("project_masks_on_boxes",)),
        Probe("maskrcnn_loss", "maskrcnn_loss", _maskrcnn_loss_gradient,
              recipe="cs_dense.grading.probes.recipes.gradients", stand_in=("project_masks_on_boxes",)),
    ),
    "test_maskrcnn_inference": (Probe("maskrcnn_inference", "maskrcnn_inference", _maskrcnn_inference),),
    "test_paste_masks_in_image": (Probe("paste_masks_in_image", "paste_masks_in_image", _paste_masks_in_image),),
    "test_mask_iou": (Probe("mask_iou", "mask_iou", _mask_iou),),
}
