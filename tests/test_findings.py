"""Each health rule fires on a small model with that fault planted, and healthy runs stay quiet."""

from __future__ import annotations

import pytest
import torch
from inspect_helpers import TokenwiseLM, rules, tiny_data, tiny_mlp, train
from torch import nn

from lmlab.inspector import find_problems, format_finding
from lmlab.inspector.findings import overfitting


@pytest.fixture
def data(tiny_names):
    return tiny_data(tiny_names)


def test_healthy_runs_raise_nothing(data):
    _, findings, _ = train(tiny_mlp(data), data, steps=60, every=5)
    assert findings == [], [format_finding(f) for f in findings]
    _, findings, _ = train(tiny_mlp(data, norm="batch", n_layer=2), data, steps=30, every=5)
    assert findings == [], [format_finding(f) for f in findings]


def test_over_confident_initial_logits(data):
    model = tiny_mlp(data)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)  # lecture 3's first network: randn output weights
    stats, findings, _ = train(model, data, steps=3, every=1)
    found = [f for f in findings if f["rule"] == "initial_loss"]
    assert found and found[0]["numbers"]["initial_loss"] > 2 * stats["ln_vocab"]
    assert "too confident" in found[0]["what"] and "scale" in found[0]["fix"]


def test_saturated_tanh(data):
    model = tiny_mlp(data)
    with torch.no_grad():
        model.hidden[0].weight.mul_(10)
    _, findings, _ = train(model, data, steps=3, every=1)
    assert [f["layer"] for f in findings if f["rule"] == "saturation"] == ["hidden.1"]


def test_dead_relu_units(data):
    body = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    with torch.no_grad():
        body[0].bias.fill_(-50.0)
    _, findings, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, body), data, steps=4, every=1)
    dead = [f for f in findings if f["rule"] == "dead_units"]
    assert dead and dead[0]["layer"] == "body.1" and dead[0]["severity"] == "error"


def test_learning_rate_far_too_high_and_too_low(data):
    _, findings, _ = train(tiny_mlp(data), data, steps=30, every=3, lr=10.0)
    assert rules(findings) & {"lr_too_high", "nan"}, [format_finding(f) for f in findings]
    assert "not_learning" not in rules(findings)  # a loss far above ln V is diverging, not stuck
    _, findings, _ = train(tiny_mlp(data), data, steps=60, every=6, lr=1e-7)
    assert {"lr_too_low", "not_learning"} <= rules(findings)
    assert "lr_too_high" not in rules(findings)


def test_vanishing_gradients_across_depth(data):
    torch.manual_seed(0)
    layers = []
    for _ in range(8):
        linear = nn.Linear(16, 16)
        nn.init.normal_(linear.weight, std=0.3 / 16**0.5)  # each tanh layer shrinks the gradient ~3x
        layers += [linear, nn.Tanh()]
    _, findings, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, nn.Sequential(*layers)), data, steps=3,
                           every=1)
    found = [f for f in findings if f["rule"] == "vanishing_gradients"]
    assert found and found[0]["numbers"]["grad_std_last"] > 100 * found[0]["numbers"]["grad_std_first"]


class _Explode(nn.Module):
    def forward(self, x):
        return x * float("inf")


def test_nan_loss_is_an_error(data):
    body = nn.Sequential(nn.Linear(16, 16), _Explode())
    _, findings, trainer = train(TokenwiseLM(data.tokenizer.vocab_size, 16, body), data, steps=10, every=1)
    assert trainer.nonfinite_steps == 5
    nan = [f for f in findings if f["rule"] == "nan"]
    assert nan and nan[0]["severity"] == "error" and nan[0]["numbers"]["nonfinite_steps"] == 5


def test_peeking_at_the_next_token_is_an_error(data):
    model = TokenwiseLM(data.tokenizer.vocab_size, 16, nn.Identity(), peek=True)
    _, findings, _ = train(model, data, steps=3, every=1)
    assert findings[0]["rule"] == "causality_leak" and findings[0]["severity"] == "error"


def _stats_with(loss_records, val):
    return {"layers": {}, "params": {}, "loss": loss_records, "val": val, "ln_vocab": 3.3, "vocab_size": 27,
            "initial_loss": 3.3}


def test_growing_train_val_gap():
    # Train loss keeps falling while validation turns up after step 200: the classic memorisation curve.
    records = [[s, 3.0 - 2.5 * s / 600, 1e-3, 1.0] for s in range(1, 601)]
    val = [[100, 2.8], [200, 2.6], [300, 2.65], [400, 2.75], [500, 2.9], [600, 3.0]]
    found = overfitting(_stats_with(records, val))
    assert found and found[0]["numbers"]["val_best_step"] == 200 and found[0]["numbers"]["gap_end"] > 2
    # Both falling together, the gap steady: no finding.
    val_ok = [[s, 3.1 - 2.5 * s / 600] for s in (100, 200, 300, 400, 500, 600)]
    assert overfitting(_stats_with(records, val_ok)) == []
    assert find_problems(_stats_with(records, val_ok)) == []
