"""Cross-check probes of notebook 00, tasks and data."""

from __future__ import annotations

import torch

from cs_dense.grading.crosscheck import Case, Probe
from cs_dense.models import localization_loss
from cs_dense.ops import box_convert, masks_to_boxes

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _box_convert(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(6):
        shape = [int(s) for s in torch.randint(1, 5, (1 + trial % 3,), generator=gen)]
        dtype = (torch.float32, torch.float64)[trial % 2]
        boxes = (torch.rand(*shape, 4, generator=gen, dtype=torch.float64) * 300).to(dtype)
        in_fmt, out_fmt = _FORMATS[trial % 3], _FORMATS[(trial + 1 + trial // 3) % 3]
        cases.append(Case(f"boxes {[*shape, 4]} {dtype}, {in_fmt} -> {out_fmt}", (boxes, in_fmt, out_fmt),
                          expected=box_convert(boxes, in_fmt, out_fmt)))
    cases.append(Case("an unknown out_fmt 'yolo'", (torch.zeros(2, 4), "xyxy", "yolo"), raises="ValueError",
                      mentions=("out_fmt",)))
    return cases


def _masks_to_boxes(gen: torch.Generator) -> list[Case]:
    cases = []
    for fill in (0.01, 0.1, 0.5):
        n, h, w = (int(v) for v in torch.randint(1, 25, (3,), generator=gen))
        masks = torch.rand(n, h, w, generator=gen) < fill
        masks[0, int(torch.randint(0, h, (), generator=gen)), int(torch.randint(0, w, (), generator=gen))] = True
        cases.append(Case(f"{n} masks of {h} x {w}, {fill:.0%} full", (masks,), expected=masks_to_boxes(masks)))
    return cases


def _localization_loss(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        B, C = int(torch.randint(1, 7, (), generator=gen)), int(torch.randint(2, 6, (), generator=gen))
        logits = torch.randn(B, C, generator=gen) * 3
        boxes = torch.rand(B, 4, generator=gen)
        pred = boxes + torch.randn(B, 4, generator=gen) * 1.5  # errors on both sides of 1
        labels = torch.randint(0, C, (B,), generator=gen)
        weight, kind = float(torch.rand((), generator=gen)) * 10, ("l2", "smooth_l1")[trial % 2]
        args = (logits, pred, labels, boxes, weight, kind)
        cases.append(Case(f"B {B}, C {C}, lambda {weight:.2f}, {kind}", args, expected=localization_loss(*args)))
    return cases


def _localization_gradients(gen: torch.Generator) -> list[Case]:
    cases = []
    for kind in ("l2", "smooth_l1"):
        B, C = 4, 3
        leaves = [(torch.randn(B, C, generator=gen) * 3).requires_grad_(),
                  (torch.randn(B, 4, generator=gen) * 1.5).requires_grad_()]
        labels, boxes = torch.randint(0, C, (B,), generator=gen), torch.rand(B, 4, generator=gen)
        expected = torch.autograd.grad(localization_loss(*leaves, labels, boxes, 2.0, kind)["total"], leaves)
        args = (leaves[0].detach(), leaves[1].detach(), labels, boxes, 2.0, kind)
        cases.append(Case(f"gradients of the total, {kind}", args, {"wrt": (0, 1), "key": "total"}, expected=expected))
    return cases


PROBES = {
    "test_box_convert": (Probe("box_convert", "box_convert", _box_convert),),
    "test_masks_to_boxes": (Probe("masks_to_boxes", "masks_to_boxes", _masks_to_boxes),),
    "test_localization_loss": (
        Probe("localization_loss", "localization_loss", _localization_loss),
        Probe("localization_loss", "localization_loss", _localization_gradients,
              recipe="cs_dense.grading.probes.recipes.gradients"),
    ),
}
