"""The inspector's statistics, checked against direct computations on small models."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from inspect_helpers import TinySelfAttention, TokenwiseLM, tiny_data, tiny_mlp, train
from torch import nn

from lmlab.inspector import STATS_FILE, Inspector, load_stats


@pytest.fixture
def data(tiny_names):
    return tiny_data(tiny_names)


def test_records_every_layer_and_removes_its_hooks(data, tmp_path):
    model = tiny_mlp(data, n_layer=2, norm="batch")
    stats, _, _ = train(model, data, steps=20, every=5, run_dir=tmp_path)
    layers = stats.layers
    assert {"embedding", "hidden.0", "hidden.1.norm", "hidden.2", "hidden.5", "head"} <= set(layers)
    assert layers["hidden.2"].kind == "tanh" and layers["hidden.1.norm"].kind == "norm"
    assert layers["hidden.2"].step == [0, 5, 10, 15]
    tanh = layers["hidden.2"]
    assert all(sum(h) > 0 for h in tanh.hist) and tanh.hist_range[0] == [-1.0, 1.0]
    assert 0 <= tanh.saturated[0] <= 1 and len(tanh.grad_std) == 4
    assert stats.order[0] == "embedding" and stats.order[-1] == "head"
    assert all(not m._forward_hooks for m in model.modules())  # nothing left behind on the model
    assert load_stats(tmp_path / STATS_FILE).layers.keys() == layers.keys()
    assert stats.ln_vocab == pytest.approx(math.log(data.tokenizer.vocab_size), abs=1e-4)


def test_activation_statistics_match_a_direct_computation(data):
    model = tiny_mlp(data)
    seen = []
    model.hidden[1].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()) if m.training else None)
    stats, _, _ = train(model, data, steps=1, every=1)
    t = seen[0]  # the training step's output (the causality probe runs in eval mode)
    tanh = stats.layers["hidden.1"]
    assert tanh.mean[0] == pytest.approx(t.mean().item(), rel=1e-3, abs=1e-5)
    assert tanh.std[0] == pytest.approx(t.std().item(), rel=1e-3)
    assert tanh.saturated[0] == pytest.approx((t.abs() > 0.97).float().mean().item(), abs=1e-4)
    assert sum(tanh.hist[0]) == t.numel()


def test_update_ratio_is_the_real_step_for_sgd_and_adam(data):
    # Plain SGD without clipping: dw = -lr * g, so update:data = lr * grad:data exactly.
    stats, _, _ = train(tiny_mlp(data), data, steps=3, every=1, optimizer="sgd", momentum=0.0, grad_clip=0.0,
                        lr=0.05)
    p = stats.params["hidden.0.weight"]
    for grad_data, update in zip(p.grad_data, p.update_data, strict=True):
        assert update == pytest.approx(math.log10(0.05 * grad_data), abs=1e-3)
    # Adam's first step moves every weight by about lr whatever the gradient's size: lr / std(w), not lr * g / w.
    stats, _, _ = train(tiny_mlp(data), data, steps=1, every=1, grad_clip=0.0, lr=1e-3)
    p = stats.params["hidden.0.weight"]
    assert p.update_data[0] == pytest.approx(math.log10(1e-3 / p.data_std[0]), abs=0.05)
    assert abs(p.update_data[0] - math.log10(1e-3 * p.grad_data[0])) > 1


def test_samples_only_every_k_steps(data):
    stats, _, _ = train(tiny_mlp(data), data, steps=12, every=4)
    assert stats.params["head.weight"].step == [0, 4, 8]
    assert [r.step for r in stats.loss] == list(range(1, 13))  # the loss itself is kept at every step


def test_dead_relu_units_and_attention_entropy(data):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    relu_body = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    with torch.no_grad():
        relu_body[0].bias[:8] = -100.0  # half the units can never fire
    stats, _, _ = train(TokenwiseLM(vocab, block, relu_body), data, steps=4, every=1, lr=1e-4)
    assert stats.layers["body.1"].dead[-1] == pytest.approx(0.5)

    torch.manual_seed(0)
    model = TokenwiseLM(vocab, block, TinySelfAttention(16, n_head=4))
    stats, _, _ = train(model, data, steps=2, every=1)
    entropy = stats.layers["body"].attn_entropy
    assert len(entropy) == 2 and len(entropy[0]) == 4
    # A causal row t spreads over at most t+1 keys: entropy is between 0 and the mean of ln(t+1).
    assert all(0 < h < math.log(block) for h in entropy[0])
    example = stats.attention_example["body"]
    assert len(example) == 4 and example[0][0][1] == 0.0  # the first query cannot see the second key
    assert model.body.record_attention is False  # switched off again outside sampled steps


def test_causality_probe_on_causal_and_leaky_models(data):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    stats, _, _ = train(tiny_mlp(data), data, steps=2, every=1)
    assert stats.causality.checked and not stats.causality.leak
    stats, _, _ = train(TokenwiseLM(vocab, block, nn.Identity(), peek=True), data, steps=2, every=1)
    assert stats.causality.leak and stats.causality.max_change > 0
    stats, _, _ = train(TokenwiseLM(vocab, block, TinySelfAttention(16, 2, causal=False)), data, steps=2)
    assert stats.causality.leak


def test_data_baselines_match_the_counted_models(data):
    from lmlab.inspector.probes import data_baselines
    from lmlab.models import NGram, NGramConfig
    from lmlab.training.scoring import mean_nll

    vocab, split = data.tokenizer.vocab_size, data.splits["train"]
    base = data_baselines(split, vocab)
    bigram = NGram(NGramConfig(vocab_size=vocab, block_size=16, n=2, alpha=1.0))  # add-one, as the baseline
    unigram = NGram(NGramConfig(vocab_size=vocab, block_size=16, n=1, alpha=0.0))
    for model in (bigram, unigram):
        for input_ids, labels in split.iter_batches(1024):
            model.fit_counts(input_ids, labels)
    assert base.bigram == pytest.approx(mean_nll(bigram, split)[0], rel=1e-4)
    assert base.unigram == pytest.approx(mean_nll(unigram, split)[0], rel=1e-4)
    assert base.tokens == split.num_predictions


def test_attention_maps_keep_the_example_tokens(data):
    torch.manual_seed(0)
    model = TokenwiseLM(data.tokenizer.vocab_size, 16, TinySelfAttention(16, n_head=2))
    stats, _, _ = train(model, data, steps=2, every=1)
    tokens = stats.attention_tokens
    assert len(tokens) == len(stats.attention_example["body"][0]) and all(isinstance(t, int) for t in tokens)


class _ReluAsAFunction(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return torch.nn.functional.relu(self.fc(x))  # seen only by the inspector's function watch


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_training_is_not_recompiled_by_the_inspector(data, monkeypatch, backend):
    # Recompiles are dynamo's (guards on hooks), whatever the backend; "eager" skips code generation.
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    body = nn.Sequential(TinySelfAttention(16, 2), _ReluAsAFunction())
    model = TokenwiseLM(data.tokenizer.vocab_size, 16, body)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile fails the run
            stats, _, trainer = train(model, data, steps=7, every=3, compile=True, batch_size=8)
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    assert trainer.step == 7 and graphs == 1  # compiled once, on step 1, and used by the other steps
    assert stats.layers["body.1.fc"].step == [0, 3, 6]  # every sampled step was hooked
    assert len(stats.layers["body.0"].attn_entropy) == 3
    assert stats.unwatched == {"body.1": "calls relu as a function, not as a module"}


def test_the_default_interval_widens_when_samples_cost_much_more_than_steps():
    from lmlab.inspector.inspector import MIN_SAMPLES, SAMPLING_SHARE
    from lmlab.inspector.stats import InspectorStats

    inspector = Inspector()  # the default interval: adaptive
    inspector.every, inspector._widest, inspector.stats = 6, 300 // MIN_SAMPLES, InspectorStats(every=6)
    inspector._plain_seconds.extend([0.005] * 5)
    inspector._sample_extra = 0.005 * SAMPLING_SHARE * 20  # each sample costs 20 intervals' budget
    inspector._widen()
    assert inspector.every == 20 == inspector.stats.every
    inspector._sample_extra = 1.0  # far too dear: never fewer than MIN_SAMPLES samples a run
    inspector._widen()
    assert inspector.every == 300 // MIN_SAMPLES
    fixed = Inspector(every=6)
    fixed.every, fixed._plain_seconds, fixed._sample_extra = 6, inspector._plain_seconds, 1.0
    fixed._widen()
    assert fixed.every == 6  # an interval asked for is kept
