"""Notebook 09's reference, ``cs_dense.explain``: the maps and attacks against captum
(``Saliency``, ``LayerGradCam``, ``GuidedBackprop``, ``Deconvolution``, ``GuidedGradCam``,
``FGSM``, ``PGD``), CAM against an einsum and the score identity, the guided and deconvnet
rules written out with explicit masks in NumPy, the scores of maps and the VOC AP against
Python loops and hand cases, the cascading randomisation's bookkeeping; hooks, gradients,
errors, devices."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam, Saliency
from captum.robust import FGSM, PGD
from torch import nn

from cs_dense.data import load_split
from cs_dense.explain import (
    SHAPE_CLASSES,
    ShapesClassifier,
    cascading_randomization,
    centre_baseline,
    class_activation_map,
    class_masks,
    fgsm,
    fooling_image,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    multilabel_ap,
    pointing_game,
    presence,
    saliency_map,
    top_area_iou,
)

# captum warns that the inputs "did not already require gradients" (it sets the flag itself).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Input Tensor:UserWarning"),
    pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning"),  # captum's own hooks
]

# float64 throughout: captum and the package run the same operations, so they agree to round-off.
CLOSE = dict(rtol=1e-10, atol=1e-12)
EXACT = dict(rtol=0, atol=0)


# --------------------------------------------------------------------------- helpers


def random_classifier(seed: int, device: str = "cpu") -> ShapesClassifier:
    """A small float64 ShapesClassifier in eval mode: seeded weights, and BatchNorm with random
    affine parameters and running statistics (so eval-mode BatchNorm is not the identity and the
    biases shift the ReLUs' inputs both ways), ``num_batches_tracked`` non-zero."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ShapesClassifier(widths=(4, 6, 8), strides=(2, 1, 2)).double()
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, nn.BatchNorm2d):
                    k = module.num_features
                    module.running_mean.copy_(0.3 * torch.randn(k, dtype=torch.float64))
                    module.running_var.copy_(0.5 + torch.rand(k, dtype=torch.float64))
                    module.weight.copy_(0.5 + torch.rand(k, dtype=torch.float64))
                    module.bias.copy_(0.3 * torch.randn(k, dtype=torch.float64))
                    module.num_batches_tracked.fill_(7)
            net.classifier.bias.copy_(0.2 * torch.randn(net.classifier.out_features, dtype=torch.float64))
    return net.eval().to(device)


def random_images(seed: int, count: int = 3, size: int = 32, device: str = "cpu") -> torch.Tensor:
    """Images in [0, 1] on a grid of 1/256 (exact 0s and 1s included), float64. On that grid
    adding multiples of a power-of-two step is exact, so sign steps compare bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 257, (count, 3, size, size), generator=gen).double() / 256).to(device)


def hook_state(model: nn.Module) -> dict:
    """Every hook dictionary of every module of ``model`` and of ``torch.nn``'s global hooks, by key."""
    state = {
        name: {attr: tuple(value.keys()) for attr, value in vars(module).items() if "hook" in attr and isinstance(value, dict)}
        for name, module in model.named_modules()
    }
    glob = vars(torch.nn.modules.module)
    state["<global>"] = {k: tuple(v.keys()) for k, v in glob.items() if k.startswith("_global") and isinstance(v, dict)}
    return state


def add_user_hooks(net: ShapesClassifier) -> None:
    """Hooks the user had registered before: the package must leave them in place."""
    net.features[-1].register_forward_hook(lambda module, inputs, output: None)
    net.features[1].register_forward_pre_hook(lambda module, inputs: None)
    net.features[1][2].register_forward_hook(lambda module, inputs, output: None)


def plain_gradient(net: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).gather(1, target[:, None]).sum(), x)
    return grad


def assert_no_grads(net: nn.Module) -> None:
    assert all(p.grad is None for p in net.parameters())


def maps_for(net: nn.Module):
    """Each map of the package as ``f(model, images, target)``."""
    return {
        "saliency": saliency_map,
        "cam": class_activation_map,
        "grad_cam": lambda m, x, t: grad_cam(m, net.features[1], x, t),
        "guided": guided_backprop,
        "deconvnet": lambda m, x, t: guided_backprop(m, x, t, rule="deconvnet"),
        "guided_grad_cam": lambda m, x, t: guided_grad_cam(m, net.features[-1], x, t),
    }


@pytest.fixture(scope="module")
def val_targets():
    return load_split("val", 4)[1]


# --------------------------------------------------------------------------- the classifier


def test_classifier_default_shapes_and_relu_modules():
    net = ShapesClassifier().eval()
    images = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    # defaults: widths (16, 32, 64, 128, 128), strides (2, 2, 2, 1, 1): 128 / 8 = 16
    with torch.no_grad():
        assert net(images).shape == (1, len(SHAPE_CLASSES)) == (1, 3)
        assert net.features(images).shape == (1, 128, 16, 16)
    assert len(net.features) == 5
    for block, width in zip(net.features, (16, 32, 64, 128, 128)):
        conv, bn, relu = block
        assert isinstance(conv, nn.Conv2d) and conv.out_channels == width and conv.bias is None
        assert isinstance(bn, nn.BatchNorm2d) and type(relu) is nn.ReLU and relu.inplace is False
    first = net.features[0][0]
    assert first.kernel_size == (7, 7) and first.stride == (2, 2) and first.padding == (3, 3)
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 5 and not any(m.inplace for m in relus)
    assert isinstance(net.classifier, nn.Linear) and (net.classifier.in_features, net.classifier.out_features) == (128, 3)
    # the forward is classifier(features(x).mean((2, 3))), the head CAM needs
    with torch.no_grad():
        torch.testing.assert_close(net(images), net.classifier(net.features(images).mean(dim=(2, 3))), **EXACT)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(widths=(4, 8), strides=(2,)), "widths and strides"),
        (dict(widths=(), strides=()), "widths and strides"),
        (dict(first_kernel=4), "first_kernel"),
        (dict(first_kernel=0), "first_kernel"),
    ],
)
def test_classifier_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapesClassifier(**kwargs)


# --------------------------------------------------------------------------- presence, multilabel AP


def test_presence_against_a_loop(val_targets):
    labels = presence(val_targets)
    assert labels.shape == (4, 3) and labels.dtype == torch.float32
    for row, target in zip(labels, val_targets):
        assert row.tolist() == [1.0 if k + 1 in target["labels"].tolist() else 0.0 for k in range(3)]
    empty = {"labels": torch.zeros(0, dtype=torch.int64)}
    assert presence([empty, {"labels": torch.tensor([2, 2])}]).tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="labels"):
        presence([{"labels": torch.tensor([0, 1])}])
    with pytest.raises(ValueError, match="labels"):
        presence([{"labels": torch.tensor([4])}])


def voc_ap_loop(scores: list[float], positive: list[bool]) -> float:
    """VOC 2010+: rank by score, precision and recall after each prediction, the area under
    the precision envelope (best precision at any later rank), summed over the recall steps."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    npos, tp, precision, recall = sum(positive), 0, [], []
    for k, i in enumerate(order, start=1):
        tp += positive[i]
        precision.append(tp / k)
        recall.append(tp / npos)
    area, previous = 0.0, 0.0
    for k in range(len(order)):
        area += (recall[k] - previous) * max(precision[k:])
        previous = recall[k]
    return area


def test_multilabel_ap_against_a_loop():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(15, 4, generator=gen, dtype=torch.float64)  # distinct scores
    labels = (torch.rand(15, 4, generator=gen) < 0.4).float()
    labels[0, :3] = 1.0
    labels[:, 3] = 0.0  # a class no image holds
    ap = multilabel_ap(scores, labels)
    assert ap.shape == (4,) and ap.dtype == torch.float64
    for c in range(3):
        assert ap[c].item() == pytest.approx(voc_ap_loop(scores[:, c].tolist(), labels[:, c].bool().tolist()), abs=1e-12)
    assert math.isnan(ap[3].item())
    # any monotone score: probabilities rank as the logits do
    torch.testing.assert_close(multilabel_ap(torch.sigmoid(scores), labels), ap, equal_nan=True, **EXACT)


def test_multilabel_ap_by_hand():
    # ranked hits at 1 and 3 of 4: precision 1 and 2/3 there, the envelope changes nothing
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    assert multilabel_ap(scores, torch.tensor([[1.0], [0.0], [1.0], [0.0]])).item() == pytest.approx((1 + 2 / 3) / 2)
    # hits at ranks 2, 4, 5: precision 1/2, 2/4, 3/5; the envelope lifts every step to 3/5
    # (without it, (1/2 + 1/2 + 3/5) / 3 = 8/15)
    scores = torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]])
    labels = torch.tensor([[0.0], [1.0], [0.0], [1.0], [1.0]])
    assert multilabel_ap(scores, labels).item() == pytest.approx(3 / 5)
    # all positives ranked first: 1; all last: hits at 3, 4, 5 of 5, precision 1/3, 2/4, 3/5,
    # the envelope 3/5 at each
    assert multilabel_ap(scores + 10 * labels, labels).item() == pytest.approx(1.0)
    assert multilabel_ap(scores - 10 * labels, labels).item() == pytest.approx(3 / 5)
    # image 0 holds both classes: ranked 2nd of 3 by column 0, 1st by column 1
    two = torch.tensor([[0.2, 0.9], [0.7, 0.1], [0.1, 0.5]])
    labels = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(multilabel_ap(two, labels), torch.tensor([0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="labels"):
        multilabel_ap(two, labels[:2])
    with pytest.raises(ValueError, match="scores"):
        multilabel_ap(two[:, 0], labels[:, 0])


# --------------------------------------------------------------------------- saliency


def test_saliency_equals_captum(device):
    net, images = random_classifier(0, device), random_images(1, device=device)
    for target in (2, torch.tensor([0, 2, 1])):
        got = saliency_map(net, images, target)
        assert_no_grads(net)
        assert not images.requires_grad and images.grad is None
        assert got.shape == (3, 32, 32) and got.device.type == device and not got.requires_grad
        t = target.to(device) if isinstance(target, torch.Tensor) else target
        expected = Saliency(net).attribute(images, target=t, abs=True).amax(dim=1)
        torch.testing.assert_close(got, expected, **CLOSE)


@pytest.mark.parametrize("name", ["saliency", "cam", "grad_cam", "guided", "deconvnet", "guided_grad_cam"])
@pytest.mark.parametrize(
    "target, message",
    [
        (3, "target classes"),
        (-1, "target classes"),
        (torch.tensor([0, 3, 1]), "target classes"),
        (torch.tensor([0.0, 1.0, 2.0]), "target must be"),
        (torch.tensor([0, 1]), "target must be"),
        (torch.tensor([[0, 1, 2]]), "target must be"),
        (torch.tensor([0, 1, 2], dtype=torch.int32), "target must be"),
        (True, "target must be"),
        (1.0, "target must be"),
    ],
)
def test_maps_reject_bad_targets(name, target, message):
    net, images = random_classifier(0), random_images(1)
    with pytest.raises(ValueError, match=message):
        maps_for(net)[name](net, images, target)


@pytest.mark.parametrize("name", ["saliency", "cam", "grad_cam", "guided", "deconvnet", "guided_grad_cam"])
def test_maps_reject_training_mode_and_bad_images(name):
    net = random_classifier(0)
    method = maps_for(net)[name]
    with pytest.raises(ValueError, match="eval"):
        method(net.train(), random_images(1), 0)
    net.eval()
    for images in (random_images(1)[0], random_images(1)[None], (random_images(1) * 256).long()):
        with pytest.raises(ValueError, match="images"):
            method(net, images, 0)
    with pytest.raises(ValueError, match="model"):
        method(lambda x: x, random_images(1), 0)


# --------------------------------------------------------------------------- CAM


def test_class_activation_map_equals_einsum_and_score_identity(device):
    net, images = random_classifier(2, device), random_images(3, device=device)
    signs = set()
    for target in (torch.tensor([1, 0, 2]), 2):
        t = target.to(device) if isinstance(target, torch.Tensor) else torch.full((3,), target, device=device)
        cams = class_activation_map(net, images, target)
        assert cams.shape == (3, 8, 8) and not cams.requires_grad
        with torch.no_grad():
            features = net.features(images)
            expected = torch.einsum("bk,bkhw->bhw", net.classifier.weight[t], features)
            torch.testing.assert_close(cams, expected, **CLOSE)
            scores = net(images)[torch.arange(3, device=device), t]
        torch.testing.assert_close(cams.mean(dim=(1, 2)) + net.classifier.bias[t], scores, **CLOSE)
        signs |= {1 if (cams > 0).any() else 0, -1 if (cams < 0).any() else 0}
    assert {1, -1} <= signs  # signed maps, not ReLU'd ones


def test_class_activation_map_needs_features_and_a_linear_classifier():
    images = random_images(3)
    with pytest.raises(ValueError, match="features"):
        plain = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
        class_activation_map(plain.double().eval(), images, 0)
    net = random_classifier(2)
    net.classifier = nn.Sequential(nn.Linear(8, 3)).double()
    with pytest.raises(ValueError, match="classifier"):
        class_activation_map(net.eval(), images, 0)


# --------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_equals_captum_at_several_layers_and_sizes(device):
    net, images = random_classifier(4, device), random_images(5, device=device)
    target = torch.tensor([2, 1, 0])
    layers = {
        "features[-1]": net.features[-1],
        "features[1]": net.features[1],
        "features[1][0] (conv)": net.features[1][0],
        "features[2][1] (bn)": net.features[2][1],
    }
    some_zero = some_positive = False
    for name, layer in layers.items():
        captum_map = LayerGradCam(net, layer).attribute(images, target=target.to(device), relu_attributions=True)
        got = grad_cam(net, layer, images, target)
        assert_no_grads(net)
        assert got.device.type == device and not got.requires_grad
        torch.testing.assert_close(got, captum_map[:, 0], **CLOSE, msg=name)
        some_zero |= bool((captum_map == 0).any())
        some_positive |= bool((captum_map > 0).any())
        for size in ((17, 41), [32, 32]):
            expected = LayerAttribution.interpolate(captum_map, tuple(size), interpolate_mode="bilinear")[:, 0]
            torch.testing.assert_close(grad_cam(net, layer, images, target, size=size), expected, **CLOSE, msg=name)
    assert some_zero and some_positive  # the ReLU matters on these maps


def test_grad_cam_at_the_last_block_is_relu_cam_over_hw(device):
    net, images = random_classifier(6, device), random_images(7, device=device)
    target = torch.tensor([0, 1, 2])
    h, w = 8, 8  # 32 / 2 / 1 / 2
    expected = F.relu(class_activation_map(net, images, target)) / (h * w)
    assert (expected == 0).any() and (expected > 0).any()
    torch.testing.assert_close(grad_cam(net, net.features[-1], images, target), expected, **CLOSE)


def test_grad_cam_leaves_the_hooks_as_they_were():
    net, images = random_classifier(8), random_images(9)
    add_user_hooks(net)
    before = hook_state(net)
    assert len(net.features[-1]._forward_hooks) == 1
    for layer in (net.features[-1], net.features[1], net.features[0][0]):
        grad_cam(net, layer, images, 1)
        assert hook_state(net) == before
    guided_grad_cam(net, net.features[1], images, 0)
    assert hook_state(net) == before
    # an exception inside the hooked forward (a class out of range is found after it runs)
    for layer in (net.features[-1], net.features[0][0]):
        with pytest.raises(ValueError, match="target classes"):
            grad_cam(net, layer, images, 3)
        assert hook_state(net) == before


def test_grad_cam_removes_its_hook_when_the_forward_raises():
    net = random_classifier(8)

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = net.features

        def forward(self, x):
            self.features(x)
            raise RuntimeError("boom")

    broken = Broken().eval()
    before = hook_state(broken)
    with pytest.raises(RuntimeError, match="boom"):
        grad_cam(broken, broken.features[1], random_images(0), 0)
    assert hook_state(broken) == before
    assert len(broken.features[1]._forward_hooks) == 0 and len(broken.features[1]._backward_hooks) == 0


def test_grad_cam_rejects_foreign_and_repeated_layers():
    net, images = random_classifier(9), random_images(0)
    for foreign in (nn.ReLU(), copy.deepcopy(net).features[-1]):
        with pytest.raises(ValueError, match="submodule"):
            grad_cam(net, foreign, images, 0)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.head = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.block(self.block(x)).mean(dim=(2, 3)))

    twice = Twice().double().eval()
    before = hook_state(twice)
    with pytest.raises(ValueError, match="once"):
        grad_cam(twice, twice.block, images, 0)
    assert hook_state(twice) == before
    assert_no_grads(twice)


# --------------------------------------------------------------------------- guided backpropagation, deconvnet


@pytest.mark.parametrize("rule, oracle", [("guided", GuidedBackprop), ("deconvnet", Deconvolution)])
def test_guided_backprop_equals_captum(device, rule, oracle):
    net, images = random_classifier(10, device), random_images(11, device=device)
    for target in (torch.tensor([0, 2, 1]), 1):
        got = guided_backprop(net, images, target, rule)
        assert_no_grads(net)
        assert got.shape == images.shape and not got.requires_grad
        t = target.to(device) if isinstance(target, torch.Tensor) else target
        torch.testing.assert_close(got, oracle(net).attribute(images, target=t), **CLOSE)


def test_guided_deconvnet_and_plain_gradient_differ():
    net, images = random_classifier(10), random_images(11)
    target = torch.tensor([0, 2, 1])
    guided = guided_backprop(net, images, target, "guided")
    deconv = guided_backprop(net, images, target, "deconvnet")
    plain = plain_gradient(net, images, target)
    for a, b in ((guided, deconv), (guided, plain), (deconv, plain)):
        assert not torch.allclose(a, b, rtol=1e-3, atol=1e-6)
    assert torch.equal(guided_backprop(net, images, target), guided)  # "guided" is the default


class TwoLayer(nn.Module):
    """Two hidden ReLU layers of a multilayer perceptron, for a backward pass written by hand."""

    def __init__(self, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(48, 10), nn.ReLU(), nn.Linear(10, 9), nn.ReLU(), nn.Linear(9, 3))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.double()

    def forward(self, x):
        return self.net(x)


def by_hand(model: TwoLayer, images: torch.Tensor, target: list[int], rule: str) -> np.ndarray:
    """The gradient of S_target through the two ReLUs under ``rule``, in NumPy with explicit masks."""
    (W1, b1), (W2, b2), (W3, _) = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in model.net[1::2]]
    out = []
    for x, t in zip(images.numpy().reshape(len(images), -1), target):
        z1 = W1 @ x + b1
        z2 = W2 @ np.maximum(z1, 0) + b2
        g = W3[t]  # dS_t / d relu(z2)
        for z, W in ((z2, W2), (z1, W1)):
            keep = {"plain": z > 0, "deconvnet": g > 0, "guided": (z > 0) & (g > 0)}[rule]
            g = W.T @ (g * keep)
        out.append(g.reshape(images.shape[1:]))
    return np.stack(out)


def test_guided_backprop_by_hand_with_explicit_masks():
    model, images = TwoLayer(12).eval(), random_images(13, count=5, size=4)
    target = [0, 1, 2, 1, 0]
    # the oracle's plain rule is the true gradient
    plain = plain_gradient(model, images, torch.tensor(target))
    np.testing.assert_allclose(plain.numpy(), by_hand(model, images, target, "plain"), rtol=1e-10, atol=1e-12)
    expected = {rule: by_hand(model, images, target, rule) for rule in ("guided", "deconvnet")}
    for rule in ("guided", "deconvnet"):
        got = guided_backprop(model, images, torch.tensor(target), rule)
        np.testing.assert_allclose(got.numpy(), expected[rule], rtol=1e-10, atol=1e-12)
    # the three rules give three different answers on this model
    assert not np.allclose(expected["guided"], expected["deconvnet"])
    assert not np.allclose(expected["guided"], plain.numpy()) and not np.allclose(expected["deconvnet"], plain.numpy())


def test_guided_backprop_leaves_no_hooks():
    net, images = random_classifier(14), random_images(15)
    add_user_hooks(net)
    before = hook_state(net)
    for rule in ("guided", "deconvnet"):
        guided_backprop(net, images, 1, rule)
        assert hook_state(net) == before
        with pytest.raises(ValueError, match="target classes"):  # raised inside the hooked pass
            guided_backprop(net, images, 5, rule)
        assert hook_state(net) == before
    for relu in (m for m in net.modules() if isinstance(m, nn.ReLU)):
        assert not relu._backward_hooks and not relu._backward_pre_hooks
    # and the model's gradient is the plain gradient again, that of a twin never hooked
    target = torch.tensor([1, 1, 1])
    twin = random_classifier(14)
    torch.testing.assert_close(plain_gradient(net, images, target), plain_gradient(twin, images, target), **EXACT)


def test_guided_backprop_rejects_inplace_relus_and_unknown_rules():
    net, images = random_classifier(14), random_images(0)
    with pytest.raises(ValueError, match="rule"):
        guided_backprop(net, images, 0, rule="positive")
    net.features[1][2].inplace = True
    with pytest.raises(ValueError, match="in-place"):
        guided_backprop(net, images, 0)
    inplace_mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4), nn.ReLU(inplace=True), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="in-place"):
        guided_backprop(inplace_mlp.double().eval(), images, 0, rule="deconvnet")


# --------------------------------------------------------------------------- guided Grad-CAM


def test_guided_grad_cam_equals_captum(device):
    net, images = random_classifier(15, device), random_images(16, device=device)
    target = torch.tensor([2, 2, 0])
    for layer in (net.features[-1], net.features[1], net.features[0][0]):
        expected = GuidedGradCam(net, layer).attribute(images, target=target.to(device), interpolate_mode="bilinear")
        got = guided_grad_cam(net, layer, images, target)
        assert_no_grads(net)
        assert got.shape == images.shape and not got.requires_grad
        torch.testing.assert_close(got, expected, **CLOSE)


# --------------------------------------------------------------------------- FGSM


def summed_bce(outputs, labels):
    """captum calls ``loss_func(outputs, target)`` and differentiates the sum of the returned
    per-example losses: the binary cross-entropy of each image summed over its classes."""
    return F.binary_cross_entropy_with_logits(outputs, labels, reduction="none").sum(dim=1)


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_equals_captum(device, targeted):
    net, images = random_classifier(17, device), random_images(18, count=4, device=device)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.float64, device=device)
    attack = FGSM(net, loss_func=summed_bce, lower_bound=0.0, upper_bound=1.0)
    # captum leaves the pixels whose |gradient| is at most 1e-6 alone; the sign method moves
    # every pixel whose gradient is non-zero
    attack.zero_thresh = 0.0
    for epsilon in (1 / 256, 0.1):
        expected = attack.perturb(images, epsilon, target=labels, targeted=targeted)
        got = fgsm(net, images, labels, epsilon, targeted)
        assert_no_grads(net)
        assert got.shape == images.shape and got.device.type == device and not got.requires_grad
        torch.testing.assert_close(got, expected, **EXACT)
        assert got.min() >= 0 and got.max() <= 1 and (got - images).abs().max() <= epsilon
        assert (got != images).float().mean() > 0.5
    torch.testing.assert_close(fgsm(net, images, labels, 0.0, targeted), images, **EXACT)
    torch.testing.assert_close(fgsm(net, images, labels, 0, targeted), images, **EXACT)


def test_fgsm_clamps_at_the_bounds_and_the_two_modes_step_opposite_ways():
    net, images = random_classifier(17), random_images(18, count=4)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.float64)
    x = images.clone().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(net(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    epsilon = 0.25
    up, down = fgsm(net, images, labels, epsilon), fgsm(net, images, labels, epsilon, targeted=True)
    torch.testing.assert_close(up, (images + epsilon * grad.sign()).clamp(0, 1), **EXACT)
    torch.testing.assert_close(down, (images - epsilon * grad.sign()).clamp(0, 1), **EXACT)
    # the clamp was needed: some unclamped steps leave [0, 1]
    assert ((images + epsilon * grad.sign()) > 1).any() and ((images + epsilon * grad.sign()) < 0).any()


def test_fgsm_errors():
    net, images = random_classifier(17), random_images(18)
    labels = torch.zeros(3, 3, dtype=torch.float64)
    for epsilon in (-0.1, -1e-9, float("nan"), True):
        with pytest.raises(ValueError, match="epsilon"):
            fgsm(net, images, labels, epsilon)
    for bad in (torch.zeros(3, 2), torch.zeros(2, 3), torch.zeros(3), torch.zeros(3, 3, dtype=torch.int64)):
        with pytest.raises(ValueError, match="labels"):
            fgsm(net, images, bad, 0.1)
    with pytest.raises(ValueError, match="eval"):
        fgsm(net.train(), images, labels, 0.1)


# --------------------------------------------------------------------------- fooling image


def sign_ascent(net, image, target, step_size, steps):
    """``steps`` plain sign-ascent steps on ``S_target`` by captum's PGD: radius 1 never clips
    images in [0, 1], no random start, the [0, 1] bounds clamp, and zero_thresh 0 so every
    non-zero gradient moves its pixel. On the 1/256 grid with a power-of-two step PGD's
    ``x0 + clamp(x - x0)`` is exact, so this is the iteration itself, bit for bit."""
    attack = PGD(net, loss_func=lambda outputs, t: outputs[:, t], lower_bound=0.0, upper_bound=1.0)
    attack.fgsm.zero_thresh = 0.0
    if steps == 0:
        return image
    x = attack.perturb(image[None], radius=1.0, step_size=step_size, step_num=steps, target=target, targeted=False)
    return x[0]


def score(net, image, target) -> float:
    with torch.no_grad():
        return net(image[None])[0, target].item()


def set_score(net, image, target, value) -> None:
    """Shift the class's bias so that ``S_target(image) == value`` (up to round-off)."""
    with torch.no_grad():
        net.classifier.bias[target] += value - score(net, image, target)


def test_fooling_image_equals_sign_ascent_and_stops_at_the_first_positive_score(device):
    net, image = random_classifier(19, device), random_images(20, count=1, device=device)[0]
    target, step_size, max_steps = 1, 1 / 64, 60
    x = image[None].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x)[0, target], x)
    # about four steps' worth of first-order gain below zero
    set_score(net, image, target, -4 * step_size * grad.abs().sum().item())
    fooled, steps = fooling_image(net, image, target, step_size, max_steps)
    assert_no_grads(net)
    assert 2 <= steps < max_steps and fooled.shape == image.shape and not fooled.requires_grad
    torch.testing.assert_close(fooled, sign_ascent(net, image, target, step_size, steps), **EXACT)
    assert score(net, fooled, target) > 0
    # every earlier iterate still scored <= 0 (one PGD step at a time: the same iteration)
    x = image
    for _ in range(steps):
        assert score(net, x, target) <= 0
        x = sign_ascent(net, x, target, step_size, 1)
    torch.testing.assert_close(x, fooled, **EXACT)
    assert score(net, sign_ascent(net, image, target, step_size, steps - 1), target) <= 0
    assert fooled.min() >= 0 and fooled.max() <= 1 and (fooled - image).abs().max() <= steps * step_size


def test_fooling_image_already_fooled_and_out_of_steps(device):
    net, image = random_classifier(21, device), random_images(22, count=1, device=device)[0]
    set_score(net, image, 0, 0.5)  # already predicted
    fooled, steps = fooling_image(net, image, 0)
    assert steps == 0 and torch.equal(fooled, image)
    set_score(net, image, 2, -1e3)  # out of reach of two steps
    fooled, steps = fooling_image(net, image, 2, step_size=1 / 128, max_steps=2)
    assert steps == 2 and score(net, fooled, 2) <= 0
    torch.testing.assert_close(fooled, sign_ascent(net, image, 2, 1 / 128, 2), **EXACT)
    fooled, steps = fooling_image(net, image, 2, max_steps=0)
    assert steps == 0 and torch.equal(fooled, image)


def test_fooling_image_errors():
    net, image = random_classifier(19), random_images(20, count=1)[0]
    for kwargs, message in (
        (dict(step_size=0), "step_size"),
        (dict(step_size=-0.1), "step_size"),
        (dict(max_steps=-1), "max_steps"),
        (dict(max_steps=2.5), "max_steps"),
        (dict(target=1.0), "target"),
        (dict(target=True), "target"),
        (dict(target=3), "target classes"),
    ):
        with pytest.raises(ValueError, match=message):
            fooling_image(net, image, **(dict(target=0) | kwargs))
    with pytest.raises(ValueError, match="image"):
        fooling_image(net, image[None], 0)
    with pytest.raises(ValueError, match="eval"):
        fooling_image(net.train(), image, 0)


# --------------------------------------------------------------------------- pointing game, top-area IoU


def test_pointing_game_and_top_area_iou_against_loops():
    gen = torch.Generator().manual_seed(23)
    n, h, w = 8, 7, 9
    maps = torch.randint(0, 4, (n, h, w), generator=gen).double()  # many ties
    maps[1] = torch.rand(h, w, generator=gen, dtype=torch.float64)  # none
    masks = torch.rand(n, h, w, generator=gen) < 0.3
    masks[:, 3, 3] = True
    hits, ious = pointing_game(maps, masks), top_area_iou(maps, masks)
    assert hits.dtype == torch.bool and hits.shape == (n,) and ious.dtype == torch.float64 and ious.shape == (n,)
    for i in range(n):
        flat, inside = maps[i].flatten().tolist(), masks[i].flatten().tolist()
        peak = flat.index(max(flat))  # the first maximum in raster order
        assert bool(hits[i]) == inside[peak]
        area = sum(inside)
        top = set(sorted(range(h * w), key=lambda j: -flat[j])[:area])  # Python's sort is stable
        obj = {j for j in range(h * w) if inside[j]}
        assert ious[i].item() == pytest.approx(len(top & obj) / len(top | obj), abs=1e-15)
    # masks of any dtype, non-zero inside
    for dtype in (torch.uint8, torch.float32):
        assert torch.equal(pointing_game(maps, masks.to(dtype) * 0.5 if dtype.is_floating_point else masks.to(dtype)), hits)
        torch.testing.assert_close(top_area_iou(maps, masks.to(dtype)), ious, **EXACT)


def test_pointing_game_and_top_area_iou_by_hand():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True  # a 2 x 2 object in the middle
    inside, outside = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    inside[0, 2, 1], outside[0, 0, 3] = 1.0, 1.0
    assert pointing_game(inside, mask).tolist() == [True]
    assert pointing_game(outside, mask).tolist() == [False]
    # a constant map points at (0, 0)
    corner = torch.zeros(1, 4, 4, dtype=torch.bool)
    corner[0, 0, 0] = True
    assert pointing_game(torch.full((1, 4, 4), 0.3), corner).tolist() == [True]
    assert pointing_game(torch.full((1, 4, 4), 0.3), ~corner).tolist() == [False]
    # IoU: the map equal to the mask, a disjoint top, half in; a constant map takes the first
    # four pixels in raster order, the top row, none in the object
    half = torch.zeros(1, 4, 4)
    half[0, 1, 1:3], half[0, 0, 0:2] = 1.0, 2.0  # top 4: (0,0), (0,1), (1,1), (1,2): 2 inside
    disjoint = torch.zeros(1, 4, 4)
    disjoint[0, 3, :] = 1.0
    cases = [(mask.double(), 1.0), (disjoint, 0.0), (half, 2 / 6), (torch.ones(1, 4, 4), 0.0)]
    for m, expected in cases:
        assert top_area_iou(m, mask).item() == pytest.approx(expected)
    # the whole image as the object: every map scores 1
    assert top_area_iou(torch.rand(2, 3, 3), torch.ones(2, 3, 3)).tolist() == [1.0, 1.0]


def test_pointing_game_and_top_area_iou_errors():
    maps, masks = torch.rand(2, 5, 6), torch.ones(2, 5, 6, dtype=torch.bool)
    empty = masks.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="non-empty"):
        top_area_iou(maps, empty)
    for f in (pointing_game, top_area_iou):
        for bad in (masks[:, :4], masks[:1], masks[0], masks.tolist()):
            with pytest.raises(ValueError, match="masks"):
                f(maps, bad)
        with pytest.raises(ValueError, match="maps"):
            f(maps[0], masks[0])


# --------------------------------------------------------------------------- centre baseline, class masks


@pytest.mark.parametrize("size", [(5, 7), (1, 1), (9, 3), (4, 6), (6, 6)])
def test_centre_baseline(size):
    h, w = size
    centre = centre_baseline(size)
    assert centre.shape == size and centre.dtype == torch.float32
    for i in range(h):
        for j in range(w):
            assert centre[i, j].item() == pytest.approx(-math.hypot(i + 0.5 - h / 2, j + 0.5 - w / 2), rel=1e-6, abs=1e-6)
    assert torch.equal(centre, centre.flip(0)) and torch.equal(centre, centre.flip(1))
    if h == w:
        assert torch.equal(centre, centre.T)
    peaks = {divmod(k, w) for k in torch.nonzero(centre.flatten() == centre.max()).flatten().tolist()}
    if h % 2 and w % 2:
        assert divmod(int(centre.argmax()), w) == ((h - 1) // 2, (w - 1) // 2) and len(peaks) == 1
    else:
        rows = {(h - 1) // 2, h // 2}
        cols = {(w - 1) // 2, w // 2}
        assert peaks == {(r, c) for r in rows for c in cols}


def test_centre_baseline_errors():
    for size in ((0, 5), (5, 0), (2.0, 3)):
        with pytest.raises(ValueError, match="size"):
            centre_baseline(size)


def test_class_masks_against_a_loop(val_targets):
    for target in val_targets:
        got = class_masks(target)
        height, width = target["masks"].shape[-2:]
        assert got.shape == (3, height, width) and got.dtype == torch.bool
        for k in range(3):
            expected = torch.zeros(height, width, dtype=torch.bool)
            for mask, label in zip(target["masks"], target["labels"].tolist()):
                if label == k + 1:
                    expected |= mask != 0
            assert torch.equal(got[k], expected)
    bad = dict(val_targets[0], labels=val_targets[0]["labels"].clone())
    bad["labels"][0] = 4
    with pytest.raises(ValueError, match="labels"):
        class_masks(bad)
    assert class_masks(bad, num_classes=4).shape[0] == 4


# --------------------------------------------------------------------------- cascading randomisation


def test_cascading_randomization_changes_exactly_the_named_layers():
    net = random_classifier(24).train()
    before = copy.deepcopy(net.state_dict())
    layers = ["classifier", "features.2", "features.1.0", "features.0"]
    stages = cascading_randomization(net, layers, seed=3)
    assert [name for name, _ in stages] == layers
    # the model is untouched, its mode too
    assert net.training and net.state_dict().keys() == before.keys()
    assert all(torch.equal(value, before[key]) for key, value in net.state_dict().items())
    for i, (_, model) in enumerate(stages):
        assert model is not net and not model.training
        randomised = tuple(f"{name}." for name in layers[: i + 1])
        state = model.state_dict()
        assert state.keys() == before.keys()
        for key, value in state.items():
            assert torch.equal(value, before[key]) != key.startswith(randomised), (i, key)
            # cascading: a layer keeps the values it was given in the copy that first randomised it
            for j, name in enumerate(layers[: i + 1]):
                if key.startswith(name + "."):
                    assert torch.equal(value, stages[j][1].state_dict()[key]), (i, j, key)
    again = cascading_randomization(net, layers, seed=3)
    other = cascading_randomization(net, layers, seed=4)
    for (_, a), (_, b), (_, c) in zip(stages, again, other):
        sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_cascading_randomization_errors():
    net = random_classifier(24)
    for layers in (["features.9"], ["classifier", ""], ["feature"]):
        with pytest.raises(ValueError, match="layers"):
            cascading_randomization(net, layers)
