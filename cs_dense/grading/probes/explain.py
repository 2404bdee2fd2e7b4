"""Cross-check probes of notebook 09, explaining a classifier.

captum, the test cells' oracle, is forbidden while the student's code runs, so the expected
values here come from :mod:`cs_dense.explain`, which is tested against captum.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cs_dense.explain import (
    ShapesClassifier,
    class_activation_map,
    fgsm,
    fooling_image,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    saliency_map,
)
from cs_dense.grading.checks import CheckFailure
from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.validation import describe


def _classifier(gen: torch.Generator, widths=(4, 6, 8), strides=(2, 1, 2)) -> ShapesClassifier:
    """A small random ShapesClassifier in eval mode, BatchNorm statistics random too (eval mode is not the identity)."""
    net = ShapesClassifier(widths=widths, strides=strides, first_kernel=3)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            elif isinstance(module, nn.Conv2d | nn.Linear):
                scale = (2 / module.weight[0].numel()) ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * scale)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return net.eval()


def _inputs(gen: torch.Generator, widen: int = 0, **net):
    """A random classifier, random images [B, 3, H, H + widen] and one random class per image."""
    B, H = randint(gen, 1, 5), randint(gen, 8, 25)
    model, images = _classifier(gen, **net), torch.rand(B, 3, H, H + widen, generator=gen)
    return model, images, torch.randint(0, 3, (B,), generator=gen)


def _shape(images: torch.Tensor) -> str:
    return f"{len(images)} image{'s' * (len(images) > 1)} of {images.shape[2]} x {images.shape[3]}"


def _maps(reference, gen: torch.Generator, **net) -> list[Case]:
    """Cases of a map of (model, images, target): classes per image, then one class for all."""
    cases = []
    for trial in range(3):
        model, images, target = _inputs(gen, trial, **net)
        if trial == 2:
            target = randint(gen, 0, 3)
        classes = target if trial == 2 else target.tolist()
        cases.append(Case(f"{_shape(images)}, classes {classes}", (model, images, target),
                          expected=reference(model, images, target)))
    return cases


def _saliency_map(gen: torch.Generator) -> list[Case]:
    cases = _maps(saliency_map, gen)
    model, images, _ = _inputs(gen)
    cases.append(Case("a model in training mode", (copy.deepcopy(model).train(), images, 0), raises="ValueError",
                      mentions=("eval",)))
    return cases


def _class_activation_map(gen: torch.Generator) -> list[Case]:
    return _maps(class_activation_map, gen)


def _grad_cam(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(5):
        model, images, target = _inputs(gen, 5)
        block, whole = randint(gen, 0, 3), trial % 2 == 1  # a block's output, or its convolution's
        layer = model.features[block] if whole else model.features[block][0]
        size = (randint(gen, 8, 40), randint(gen, 8, 40)) if trial >= 3 else None
        if trial == 4:
            target = randint(gen, 0, 3)
        what = f"{_shape(images)}, {'block' if whole else 'the convolution of block'} {block}, size {size}"
        cases.append(Case(what, (model, layer, images, target), {"size": size},
                          expected=grad_cam(model, layer, images, target, size)))
    return cases


def _guided_backprop(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        model, images, target = _inputs(gen, 2, widths=(5, 7, 6, 9), strides=(1, 2, 1, 2))
        rule = ("guided", "deconvnet")[trial % 2]
        args = (model, images, target) if trial == 2 else (model, images, target, rule)  # the default rule once
        cases.append(Case(f'rule "{rule}", {_shape(images)}', args,
                          expected=guided_backprop(model, images, target, rule)))
    return cases


def _guided_grad_cam(gen: torch.Generator) -> list[Case]:
    cases = []
    for block in range(3):
        model, images, target = _inputs(gen, 1)
        cases.append(Case(f"{_shape(images)}, block {block}", (model, model.features[block], images, target),
                          expected=guided_grad_cam(model, model.features[block], images, target)))
    return cases


def _fgsm(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        model, images, _ = _inputs(gen)
        labels = torch.randint(0, 2, (len(images), 3), generator=gen).float()
        epsilon, targeted = float(torch.rand((), generator=gen)) * 0.2, trial % 2 == 1
        if trial == 2:
            images = images.round()  # black and white: most steps are clamped
        args = (model, images, labels, epsilon, targeted)
        cases.append(Case(f"{_shape(images)}, epsilon {epsilon:.4f}, targeted={targeted}", args, expected=fgsm(*args)))
    model, images, _ = _inputs(gen)
    labels = torch.randint(0, 2, (len(images), 3), generator=gen).float()
    cases.append(Case("epsilon 0", (model, images, labels, 0.0), expected=images))
    return cases


def _fooled(model: nn.Module, image: torch.Tensor, target: int, step_size: float, max_steps: int, what: str):
    """A judge of a fooling image: in [0, 1], within steps * step_size of the image, S_target > 0 if it stopped
    early, and as many sign steps as the reference takes from this image."""
    _, steps_needed = fooling_image(model, image, target, step_size, max_steps)

    def judge(answer) -> None:
        if type(answer) not in (tuple, list) or len(answer) != 2:
            raise CheckFailure(f"[{what}] expected an (image, steps) pair, got {describe(answer)}")
        x, steps = answer
        if type(x) is not torch.Tensor or x.shape != image.shape or x.dtype != image.dtype:
            raise CheckFailure(f"[{what}] expected an image like {describe(image)}, got {describe(x)}")
        if type(steps) is not int or not 0 <= steps <= max_steps:
            raise CheckFailure(f"[{what}] expected a number of steps in 0..{max_steps}, got {steps!r}")
        if not bool(torch.isfinite(x).all()) or x.min() < 0 or x.max() > 1:
            raise CheckFailure(f"[{what}] the image should stay in [0, 1]")
        moved = float((x - image).abs().max())
        if moved > steps * step_size + 1e-6:
            raise CheckFailure(f"[{what}] a value moved by {moved:.4g}, more than {steps} steps of {step_size:.4g}")
        with torch.no_grad():
            score = float(model(x[None])[0, target])
        if steps < max_steps and score <= 0:
            raise CheckFailure(f"[{what}] stopped after {steps} of {max_steps} steps, "
                               f"but S_{target} = {score:.4g} <= 0")
        if steps != steps_needed:
            raise CheckFailure(f"[{what}] took {steps} steps; sign steps from this image take {steps_needed}")

    return judge


def _fooling_image(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        model = _classifier(gen)
        H = randint(gen, 8, 25)
        image = torch.rand(3, H, H + 1, generator=gen)
        with torch.no_grad():
            scores = model(image[None])[0]
            target = int(scores.argmax() if trial == 1 else scores.argmin())
            wanted = 10.0 if trial == 1 else -0.05 - 0.2 * float(torch.rand((), generator=gen))  # seen, or not yet
            model.classifier.bias[target] += wanted - scores[target]
        step_size, max_steps = ((0.005, 60), (0.02, 20), (0.001, 3), (0.02, 0))[trial]
        what = f"a {H} x {H + 1} image, class {target}, steps of {step_size}, at most {max_steps}"
        cases.append(Case(what, (model, image, target, step_size, max_steps),
                          judge=_fooled(model, image, target, step_size, max_steps, what)))
    return cases


PROBES = {
    "test_saliency_map": (Probe("saliency_map", "saliency_map", _saliency_map),),
    "test_class_activation_map": (Probe("class_activation_map", "class_activation_map", _class_activation_map),),
    "test_grad_cam": (Probe("grad_cam", "grad_cam", _grad_cam),),
    "test_guided_backprop": (Probe("guided_backprop", "guided_backprop", _guided_backprop),),
    "test_guided_grad_cam": (
        Probe("guided_grad_cam", "guided_grad_cam", _guided_grad_cam, stand_in=("grad_cam", "guided_backprop")),
    ),
    "test_fgsm": (Probe("fgsm", "fgsm", _fgsm),),
    "test_fooling_image": (Probe("fooling_image", "fooling_image", _fooling_image),),
}
