"""The LR range test: an exponential sweep on a copy; the real model and optimizer are untouched."""

from __future__ import annotations

import math

import pytest
import torch
from inspect_helpers import tiny_data, tiny_mlp

from lmlab.config import TrainConfig
from lmlab.training.lr_finder import lr_find, smooth, suggest
from lmlab.training.step import build_optimizer


def test_sweep_leaves_the_model_and_optimizer_untouched(tiny_names, tmp_path):
    data = tiny_data(tiny_names)
    model = tiny_mlp(data)
    config = TrainConfig(device="cpu", batch_size=16)
    optimizer = build_optimizer(model, config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = optimizer.state_dict()
    rng = torch.get_rng_state()
    result = lr_find(model, data.splits["train"], config, num_iter=40)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.state_dict() == opt_before and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    # Exponential: equal ratios between consecutive rates, from 1e-7 up to 10 at most.
    assert result.lrs[0] == pytest.approx(1e-7)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] == pytest.approx((1e8) ** (1 / 39))
    assert result.raw_losses[-1] > 2 * result.raw_losses[0]  # lr 10 with Adam blows the loss up
    assert 1e-5 < result.suggestion < 1.0
    # The sweep stops once the smoothed loss passes `diverge` x its best.
    short = lr_find(model, data.splits["train"], config, num_iter=40, diverge=1.01)
    assert len(short.lrs) < 40
    assert short.losses == pytest.approx(smooth(short.raw_losses))  # the judged curve: centred, no lag
    png = result.plot(tmp_path / "lr.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_suggestion_rules_on_a_known_curve():
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    # Flat, then falling between 1e-4 and 1e-1, bottom at 1e-1, then rising.
    losses = [3.0 - 2.0 * min(max(math.log10(lr) + 4, 0), 3) / 3 + max(math.log10(lr) + 1, 0) ** 2 for lr in lrs]
    assert 1e-4 <= suggest(lrs, losses, "valley") <= 1e-1
    assert suggest(lrs, losses, "minimum") == pytest.approx(lrs[losses.index(min(losses))] / 10)
    assert 1e-4 <= suggest(lrs, losses, "steep") <= 1e-1
    with pytest.raises(ValueError):
        suggest(lrs, losses, "guess")


def test_suggestion_sits_on_the_descent_not_on_the_flat_start():
    # A long flat start with noise, the descent between 1e-3 and 3e-2, the bottom at 3e-2, then divergence:
    # the old valley rule (longest falling run) landed on the flat part; the suggestion must be on the descent.
    import random

    rng = random.Random(0)
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    raw = []
    for lr in lrs:
        x = math.log10(lr)
        raw.append(3.3 - 0.8 * min(max((x + 3) / 1.5, 0), 1) + 4 * max(x + 1.5, 0) ** 2 + rng.gauss(0, 0.01))
    losses = smooth(raw)
    assert 1e-3 <= suggest(lrs, losses, "steep") <= 3e-2
    assert 1e-3 <= suggest(lrs, losses, "valley") <= 1e-2
    assert suggest(lrs, losses, "minimum") == pytest.approx(3e-3, rel=0.5)


def test_suggestion_trains_about_as_well_as_the_best_rate_on_a_grid(tiny_names):
    """The reference: a grid of rates each trained for the same steps. The suggested rate must land within a
    few times of the best one and train almost as well (the old rule suggested a rate on the flat part)."""
    from inspect_helpers import train

    data = tiny_data(tiny_names)
    config = TrainConfig(device="cpu", batch_size=32)
    result = lr_find(tiny_mlp(data), data.splits["train"], config, num_iter=60)
    final = {}
    for lr in (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1):
        stats, _, _ = train(tiny_mlp(data), data, steps=60, every=60, lr=lr, eval_interval=1000)
        final[lr] = sum(r.loss for r in stats.loss[-10:]) / 10
    best = min(final, key=final.get)
    stats, _, _ = train(tiny_mlp(data), data, steps=60, every=60, lr=result.suggestion, eval_interval=1000)
    suggested = sum(r.loss for r in stats.loss[-10:]) / 10
    assert best / 10 <= result.suggestion <= best * 3, (result.suggestion, final)
    assert suggested <= final[best] + 0.1 * (final[3e-4] - final[best]) + 0.05, (suggested, final)


@pytest.mark.slow
def test_default_mlp_gets_a_rate_near_the_one_it_trains_well_at():
    pytest.importorskip("names")
    from lmlab.run.config import build_model, resolve_config
    from lmlab.run.data import prepare_data

    config = resolve_config({"model": {"name": "mlp"}, "data": {"source": "names"}, "train": {"device": "cpu"}})
    data = prepare_data(config.data)
    model = build_model(config, data.tokenizer, data.splits["train"].block_size)
    result = lr_find(model, data.splits["train"], config.train)
    assert 1e-3 <= result.suggestion <= 1e-2  # the MLP trains well at 3e-3 (the old rule said 2e-4)
