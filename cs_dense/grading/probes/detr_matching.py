"""Cross-check probes of notebook 07, set prediction and DETR matching."""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment

from cs_dense.grading.checks import CheckFailure
from cs_dense.grading.crosscheck import Case, Probe, randint
from cs_dense.models import matching_cost, set_loss
from cs_dense.validation import describe


def _xyxy(gen: torch.Generator, k: int, H: int, W: int, dtype=torch.float32) -> torch.Tensor:
    """k random boxes inside an H x W image, at least half a pixel wide and high."""
    size = torch.tensor([W, H], dtype=torch.float64)
    xy = torch.rand(k, 2, generator=gen, dtype=torch.float64) * size * 0.7
    return torch.cat([xy, xy + torch.rand(k, 2, generator=gen, dtype=torch.float64) * size * 0.3 + 0.5], 1).to(dtype)


def _batch(gen: torch.Generator, N: int, C: int, counts, H: int, W: int, dtype=torch.float32):
    """Predictions of len(counts) images and their targets, counts[b] objects in image b."""
    outputs = {"logits": (torch.randn(len(counts), N, C + 1, generator=gen) * 2).to(dtype),
               "boxes": torch.stack([_xyxy(gen, N, H, W, dtype) for _ in counts])}
    targets = [{"boxes": _xyxy(gen, m, H, W, dtype), "labels": torch.randint(1, C + 1, (m,), generator=gen)}
               for m in counts]
    return outputs, targets


def _weights(gen: torch.Generator) -> tuple[float, ...]:
    return tuple(float(w) * 5 + 0.1 for w in torch.rand(3, generator=gen))


def _optimal(cost: torch.Tensor, what: str):
    """A judge of one (rows, cols) answer: a matching of min(N, M) pairs, rows increasing, as cheap as scipy's."""
    array = cost.detach().double().numpy()
    (n, m), k = array.shape, min(array.shape)
    best_rows, best_cols = linear_sum_assignment(array)
    best = float(array[best_rows, best_cols].sum())
    slack = 1e-9 + 1e-6 * k * float(abs(array).max(initial=0.0))

    def judge(answer) -> None:
        if type(answer) not in (tuple, list) or len(answer) != 2:
            raise CheckFailure(f"[{what}] expected a (rows, cols) pair, got {describe(answer)}")
        for name, index in zip(("rows", "cols"), answer):
            if type(index) is not torch.Tensor or index.dtype != torch.int64 or tuple(index.shape) != (k,):
                raise CheckFailure(f"[{what}] {name} should be a Tensor[{k}] int64, got {describe(index)}")
        rows, cols = answer
        if bool((rows[1:] <= rows[:-1]).any()):
            raise CheckFailure(f"[{what}] rows should be increasing, got {rows.tolist()}")
        if k and (rows.min() < 0 or rows.max() >= n or cols.min() < 0 or cols.max() >= m):
            raise CheckFailure(f"[{what}] indices outside the {n} x {m} cost: rows {rows.tolist()}, "
                               f"cols {cols.tolist()}")
        if cols.unique().numel() != k:
            raise CheckFailure(f"[{what}] a column is assigned twice: cols {cols.tolist()}")
        total = float(array[rows.numpy(), cols.numpy()].sum())
        if not math.isclose(total, best, rel_tol=1e-9, abs_tol=slack):
            raise CheckFailure(f"[{what}] the assignment costs {total!r}; the minimum is {best!r}")

    return judge


def _all_optimal(costs: list[torch.Tensor], what: str):
    """A judge of a matcher's answer: one optimal (rows, cols) pair per image."""
    judges = [_optimal(cost, f"{what}, image {b}") for b, cost in enumerate(costs)]

    def judge(answer) -> None:
        if type(answer) not in (tuple, list) or len(answer) != len(judges):
            raise CheckFailure(f"[{what}] expected a list of {len(judges)} (rows, cols) pairs, got {describe(answer)}")
        for image_judge, pair in zip(judges, answer):
            image_judge(pair)

    return judge


def _matching_cost(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        N, M, C = randint(gen, 1, 30), randint(gen, 0, 10) if trial else 0, randint(gen, 1, 6)
        H, W = randint(gen, 32, 400), randint(gen, 32, 400)
        dtype = (torch.float32, torch.float64)[trial % 2]
        args = ((torch.randn(N, C + 1, generator=gen) * 2).to(dtype), _xyxy(gen, N, H, W, dtype),
                torch.randint(1, C + 1, (M,), generator=gen), _xyxy(gen, M, H, W, dtype), (H, W), *_weights(gen))
        cases.append(Case(f"N {N}, M {M}, C {C}, {H} x {W}, {dtype}", args, expected=matching_cost(*args)))
    flat = torch.tensor([[5.0, 5, 5, 15], [0, 0, 10, 10], [3, 4, 3, 4]])  # zero width, then a point
    args = (torch.randn(3, 4, generator=gen), flat, torch.tensor([2, 1, 3]), flat, (50, 60))
    cases.append(Case("degenerate boxes: zero width, a single point", args, expected=matching_cost(*args)))
    return cases


def _hungarian(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        n, m = randint(gen, 1, 8), randint(gen, 1, 8)
        if trial == 3:
            n, m = 40, 25
        integer = trial == 1  # many optimal assignments
        cost = torch.randint(0, 4, (n, m), generator=gen).double() if integer else torch.randn(n, m, generator=gen)
        what = f"{n} x {m}, {'integer costs with ties' if integer else 'real costs'}"
        cases.append(Case(what, (cost,), judge=_optimal(cost, what)))
    empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    for shape in ((0, 4), (3, 0)):
        cases.append(Case(f"an empty {shape[0]} x {shape[1]} cost", (torch.zeros(shape, dtype=torch.float64),),
                          expected=empty))
    for bad, word in ((math.nan, "NaN"), (math.inf, "infinite")):
        cost = torch.rand(3, 3, generator=gen, dtype=torch.float64)
        cost[randint(gen, 0, 3), randint(gen, 0, 3)] = bad
        cases.append(Case(f"a cost holding {bad}", (cost,), raises="ValueError", mentions=(word,)))
    return cases


def _hungarian_matcher(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(3):
        N, C, H, W = randint(gen, 1, 16), randint(gen, 1, 5), randint(gen, 40, 200), randint(gen, 40, 200)
        counts = [randint(gen, 0, 8) for _ in range(randint(gen, 1, 4))]
        counts[0] = (0, N + 2, counts[0])[trial]  # an image without objects, one with more objects than queries
        outputs, targets = _batch(gen, N, C, counts, H, W)
        weights = _weights(gen) if trial else ()
        costs = [matching_cost(lg, bx, t["labels"], t["boxes"], (H, W), *weights)
                 for lg, bx, t in zip(outputs["logits"], outputs["boxes"], targets)]
        what = f"N {N}, objects {counts}, {H} x {W}, weights {weights or 'default'}"
        cases.append(Case(what, (outputs, targets, (H, W), *weights), judge=_all_optimal(costs, what)))
    # one object and two queries: the L1 term prefers the small box inside it, GIoU the large box around it
    outputs = {"logits": torch.zeros(1, 2, 3), "boxes": torch.tensor([[[4.0, 4, 6, 6], [0, 0, 20, 20]]])}
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    for weights in ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)):
        cost = matching_cost(outputs["logits"][0], outputs["boxes"][0], targets[0]["labels"], targets[0]["boxes"],
                             (100, 100), *weights)
        what = f"L1 and GIoU disagree, weights {weights}"
        cases.append(Case(what, (outputs, targets, (100, 100), *weights), judge=_all_optimal([cost], what)))
    return cases


def _matching(logits, boxes, target, image_size) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy's optimal matching on the reference cost, as int64 tensors."""
    cost = matching_cost(logits, boxes, target["labels"], target["boxes"], image_size)
    rows, cols = linear_sum_assignment(cost.detach().double().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def _set_loss(gen: torch.Generator) -> list[Case]:
    cases = []
    for trial in range(4):
        N, C, H, W = randint(gen, 1, 12), randint(gen, 1, 5), randint(gen, 40, 200), randint(gen, 40, 200)
        counts = [min(N, randint(gen, 0, 7)) for _ in range(randint(gen, 1, 4))]
        if trial == 0:
            counts = [0] * len(counts)
        dtype = (torch.float32, torch.float64)[trial % 2]
        outputs, targets = _batch(gen, N, C, counts, H, W, dtype)
        indices = [_matching(lg, bx, t, (H, W)) for lg, bx, t in zip(outputs["logits"], outputs["boxes"], targets)]
        eos = float(torch.rand((), generator=gen)) * 0.5 + 0.01
        args = (outputs, targets, indices, (H, W), eos, *_weights(gen))
        cases.append(Case(f"N {N}, objects {counts}, {dtype}, no-object weight {eos:.3f}", args,
                          expected=set_loss(*args)))
    return cases


def set_loss_gradients(fn, logits, boxes, targets, indices, image_size, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of the sum of ``fn``'s three terms with respect to the logits and the boxes."""
    leaves = (logits.detach().clone().requires_grad_(), boxes.detach().clone().requires_grad_())
    loss = fn({"logits": leaves[0], "boxes": leaves[1]}, targets, indices, image_size, *args)
    return torch.autograd.grad(sum(loss.values()), leaves)


def _set_loss_gradients(gen: torch.Generator) -> list[Case]:
    cases = []
    for counts in ((2, 0, 3), (1,)):
        N, H, W = 5, 90, 140
        outputs, targets = _batch(gen, N, 3, counts, H, W)
        indices = [_matching(lg, bx, t, (H, W)) for lg, bx, t in zip(outputs["logits"], outputs["boxes"], targets)]
        leaves = [outputs["logits"].clone().requires_grad_(), outputs["boxes"].clone().requires_grad_()]
        loss = set_loss({"logits": leaves[0], "boxes": leaves[1]}, targets, indices, (H, W), 0.2)
        expected = torch.autograd.grad(sum(loss.values()), leaves)
        cases.append(Case(f"gradients of the total, objects {list(counts)}",
                          (outputs["logits"], outputs["boxes"], targets, indices, (H, W), 0.2), expected=expected))
    return cases


PROBES = {
    "test_matching_cost": (Probe("matching_cost", "matching_cost", _matching_cost),),
    "test_hungarian": (Probe("hungarian", "hungarian", _hungarian),),
    "test_hungarian_matcher": (
        Probe("hungarian_matcher", "hungarian_matcher", _hungarian_matcher, stand_in=("matching_cost", "hungarian")),
    ),
    "test_set_loss": (
        Probe("set_loss", "set_loss", _set_loss),
        Probe("set_loss", "set_loss", _set_loss_gradients,
              recipe="cs_dense.grading.probes.detr_matching.set_loss_gradients"),
    ),
}
