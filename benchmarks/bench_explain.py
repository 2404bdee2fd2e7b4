"""Speed of cs_dense.explain's maps and attacks against captum's, on the notebook's classifier.

    python benchmarks/bench_explain.py           # a batch of 32 images of 128 x 128
    python benchmarks/bench_explain.py --quick   # smoke run with a small network and batch

Both sides explain the same untrained ``ShapesClassifier`` in eval mode (the speed of a map
does not depend on the weights). Every result is checked against captum's before anything
is timed.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam, Saliency
from captum.robust import FGSM
from common import interleaved_medians, print_environment, print_table, timing_arguments

from cs_dense.explain import ShapesClassifier, fgsm, grad_cam, guided_backprop, guided_grad_cam, saliency_map


def summed_bce(outputs, labels):
    return F.binary_cross_entropy_with_logits(outputs, labels, reduction="none").sum(dim=1)


def main() -> None:
    args, reps = timing_arguments(__doc__)
    warnings.filterwarnings("ignore", module="captum")  # "Input Tensor 0 did not already require gradients"
    B, size, widths = (4, 32, (4, 8, 8, 16, 16)) if args.quick else (32, 128, (16, 32, 64, 128, 128))
    print_environment()
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = ShapesClassifier(widths=widths).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images = torch.rand(B, 3, size, size, generator=g)
    target = torch.randint(0, 3, (B,), generator=g)
    labels = torch.randint(0, 2, (B, 3), generator=g).float()
    layer = model.features[-1]
    attack = FGSM(model, loss_func=summed_bce, lower_bound=0.0, upper_bound=1.0)
    attack.zero_thresh = 0.0  # captum leaves values whose gradient is below 1e-6 alone; sign() moves them
    pairs = {
        "saliency_map": (lambda: saliency_map(model, images, target),
                         lambda: Saliency(model).attribute(images, target=target, abs=True).amax(1), "captum Saliency"),
        "grad_cam, resized": (
            lambda: grad_cam(model, layer, images, target, size=(size, size)),
            lambda: LayerAttribution.interpolate(
                LayerGradCam(model, layer).attribute(images, target=target, relu_attributions=True), (size, size), "bilinear"
            )[:, 0],
            "captum LayerGradCam + interpolate",
        ),
        "guided_backprop": (lambda: guided_backprop(model, images, target),
                            lambda: GuidedBackprop(model).attribute(images, target=target), "captum GuidedBackprop"),
        "guided_backprop, deconvnet": (lambda: guided_backprop(model, images, target, "deconvnet"),
                                       lambda: Deconvolution(model).attribute(images, target=target), "captum Deconvolution"),
        "guided_grad_cam": (
            lambda: guided_grad_cam(model, layer, images, target),
            lambda: GuidedGradCam(model, layer).attribute(images, target=target, interpolate_mode="bilinear"),
            "captum GuidedGradCam",
        ),
        "fgsm 4/255": (lambda: fgsm(model, images, labels, 4 / 255),
                       lambda: attack.perturb(images, 4 / 255, target=labels), "captum FGSM"),
    }
    rows = []
    for name, (ours, theirs, theirs_name) in pairs.items():
        torch.testing.assert_close(ours(), theirs().detach(), rtol=1e-4, atol=1e-5, msg=name)
        t = interleaved_medians({"ours": ours, "theirs": theirs}, reps)
        rows.append((f"{name}, {B} images of {size} x {size}", t["ours"], t["theirs"], theirs_name))
    print_table(rows)


if __name__ == "__main__":
    main()
