"""Each health rule fires on a small model with that fault planted, and healthy runs stay quiet."""

from __future__ import annotations

import pytest
import torch
from inspect_helpers import TokenwiseLM, rules, tiny_data, tiny_mlp, train
from torch import nn

from lmlab.inspector import find_notes, find_problems, format_finding
from lmlab.inspector.layer_rules import dead_units, depth_gradients
from lmlab.inspector.loss_rules import frozen_parameters, overfitting
from lmlab.inspector.rule_helpers import lr_text, times


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


# -- blind spots ------------------------------------------------------------------------------------------


def test_parameters_that_get_no_update_and_a_trivial_loss(data):
    model = tiny_mlp(data)
    for name, p in model.named_parameters():
        p.requires_grad_(name == "head.bias")  # only the output bias learns: token frequencies at best
    stats, findings, _ = train(model, data, steps=100, every=10, lr=3e-2)
    frozen = [f for f in findings if f["rule"] == "frozen_parameters"]
    assert frozen and frozen[0]["numbers"]["share"] > 0.95 and "head.weight" in frozen[0]["what"]
    assert "token frequencies" in frozen[0]["what"]  # the loss only reached the unigram baseline
    stuck = [f for f in findings if f["rule"] == "not_learning"]
    assert stuck and stuck[0]["numbers"]["unigram"] == stats["baselines"]["unigram"]
    # A parameter that never gets a gradient (not used in forward) counts too.
    stats = {"layers": {}, "param_count": 100, "frozen": {},
             "params": {"unused.weight": {"shape": [8, 8], "no_grad": 3}, "w": {"shape": [6, 6], "moved": True,
                                                                                "grad_std": [0.1]}}}
    found = frozen_parameters(stats)
    assert found[0]["severity"] == "warning" and found[0]["numbers"]["untrained"] == ["unused.weight"]


def _flat_run(level, ln_v=3.3, unigram=2.8, bigram=2.4, steps=200):
    return {"layers": {}, "params": {}, "val": [], "ln_vocab": ln_v, "vocab_size": 27, "initial_loss": ln_v,
            "loss": [[s, level + 0.3 * 0.97**s, 1e-3, 1.0] for s in range(1, steps + 1)],
            "baselines": {"unigram": unigram, "bigram": bigram, "tokens": 1000}}


def test_not_learning_is_judged_against_the_data_baselines():
    # Far below ln V, yet flat at the unigram entropy: it learned token frequencies and nothing else.
    found = [f for f in find_problems(_flat_run(2.81)) if f["rule"] == "not_learning"]
    assert found and "token frequencies" in found[0]["what"] and found[0]["numbers"]["bigram"] == 2.4
    assert find_problems(_flat_run(2.3)) == []  # better than the bigram: fine
    note = [f for f in find_notes(_flat_run(2.3)) if f["rule"] == "baselines"]
    assert note and "2.800" in note[0]["what"] and "below the counted bigram" in note[0]["what"]


def _layer(kind, steps, **series):
    return {"kind": kind, "type": kind, "step": steps, **series}


def test_depth_is_judged_on_early_and_late_samples():
    # 1e9 between last and first layer in the first samples; then the first layer's units die, its gradient
    # becomes 0 and a whole-run median would skip the stack.
    steps = list(range(0, 120, 10))
    first = [1e-10] * 4 + [0.0] * 8
    layers = {f"body.{i}": _layer("relu", steps, grad_std=first if i == 1 else [0.1] * 12) for i in (1, 3, 5)}
    stats = {"layers": layers, "params": {}, "loss": [], "order": list(layers)}
    found = depth_gradients(stats)
    assert len(found) == 1 and found[0]["rule"] == "vanishing_gradients" and found[0]["since_step"] == 0
    # Late, nothing reaches the first layer; early it was already 1e9 times smaller: both are said.
    assert "no gradient at all reaches body.1" in found[0]["what"] and "1.0e9x early" in found[0]["what"]


def test_function_style_activations_are_named_and_gpt_gelu_is_watched(data):
    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x):
            return torch.nn.functional.relu(self.fc(x))  # invisible to module hooks

    class Gated(Hidden):
        def forward(self, x):
            return torch.nn.functional.silu(self.fc(x)) * x  # SwiGLU's form: named as silu, not by its kind

    vocab = data.tokenizer.vocab_size
    stats, _, _ = train(TokenwiseLM(vocab, 16, Gated()), data, steps=2, every=1)
    assert stats["unwatched"] == {"body": "calls silu as a function, not as a module"}
    stats, _, _ = train(TokenwiseLM(vocab, 16, Hidden()), data, steps=2, every=1)
    assert stats["unwatched"] == {"body": "calls relu as a function, not as a module"}
    note = [f for f in find_notes(stats) if f["rule"] == "unwatched"]
    assert note and "body" in note[0]["what"]
    from lmlab.models import GPT, GPTConfig

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=16))
    stats, _, _ = train(gpt, data, steps=2, every=1)
    assert stats["layers"]["transformer.h.0.mlp.act"]["kind"] == "gelu" and not stats["unwatched"]


# -- messages ---------------------------------------------------------------------------------------------


def test_learning_rate_fixes_quote_the_current_and_suggested_rate(data):
    _, findings, _ = train(tiny_mlp(data), data, steps=30, every=3, lr=1e-7)
    low = next(f for f in findings if f["rule"] == "lr_too_low")
    assert "now 1e-7" in low["fix"] and "by about 10^" in low["fix"] and "lmlab lr-find" in low["fix"]
    assert "check that the optimizer updates" in low["fix"]
    suggested = low["numbers"]["suggested_lr"]  # the rate that brings the update:data ratio to 1e-3
    assert suggested == pytest.approx(1e-7 * 10 ** (-3 - low["numbers"]["log10_update_data"]), rel=0.5)
    _, findings, _ = train(tiny_mlp(data), data, steps=30, every=3, lr=1.0)
    high = next(f for f in findings if f["rule"] in ("lr_too_high", "nan"))
    assert "now 1" in high["fix"] and "toward 3e-3" in high["fix"] and "lmlab lr-find" in high["fix"]


def test_readable_numbers():
    assert times(37227310575) == "3.7e10x" and times(370.4) == "370x" and times(4.21) == "4.2x"
    assert lr_text(1e-6) == "1e-6" and lr_text(3e-3) == "3e-3" and lr_text(1.0) == "1" and lr_text(0.1) == "0.1"


def test_one_finding_per_cause_for_a_stack_of_dead_layers(data):
    torch.manual_seed(0)
    layers = []
    for i in range(8):
        linear = nn.Linear(16, 16)
        if i >= 2:
            nn.init.constant_(linear.bias, -50.0)  # six of eight ReLU layers never fire
        layers += [linear, nn.ReLU()]
    _, findings, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, nn.Sequential(*layers)), data, steps=3,
                           every=1, lr=1e-4)
    dead = [f for f in findings if f["rule"] == "dead_units"]
    assert len(dead) == 1 and dead[0]["what"].startswith("6 of 8 relu layers")
    assert len(dead[0]["numbers"]["layers"]) == 6
    assert len([f for f in findings if f["rule"] in ("vanishing_gradients", "exploding_gradients")]) <= 1


def test_root_cause_first_when_activations_grow_with_depth(data):
    torch.manual_seed(0)
    layers = []
    for _ in range(10):
        linear = nn.Linear(16, 16)
        nn.init.normal_(linear.weight, std=3.0 / 16**0.5)  # each layer multiplies the activations' std ~2x
        layers += [linear, nn.ReLU()]
    _, findings, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, nn.Sequential(*layers)), data, steps=3,
                           every=1, lr=1e-4)
    ranked = [f["rule"] for f in findings]
    assert "activation_growth" in ranked and "initial_loss" in ranked
    assert ranked.index("activation_growth") < ranked.index("initial_loss")
    assert "consequence" in next(f for f in findings if f["rule"] == "initial_loss")["what"]


def test_dead_units_are_worded_by_their_trend():
    steps = list(range(0, 120, 10))
    falling = {"body.1": _layer("relu", steps, dead=[0.8] * 4 + [0.5] * 4 + [0.3] * 4)}
    found = dead_units({"layers": falling})
    assert "fell from 80% to 30%" in found[0]["what"] and "recover by themselves" not in found[0]["what"]
    flat = {"body.1": _layer("relu", steps, dead=[0.6] * 12)}
    assert "do not recover by themselves" in dead_units({"layers": flat})[0]["what"]
    recovered = {"body.1": _layer("relu", steps, dead=[0.6] * 4 + [0.0] * 8)}
    stats = {"layers": recovered, "params": {}, "loss": [], "val": []}
    assert dead_units(stats) == [] and "recovered" in find_notes(stats)[0]["what"]


def test_values_near_a_threshold_are_notes():
    steps = list(range(0, 120, 10))
    stats = {"layers": {"hidden.1": _layer("tanh", steps, saturated=[0.1] * 9 + [0.44] * 3)}, "params": {},
             "loss": [], "val": []}
    assert find_problems(stats) == []
    note = find_notes(stats)
    assert note and note[0]["rule"] == "saturation" and "44%" in note[0]["what"] and "50%" in note[0]["what"]


def test_a_counted_model_has_nothing_to_inspect(data):
    from lmlab.models import NGram, NGramConfig

    model = NGram(NGramConfig(vocab_size=data.tokenizer.vocab_size, block_size=16))
    stats, findings, _ = train(model, data, steps=5)
    notes = find_notes(stats)
    assert findings == [] and notes[0]["rule"] == "nothing_to_inspect" and "counted model" in notes[0]["what"]
    assert format_finding(notes[0]).startswith("[note] nothing to inspect for a counted model")


def test_findings_are_ordered_by_severity_then_when_they_appeared():
    steps = list(range(0, 120, 10))
    layers = {"a.1": _layer("tanh", steps, saturated=[0.01] * 6 + [0.9] * 6),
              "b.1": _layer("relu", steps, dead=[1.0] * 12)}
    ranked = find_problems({"layers": layers, "params": {}, "loss": [], "val": [], "nonfinite_steps": 2})
    assert [f["rule"] for f in ranked] == ["nan", "dead_units", "saturation"]
    assert ranked[1]["since_step"] == 0 and ranked[2]["since_step"] == 60
