"""cs_dense.train: budgets, seeding, device choice and the time-boxed fit loop."""

from __future__ import annotations

import math

import pytest
import torch

from cs_dense import train


def test_budget_follows_the_autograde_variable(monkeypatch):
    monkeypatch.delenv(train.AUTOGRADE_ENV, raising=False)
    assert not train.autograding() and train.budget(interactive=90, autograde=10) == 90
    monkeypatch.setenv(train.AUTOGRADE_ENV, "1")
    assert train.autograding() and train.budget(interactive=90, autograde=10) == 10


def test_device_override(monkeypatch):
    monkeypatch.setenv(train.DEVICE_ENV, "cpu")
    assert train.device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv(train.DEVICE_ENV, "cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            train.device()


def test_seed_everything_repeats_and_rejects_bad_seeds():
    train.seed_everything(3)
    a = torch.rand(3)
    train.seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            train.seed_everything(bad)


def one_parameter_problem():
    """Minimise (w - 3)^2 with plain SGD: each step's loss is known in closed form."""
    w = torch.nn.Parameter(torch.zeros(()))
    model = torch.nn.Module()
    model.w = w
    return model, torch.optim.SGD([w], lr=0.1)


def test_fit_constant_schedule_matches_hand_computed_steps():
    model, optimizer = one_parameter_problem()
    history = train.fit(model, iter(int, 1), lambda m, _: (m.w - 3) ** 2, optimizer, max_seconds=60, max_steps=5,
                        schedule="constant", progress=False)
    # w_{k+1} = w_k - 0.1 * 2 (w_k - 3): the distance to 3 shrinks by 0.8 per step
    assert history.stopped == "steps" and history.steps == 5
    assert history.losses == pytest.approx([9 * 0.64**k for k in range(5)])
    assert len(history.seconds) == 5 and history.seconds == sorted(history.seconds)


def test_fit_cosine_schedule_anneals_and_restores_the_rate():
    model, optimizer = one_parameter_problem()
    seen = []

    def loss(m, _):
        seen.append(optimizer.param_groups[0]["lr"])
        return (m.w - 3) ** 2

    train.fit(model, iter(int, 1), loss, optimizer, max_seconds=1e6, max_steps=4, progress=False)
    assert seen == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_fit_stops_on_time_and_on_data():
    model, optimizer = one_parameter_problem()
    history = train.fit(model, iter(int, 1), lambda m, _: (m.w - 3) ** 2, optimizer, max_seconds=0.05, progress=False)
    assert history.stopped == "time" and history.seconds[-1] >= 0.05
    history = train.fit(model, range(3), lambda m, _: (m.w - 3) ** 2, optimizer, max_seconds=60, progress=False)
    assert history.stopped == "data" and history.steps == 3


def test_fit_names_a_diverging_step_and_bad_budgets():
    model, optimizer = one_parameter_problem()
    losses = iter([1.0, 2.0, float("nan")])
    with pytest.raises(FloatingPointError, match="loss is nan at step 3"):
        train.fit(model, range(10), lambda m, _: (m.w - 3) ** 2 * next(losses), optimizer, max_seconds=60, progress=False)
    for kwargs, message in (({"max_seconds": 0}, "max_seconds"), ({"max_seconds": 1, "max_steps": 0}, "max_steps"),
                            ({"max_seconds": 1, "schedule": "step"}, "schedule")):
        with pytest.raises(ValueError, match=message):
            train.fit(model, range(3), lambda m, _: (m.w - 3) ** 2, optimizer, progress=False, **kwargs)


def test_shuffled_batches_cover_every_item_once_per_epoch():
    stream = train.shuffled_batches(10, 4, seed=3)
    for _ in range(3):
        epoch = [next(stream) for _ in range(3)]  # 4 + 4 + 2
        assert [len(b) for b in epoch] == [4, 4, 2]
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    again = train.shuffled_batches(10, 4, seed=3)
    assert torch.equal(next(again), next(train.shuffled_batches(10, 4, seed=3)))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        next(train.shuffled_batches(10, 0))
