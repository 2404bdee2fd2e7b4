"""Cross-check probes of notebook 02, U-Net segmentation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cs_dense.grading.checks import CheckFailure, assert_tensor_close
from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.metrics import confusion_matrix, per_class_iou
from cs_dense.models import UNet
from cs_dense.ops import dice_loss


def _labels(gen: torch.Generator, shape: tuple[int, ...], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random true labels, and predictions that are right about half the time."""
    targets = torch.randint(0, num_classes, shape, generator=gen)
    noise = torch.randint(0, num_classes, shape, generator=gen)
    return torch.where(torch.rand(shape, generator=gen) < 0.5, targets, noise), targets


def _confusion_matrix(gen: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(4):
        num_classes = randint(gen, 2, 9)
        shape = tuple(int(s) for s in torch.randint(1, 20, (randint(gen, 1, 4),), generator=gen))
        preds, targets = _labels(gen, shape, num_classes)
        cases.append(Case(f"random labels {list(shape)}, {num_classes} classes", (preds, targets, num_classes),
                          expected=confusion_matrix(preds, targets, num_classes)))
    true, predicted = torch.randperm(5, generator=gen)[:2].tolist()
    shape = (randint(gen, 1, 4), randint(gen, 1, 9))
    preds, targets = torch.full(shape, predicted), torch.full(shape, true)
    cases.append(Case(f"every pixel of class {true} predicted as {predicted}: row {true}, column {predicted}",
                      (preds, targets, 5), expected=confusion_matrix(preds, targets, 5)))
    preds, targets = _labels(gen, (2, 6, 7), 3)
    cases.append(Case("labels 0 .. 2 with num_classes 5: rows and columns 3 and 4 are 0", (preds, targets, 5),
                      expected=confusion_matrix(preds, targets, 5)))
    return cases


def _iou_judge(expected: torch.Tensor, what: str):
    def judge(got: object) -> None:
        # NaN marks a class absent from truth and prediction, in the answer as in the reference
        assert_tensor_close(got, expected, case=what, equal_nan=True)

    return judge


def _per_class_iou(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        num_classes = randint(gen, 2, 7)
        preds, targets = _labels(gen, (3, 9, 7), num_classes)
        what = f"random label maps, {num_classes} classes"
        if trial % 2:
            preds[preds == 0] = 1
            targets[targets == num_classes - 1] = 1
            preds[preds == num_classes - 1] = 1
            what += ": class 0 never predicted, the last class absent (NaN)"
        confusion = confusion_matrix(preds, targets, num_classes)
        cases.append(Case(what, (confusion,), judge=_iou_judge(per_class_iou(confusion), what)))
    confusion = torch.randint(0, 50, (4, 4), generator=gen)
    confusion[2] = 0  # class 2 never present, but predicted: IoU 0, not NaN
    what = "a class predicted but never present"
    cases.append(Case(what, (confusion,), judge=_iou_judge(per_class_iou(confusion), what)))
    return cases


def _dice_inputs(gen: torch.Generator) -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    inputs = []
    for trial, smooth in enumerate((0.0, 1.0, 0.5, 10.0)):
        b = randint(gen, 2, 5) if trial < 2 else randint(gen, 1, 5)  # the first two mix several images
        c, h, w = randint(gen, 2, 7), randint(gen, 1, 7), randint(gen, 1, 7)
        dtype = torch.float32 if trial == 3 else torch.float64
        logits = (torch.randn(b, c, h, w, generator=gen, dtype=torch.float64) * 3).to(dtype)
        target = torch.randint(0, c, (b, h, w), generator=gen)
        inputs.append((f"logits {[b, c, h, w]} {dtype}, smooth {smooth}", logits, target, smooth))
    return inputs


def _dice_loss(gen: torch.Generator) -> list[Case]:
    return [Case(what, (logits, target), {"smooth": smooth}, expected=dice_loss(logits, target, smooth=smooth))
            for what, logits, target, smooth in _dice_inputs(gen)]


def _dice_gradients(gen: torch.Generator) -> list[Case]:
    cases = []
    for what, logits, target, smooth in _dice_inputs(gen)[:2]:
        leaf = logits.clone().requires_grad_()
        expected = torch.autograd.grad(dice_loss(leaf, target, smooth=smooth), leaf)
        cases.append(Case(f"gradient with respect to the logits, {what}", (logits, target),
                          {"smooth": smooth, "wrt": (0,)}, expected=expected))
    return cases


def _sizes_by_layers(input_size: int, depth: int, padding: int) -> list[int]:
    """The oracle: run the layers on a map without data (the meta device) and read the sizes off."""
    x = torch.zeros(1, 1, input_size, input_size, device="meta")
    conv, up = torch.zeros(1, 1, 3, 3, device="meta"), torch.zeros(1, 1, 2, 2, device="meta")
    sizes = [input_size]
    for stage in ["conv"] * 2 + ["pool", "conv", "conv"] * depth + ["up", "conv", "conv"] * depth:
        if stage == "conv":
            x = F.conv2d(x, conv, padding=padding)
        elif stage == "pool":
            x = F.max_pool2d(x, 2)
        else:
            x = F.conv_transpose2d(x, up, stride=2)
        sizes.append(x.shape[-1])
    return sizes


def _unet_sizes(gen: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(5):
        depth, padding = randint(gen, 1, 5), randint(gen, 0, 2)
        n = randint(gen, 8, 14)  # the bottleneck's input; every pooling above it receives an even size
        for _ in range(depth):
            n = 2 * n + 4 * (1 - padding)
        cases.append(Case(f"input {n}, depth {depth}, padding {padding}", (n, depth, padding),
                          expected=_sizes_by_layers(n, depth, padding)))
    # pooling number `level` receives an odd size: build the input up from it
    depth, padding = randint(gen, 2, 5), randint(gen, 0, 2)
    level, odd = randint(gen, 0, depth), 2 * randint(gen, 10, 40) + 1
    trim = 4 * (1 - padding)  # what the two convolutions of a level take off
    received = odd
    for _ in range(level):
        received = 2 * (received + trim)
    n = received + trim
    cases.append(Case(f"input {n}, depth {depth}, padding {padding}: pooling {level + 1} receives {odd}",
                      (n, depth, padding), raises="ValueError", mentions=(str(odd),)))
    n = 2 * randint(gen, 3, 7)
    cases.append(Case(f"input {n}, depth 1, padding 0: the convolutions reach 0", (n, 1, 0), raises="ValueError"))
    return cases


def _pattern(shape: torch.Size) -> torch.Tensor:
    """Weights that depend only on a parameter's shape, and for a 4-D weight not on its second
    axis: the same for every ordering of the parameters and of concatenated channels."""
    if len(shape) == 4:
        o, _, t, u = (torch.arange(n, dtype=torch.float64) for n in shape)
        values = torch.cos(0.9 * o[:, None, None] + 1.7 * t[:, None] + 2.3 * u + 0.1 * shape[1])
        return (values[:, None] / (shape[1] * shape[2] * shape[3]) ** 0.5).expand(shape)
    return 0.6 + 0.3 * torch.sin(1.3 * torch.arange(math.prod(shape), dtype=torch.float64) + 0.4).reshape(shape)


def _set_weights(model: nn.Module) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(_pattern(parameter.shape))


def unet_report(cls, config: dict, images: torch.Tensor) -> dict:
    """Recipe: build ``cls(**config)`` and describe it as data.

    ``parameters``: the count; ``values``: the output on ``images`` with :func:`_pattern`
    weights, in evaluation mode and float64; then, in training mode, ``shape``: of the output
    and ``no_gradient``: the parameters its mean square does not reach.
    """
    model = cls(**config)
    count = sum(p.numel() for p in model.parameters())
    _set_weights(model)
    model = model.double()
    with torch.no_grad():
        values = model.eval()(images.double())
    out = model.train()(images.double())
    out.square().mean().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    return {"parameters": count, "shape": list(out.shape), "no_gradient": unused, "values": values}


def _unet_judge(config: dict, images: torch.Tensor, what: str):
    reference = UNet(**config)
    count = sum(p.numel() for p in reference.parameters())
    shape = [len(images), config["num_classes"], *images.shape[2:]]
    _set_weights(reference)
    with torch.no_grad():
        values = reference.double().eval()(images.double())

    def judge(got: object) -> None:
        if type(got) is not dict or set(got) != {"parameters", "shape", "no_gradient", "values"}:
            raise CheckFailure(f"[{what}] UNet(**{config}) could not be described")
        if got["parameters"] != count:
            raise CheckFailure(f"[{what}] UNet(**{config}) has {got['parameters']} parameters; the architecture "
                               f"described in the text has {count}")
        if got["shape"] != shape:
            raise CheckFailure(f"[{what}] the output should have shape {shape}, got {got['shape']}")
        if got["no_gradient"]:
            raise CheckFailure(f"[{what}] these parameters get no gradient, so forward does not use them: "
                               f"{got['no_gradient'][:4]}")
        # every weight set from its shape alone, batch norm in evaluation mode, float64
        assert_tensor_close(got["values"], values, case=f"{what}: output with given weights, in evaluation mode")

    return judge


def _unet(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(3):
        depth = randint(gen, 1, 4)
        config = dict(in_channels=randint(gen, 1, 4), num_classes=randint(gen, 2, 5), depth=depth, width=randint(gen, 2, 5),
                      skip=bool(trial % 2))
        size = [2**depth * randint(gen, 1, 3) for _ in range(2)]
        images = torch.randn(2, config["in_channels"], *size, generator=gen)
        what = f"config {config} on {size[0]} x {size[1]}"
        cases.append(Case(what, (config, images), judge=_unet_judge(config, images, what)))
    config = dict(in_channels=3, num_classes=2, depth=2, width=2, skip=True)
    for what, shape in (("18 x 16 with depth 2 (18 is not a multiple of 4)", (1, 3, 18, 16)),
                        ("0 x 8 with depth 2", (1, 3, 0, 8)),
                        ("2 input channels for a 3-channel network", (1, 2, 8, 8)),
                        ("a single image without the batch dimension", (3, 8, 8))):
        cases.append(Case(what, (config, torch.randn(*shape, generator=gen)), raises="ValueError"))
    return cases


PROBES = {
    "test_confusion_matrix": (Probe("confusion_matrix", "confusion_matrix", _confusion_matrix),),
    "test_per_class_iou": (Probe("per_class_iou", "per_class_iou", _per_class_iou),),
    "test_dice_loss": (
        Probe("dice_loss", "dice_loss", _dice_loss),
        Probe("dice_loss", "dice_loss", _dice_gradients, recipe="cs_dense.grading.probes.recipes.gradients"),
    ),
    "test_unet_sizes": (Probe("unet_sizes", "unet_sizes", _unet_sizes),),
    "test_unet": (Probe("UNet", "UNet", _unet, recipe="cs_dense.grading.probes.unet_segmentation.unet_report"),),
}
