"""The LR range test: an exponential sweep on a copy; the real model and optimizer are untouched."""

from __future__ import annotations

import math

import pytest
import torch
from inspect_helpers import tiny_data, tiny_mlp

from lmlab.config import TrainConfig
from lmlab.training.lr_finder import lr_find, suggest
from lmlab.training.trainer import build_optimizer


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
    assert len(short.lrs) < 40 and short.losses[-1] > 1.01 * min(short.losses)
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
