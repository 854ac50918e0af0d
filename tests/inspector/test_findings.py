"""Each health rule fires on a small model with that fault planted, and healthy runs stay quiet."""

from __future__ import annotations

import pytest
import torch
from inspect_helpers import TinySelfAttention, TokenwiseLM, rules, tiny_data, tiny_mlp, train
from torch import nn

from lmlab.inspector import InspectorStats, find_notes, find_problems, format_finding
from lmlab.inspector.layer_rules import dead_units, depth_gradients
from lmlab.inspector.loss_rules import overfitting
from lmlab.inspector.rule_helpers import lr_text, times
from lmlab.inspector.update_rules import frozen_parameters
from lmlab.training.callbacks import Callback


@pytest.fixture
def data(tiny_names):
    return tiny_data(tiny_names)


def test_healthy_runs_raise_nothing(data):
    _, findings, _ = train(tiny_mlp(data), data, steps=60, every=5)
    assert findings == [], [format_finding(f) for f in findings]
    _, findings, _ = train(tiny_mlp(data, norm="batch", n_layer=2), data, steps=30, every=5)
    assert findings == [], [format_finding(f) for f in findings]
    from lmlab.models import GPT, GPTConfig  # attention, GELU, weight decay, warm-up: the new probes stay quiet

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32))
    stats, findings, _ = train(gpt, data, steps=60, every=5, lr=3e-3, weight_decay=0.1, warmup_steps=10)
    assert findings == [], [format_finding(f) for f in findings]
    assert stats.targets.checked and stats.batch_coupling.checked and stats.overlap.checked


def test_over_confident_initial_logits(data):
    model = tiny_mlp(data)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)  # lecture 3's first network: randn output weights
    stats, findings, _ = train(model, data, steps=3, every=1)
    found = [f for f in findings if f.rule == "initial_loss"]
    assert found and found[0].numbers["initial_loss"] > 2 * stats.ln_vocab
    assert "too confident" in found[0].what and "scale" in found[0].fix


def test_saturated_tanh(data):
    model = tiny_mlp(data)
    with torch.no_grad():
        model.hidden[0].weight.mul_(10)
    _, findings, _ = train(model, data, steps=3, every=1)
    assert [f.layer for f in findings if f.rule == "saturation"] == ["hidden.1"]


def test_dead_relu_units(data):
    body = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    with torch.no_grad():
        body[0].bias.fill_(-50.0)
    _, findings, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, body), data, steps=4, every=1)
    dead = [f for f in findings if f.rule == "dead_units"]
    assert dead and dead[0].layer == "body.1" and dead[0].severity == "error"


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
    found = [f for f in findings if f.rule == "vanishing_gradients"]
    assert found and found[0].numbers["grad_std_last"] > 100 * found[0].numbers["grad_std_first"]


class _Explode(nn.Module):
    def forward(self, x):
        return x * float("inf")


def test_nan_loss_is_an_error(data):
    body = nn.Sequential(nn.Linear(16, 16), _Explode())
    _, findings, trainer = train(TokenwiseLM(data.tokenizer.vocab_size, 16, body), data, steps=10, every=1)
    assert trainer.nonfinite_steps == 5
    nan = [f for f in findings if f.rule == "nan"]
    assert nan and nan[0].severity == "error" and nan[0].numbers["nonfinite_steps"] == 5


def test_peeking_at_the_next_token_is_an_error(data):
    model = TokenwiseLM(data.tokenizer.vocab_size, 16, nn.Identity(), peek=True)
    _, findings, _ = train(model, data, steps=3, every=1)
    assert findings[0].rule == "causality_leak" and findings[0].severity == "error"


def _stats_with(loss_records, val):
    return InspectorStats.from_dict({"layers": {}, "params": {}, "loss": loss_records, "val": val, "ln_vocab": 3.3,
                                     "vocab_size": 27, "initial_loss": 3.3})


def test_growing_train_val_gap():
    # Train loss keeps falling while validation turns up after step 200: the classic memorisation curve.
    records = [[s, 3.0 - 2.5 * s / 600, 1e-3, 1.0] for s in range(1, 601)]
    val = [[100, 2.8], [200, 2.6], [300, 2.65], [400, 2.75], [500, 2.9], [600, 3.0]]
    found = overfitting(_stats_with(records, val))
    assert found and found[0].numbers["val_best_step"] == 200 and found[0].numbers["gap_end"] > 2
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
    frozen = [f for f in findings if f.rule == "frozen_parameters"]
    assert frozen and frozen[0].numbers["share"] > 0.95 and "head.weight" in frozen[0].what
    assert "token frequencies" in frozen[0].what  # the loss only reached the unigram baseline
    stuck = [f for f in findings if f.rule == "not_learning"]
    assert stuck and stuck[0].numbers["unigram"] == stats.baselines.unigram
    # A parameter that never gets a gradient (not used in forward) counts too.
    stats = InspectorStats.from_dict({
        "layers": {}, "param_count": 100, "frozen": {},
        "params": {"unused.weight": {"shape": [8, 8], "no_grad": 3}, "w": {"shape": [6, 6], "moved": True,
                                                                           "grad_std": [0.1]}}})
    found = frozen_parameters(stats)
    assert found[0].severity == "warning" and found[0].numbers["untrained"] == ["unused.weight"]


def _flat_run(level, ln_v=3.3, unigram=2.8, bigram=2.4, steps=200):
    return InspectorStats.from_dict({
        "layers": {}, "params": {}, "val": [], "ln_vocab": ln_v, "vocab_size": 27, "initial_loss": ln_v,
        "loss": [[s, level + 0.3 * 0.97**s, 1e-3, 1.0] for s in range(1, steps + 1)],
        "baselines": {"unigram": unigram, "bigram": bigram, "tokens": 1000}})


def test_not_learning_is_judged_against_the_data_baselines():
    # Far below ln V, yet flat at the unigram entropy: it learned token frequencies and nothing else.
    found = [f for f in find_problems(_flat_run(2.81)) if f.rule == "not_learning"]
    assert found and "token frequencies" in found[0].what and found[0].numbers["bigram"] == 2.4
    assert find_problems(_flat_run(2.3)) == []  # better than the bigram: fine
    note = [f for f in find_notes(_flat_run(2.3)) if f.rule == "baselines"]
    assert note and "2.800" in note[0].what and "below the counted bigram" in note[0].what


def _layer(kind, steps, **series):
    return {"kind": kind, "type": kind, "step": steps, **series}


def test_depth_is_judged_on_early_and_late_samples():
    # 1e9 between last and first layer in the first samples; then the first layer's units die, its gradient
    # becomes 0 and a whole-run median would skip the stack.
    steps = list(range(0, 120, 10))
    first = [1e-10] * 4 + [0.0] * 8
    layers = {f"body.{i}": _layer("relu", steps, grad_std=first if i == 1 else [0.1] * 12) for i in (1, 3, 5)}
    stats = InspectorStats.from_dict({"layers": layers, "params": {}, "loss": [], "order": list(layers)})
    found = depth_gradients(stats)
    assert len(found) == 1 and found[0].rule == "vanishing_gradients" and found[0].since_step == 0
    # Early it was already 1e9 times smaller (the cause, said first); late nothing reaches it: both are said.
    assert "(1.0e9x smaller) in the early samples (infinitely late)" in found[0].what


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
    assert stats.unwatched == {"body": "calls silu as a function, not as a module"}
    stats, _, _ = train(TokenwiseLM(vocab, 16, Hidden()), data, steps=2, every=1)
    assert stats.unwatched == {"body": "calls relu as a function, not as a module"}
    note = [f for f in find_notes(stats) if f.rule == "unwatched"]
    assert note and "body" in note[0].what
    from lmlab.models import GPT, GPTConfig

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=16))
    stats, _, _ = train(gpt, data, steps=2, every=1)
    assert stats.layers["transformer.h.0.mlp.act"].kind == "gelu" and not stats.unwatched


# -- messages ---------------------------------------------------------------------------------------------


def test_learning_rate_fixes_quote_the_current_and_suggested_rate(data):
    _, findings, _ = train(tiny_mlp(data), data, steps=30, every=3, lr=1e-7)
    low = next(f for f in findings if f.rule == "lr_too_low")
    assert "now 1e-7" in low.fix and "by about 10^" in low.fix and "lmlab lr-find" in low.fix
    assert "check that the optimizer updates" in low.fix
    suggested = low.numbers["suggested_lr"]  # the rate that brings the update:data ratio to 1e-3
    assert suggested == pytest.approx(1e-7 * 10 ** (-3 - low.numbers["log10_update_data"]), rel=0.5)
    _, findings, _ = train(tiny_mlp(data), data, steps=30, every=3, lr=1.0)
    high = next(f for f in findings if f.rule in ("lr_too_high", "nan"))
    assert "now 1" in high.fix and "toward 3e-3" in high.fix and "lmlab lr-find" in high.fix


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
    dead = [f for f in findings if f.rule == "dead_units"]
    assert len(dead) == 1 and dead[0].what.startswith("6 of 8 relu layers")
    assert len(dead[0].numbers["layers"]) == 6
    assert len([f for f in findings if f.rule in ("vanishing_gradients", "exploding_gradients")]) <= 1


def test_root_cause_first_when_activations_grow_with_depth(data):
    torch.manual_seed(0)
    layers = []
    for _ in range(10):
        linear = nn.Linear(16, 16)
        nn.init.normal_(linear.weight, std=3.0 / 16**0.5)  # each layer multiplies the activations' std ~2x
        layers += [linear, nn.ReLU()]
    _, findings, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, nn.Sequential(*layers)), data, steps=3,
                           every=1, lr=1e-4)
    ranked = [f.rule for f in findings]
    assert "activation_growth" in ranked and "initial_loss" in ranked
    assert ranked.index("activation_growth") < ranked.index("initial_loss")
    assert "consequence" in next(f for f in findings if f.rule == "initial_loss").what


def test_dead_units_are_worded_by_their_trend():
    steps = list(range(0, 120, 10))
    falling = {"body.1": _layer("relu", steps, dead=[0.8] * 4 + [0.5] * 4 + [0.3] * 4)}
    found = dead_units(InspectorStats.from_dict({"layers": falling}))
    assert "fell from 80% to 30%" in found[0].what and "recover by themselves" not in found[0].what
    flat = {"body.1": _layer("relu", steps, dead=[0.6] * 12)}
    assert "do not recover by themselves" in dead_units(InspectorStats.from_dict({"layers": flat}))[0].what
    recovered = {"body.1": _layer("relu", steps, dead=[0.6] * 4 + [0.0] * 8)}
    stats = InspectorStats.from_dict({"layers": recovered, "params": {}, "loss": [], "val": []})
    assert dead_units(stats) == [] and "recovered" in find_notes(stats)[0].what


def test_values_near_a_threshold_are_notes():
    steps = list(range(0, 120, 10))
    stats = InspectorStats.from_dict({"layers": {"hidden.1": _layer("tanh", steps, saturated=[0.1] * 9 + [0.44] * 3)},
                                      "params": {}, "loss": [], "val": []})
    assert find_problems(stats) == []
    note = find_notes(stats)
    assert note and note[0].rule == "saturation" and "44%" in note[0].what and "50%" in note[0].what


def test_a_counted_model_has_nothing_to_inspect(data):
    from lmlab.models import NGram, NGramConfig

    model = NGram(NGramConfig(vocab_size=data.tokenizer.vocab_size, block_size=16))
    stats, findings, _ = train(model, data, steps=5)
    notes = find_notes(stats)
    assert findings == [] and notes[0].rule == "nothing_to_inspect" and "counted model" in notes[0].what
    assert format_finding(notes[0]).startswith("[note] nothing to inspect for a counted model")


def test_findings_are_ordered_by_severity_then_when_they_appeared():
    steps = list(range(0, 120, 10))
    layers = {"a.1": _layer("tanh", steps, saturated=[0.01] * 6 + [0.9] * 6),
              "b.1": _layer("relu", steps, dead=[1.0] * 12)}
    ranked = find_problems(InspectorStats.from_dict({"layers": layers, "params": {}, "loss": [], "val": [],
                                                     "nonfinite_steps": 2}))
    assert [f.rule for f in ranked] == ["nan", "dead_units", "saturation"]
    assert ranked[1].since_step == 0 and ranked[2].since_step == 60


# -- findings that know the run ---------------------------------------------------------------------------


def _memorising(**run):
    records = [[s, 3.0 - 2.5 * s / 600, 1e-3, 1.0] for s in range(1, 601)]
    val = [[100, 2.8], [200, 2.6], [300, 2.65], [400, 2.75], [500, 2.9], [600, 3.0]]
    raw = {"layers": {}, "params": {}, "loss": records, "val": val, "ln_vocab": 3.3, "vocab_size": 27,
           "initial_loss": 3.3}
    if run:
        raw["run"] = {"planned_steps": 1000, "fitted_steps": 1000, "steps": 600, "monitor": "val_loss", **run}
    return InspectorStats.from_dict(raw)


def test_early_stopping_that_kept_the_best_step_is_a_note_not_a_warning():
    assert [f.severity for f in overfitting(_memorising())] == ["warning"]
    assert "--early-stopping" in overfitting(_memorising())[0].fix
    kept = _memorising(stopped_step=600, best_step=200, best=2.6, restored=True)
    (note,) = overfitting(kept)
    assert note.severity == "note" and not note.fix and "kept step 200 (val 2.600)" in note.what
    assert "would have memorised" in note.what and note.numbers["stopped_step"] == 600
    assert find_problems(kept) == [] and note in find_notes(kept)
    # Stopped, but the model holds the last weights (restoring off, or interrupted): still a warning.
    (warning,) = overfitting(_memorising(stopped_step=600, best_step=200, best=2.6, restored=False))
    assert warning.severity == "warning" and "--early-stopping" not in warning.fix
    assert "not the best ones" in warning.what


def test_a_warm_up_spike_the_clip_held_is_a_note():
    from lmlab.inspector.layer_rules import exploding_gradients

    # Norms fall from ~5 to ~0.2 over warm-up, one clipped spike at step 16; afterwards the loss falls on.
    records = [[s, 6.0 - 3.0 * s / 300, 1e-3, 5.0 * 0.9**s + 0.2] for s in range(1, 301)]
    records[15][3] = 44.6
    raw = {"layers": {}, "params": {}, "loss": records, "val": [], "grad_clip": 1.0, "warmup_steps": 100}
    (found,) = exploding_gradients(InspectorStats.from_dict(raw))
    assert found.severity == "note" and found.since_step == 16 and "warm-up" in found.what
    assert find_problems(InspectorStats.from_dict(raw)) == []
    # The same spike after warm-up is judged against the rest of the run: a warning.
    records[15][3], records[200][3] = 0.2, 44.6
    (found,) = exploding_gradients(InspectorStats.from_dict(raw))
    assert found.severity == "warning" and found.since_step == 201


def test_learning_rate_scaled_by_a_callback_and_a_cut_budget_are_notes():
    from lmlab.inspector.loss_rules import run_control

    stats = _memorising(lr_scales=[[300, 0.1]], time_budget=60.0, fitted_steps=700, planned_steps=5000)
    notes = run_control(stats)
    assert [n.severity for n in notes] == ["note", "note"]
    assert "x0.1 at step 300" in notes[0].what and "step 600 of the 700 its schedule planned" in notes[1].what
    assert run_control(_memorising(time_budget=60.0, fitted_steps=600)) == []  # it ended on its schedule


def test_the_inspector_reads_what_early_stopping_did(data):
    from lmlab.config import TrainConfig
    from lmlab.inspector import Inspector
    from lmlab.training.callbacks import EarlyStopping
    from lmlab.training.trainer import Trainer

    inspector = Inspector(every=5)
    stopper = EarlyStopping(patience=1, min_delta=10.0, restore_best_weights=True)  # no later eval improves
    config = TrainConfig(max_steps=60, warmup_steps=0, eval_interval=5, log_interval=5, device="cpu", batch_size=16)
    Trainer(tiny_mlp(data), data.splits["train"], data.splits["val"], config, callbacks=[inspector, stopper]).fit()
    run = inspector.stats.run
    assert (run.best_step, run.stopped_step, run.restored, run.planned_steps, run.steps) == (5, 10, True, 60, 10)


# -- planted faults users make in their own models and data -----------------------------------------------


class _OwnLoss(TokenwiseLM):
    """A model with a home-made loss: `mode` "unshifted" scores logits at t against token t (it learns to copy);
    "unmasked" builds its targets from input_ids, so padding after padding counts."""

    def __init__(self, vocab, block, mode):
        super().__init__(vocab, block, nn.Identity())
        self.mode = mode

    def forward(self, input_ids, labels=None, **_):
        out = super().forward(input_ids)
        logits, loss = out.logits, None
        if labels is not None and self.mode == "unshifted":
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
        elif labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                               input_ids[:, 1:].reshape(-1))
        return type(out)(logits=logits, loss=loss)


def test_labels_not_shifted_are_named_before_the_overfitting_they_cause(data):
    torch.manual_seed(0)
    model = _OwnLoss(data.tokenizer.vocab_size, 16, "unshifted")
    stats, findings, _ = train(model, data, steps=60, every=10)
    assert findings[0].rule == "labels_not_shifted" and findings[0].severity == "error", \
        [format_finding(f) for f in findings]
    assert findings[0].numbers["copy_share"] > 0.9 and findings[0].numbers["repeat_share"] < 0.2
    assert "copy its input" in findings[0].what and "labels[:, 1:]" in findings[0].fix
    assert not [f for f in findings if f.rule == "overfitting" and "consequence" not in f.what]


def test_a_loss_that_scores_padding_is_not_the_labels_loss(data):
    torch.manual_seed(0)
    stats, findings, _ = train(_OwnLoss(data.tokenizer.vocab_size, 16, "unmasked"), data, steps=60, every=10)
    found = [f for f in findings if f.rule == "loss_mismatch"]
    assert found and found[0].severity == "error" and "padding" in found[0].what, [format_finding(f) for f in findings]
    assert found[0].numbers["padded_share"] > 0.1 and "ignore_index=-100" in found[0].fix
    assert "labels_not_shifted" not in rules(findings)


def test_labels_that_score_padding_are_counted():
    from lmlab.inspector.probes import targets_probe

    class Padded:  # a user's dataset whose labels forgot to mask the padding
        def iter_batches(self, batch_size, max_tokens=None):
            ids = torch.tensor([[0, 5, 6, 7, 0, 0, 0, 0], [0, 8, 9, 0, 0, 0, 0, 0]])
            yield ids, ids.clone()

    model = TokenwiseLM(10, 8, nn.Identity())
    probe = targets_probe(model, Padded(), 10)
    assert probe.checked and probe.scored_padding > 0.4  # 7 of the 14 targets are padding after padding
    from lmlab.inspector.probe_rules import padding_scored

    (found,) = padding_scored(InspectorStats(targets=probe))
    assert found.severity == "warning" and "-100" in found.fix


class _BatchStatsInEval(nn.Module):
    """BatchNorm that keeps using the batch's statistics in eval mode: examples are coupled."""

    def __init__(self, width=16):
        super().__init__()
        self.norm = nn.BatchNorm1d(width, track_running_stats=False)

    def forward(self, x):  # (B, T, C)
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def test_batch_statistics_in_eval_mode_are_named_not_a_causal_leak(data):
    torch.manual_seed(0)
    _, findings, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, _BatchStatsInEval()), data, steps=6, every=2)
    assert findings[0].rule == "eval_batch_coupling" and findings[0].severity == "error", \
        [format_finding(f) for f in findings]
    assert "running statistics" in findings[0].fix
    leak = [f for f in findings if f.rule == "causality_leak"]
    assert all("batch statistics" in f.what for f in leak)
    torch.manual_seed(0)  # the default BatchNorm (running statistics in eval) couples nothing
    _, findings, _ = train(tiny_mlp(data, norm="batch", n_layer=2), data, steps=6, every=2)
    assert "eval_batch_coupling" not in rules(findings)


class _UnscaledAttention(TinySelfAttention):
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        att = att.softmax(-1)  # (B, nh, T, T), never divided by sqrt(hs)
        if self.record_attention:
            self.last_attention = att.detach()
        return x + self.proj((att @ v).transpose(1, 2).reshape(B, T, C))


def test_attention_without_the_sqrt_scale_is_one_hot_from_the_start(data):
    vocab = data.tokenizer.vocab_size
    torch.manual_seed(0)
    body = _UnscaledAttention(256, n_head=1)
    _, findings, _ = train(TokenwiseLM(vocab, 16, body, width=256), data, steps=4, every=1, batch_size=8)
    found = [f for f in findings if f.rule == "attention_saturated"]
    assert found and found[0].layer == "body" and "sqrt(head_size)" in found[0].fix, \
        [format_finding(f) for f in findings]
    torch.manual_seed(0)
    _, findings, _ = train(TokenwiseLM(vocab, 16, TinySelfAttention(256, 1), width=256), data, steps=4, every=1,
                           batch_size=8)
    assert "attention_saturated" not in rules(findings)


def test_an_embedding_the_optimizer_never_updates(data):
    class LeaveOutEmbedding(Callback):
        def on_train_begin(self, trainer):
            emb = trainer.model.embedding.weight
            for group in trainer.optimizer.param_groups:
                group["params"] = [p for p in group["params"] if p is not emb]

    from lmlab.config import TrainConfig
    from lmlab.inspector import Inspector
    from lmlab.training.trainer import Trainer

    torch.manual_seed(0)
    model = TokenwiseLM(data.tokenizer.vocab_size, 16, nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16)))
    inspector = Inspector(every=5)
    config = TrainConfig(max_steps=20, warmup_steps=0, eval_interval=10, device="cpu", batch_size=16, lr=1e-2)
    Trainer(model, data.splits["train"], data.splits["val"], config,
            callbacks=[inspector, LeaveOutEmbedding()]).fit()
    found = [f for f in find_problems(inspector.stats) if f.rule == "frozen_parameters"]
    assert found and found[0].severity == "warning" and found[0].numbers["stuck"] == ["embedding.weight"]
    assert "optimizer" in found[0].fix


def test_validation_examples_that_are_training_examples(data):
    from lmlab.inspector.probe_rules import duplicated_examples
    from lmlab.inspector.probes import data_overlap

    train_split = data.splits["train"]
    assert not duplicated_examples(InspectorStats(overlap=data_overlap(train_split, data.splits["val"])))
    (found,) = duplicated_examples(InspectorStats(overlap=data_overlap(train_split, train_split)))
    assert found.severity == "warning" and found.numbers["exact"] == found.numbers["rows"] > 100
    assert found.numbers["examples"] and "deduplicate" in found.fix
    from lmlab.inspector.stats import DataOverlap

    common = DataOverlap(checked=True, rows=3203, exact=378)  # the full names.txt: common names repeat
    (note,) = duplicated_examples(InspectorStats(overlap=common))
    assert note.severity == "note" and "12%" in note.what


def test_weight_decay_that_crushes_the_weights(data):
    torch.manual_seed(0)
    _, findings, _ = train(tiny_mlp(data), data, steps=150, every=10, lr=1e-2, weight_decay=20.0)
    found = [f for f in findings if f.rule == "weight_decay_too_strong"]
    assert found and "train.weight_decay (now 20)" in found[0].fix, [format_finding(f) for f in findings]
    _, findings, _ = train(tiny_mlp(data), data, steps=150, every=10, lr=1e-2, weight_decay=0.1)
    assert "weight_decay_too_strong" not in rules(findings)
