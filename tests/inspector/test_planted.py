"""Faults planted in models written here, in plain torch (none of lmlab's modules or hooks), each beside a
fault-free twin that raises nothing: the inspector has to see inside code it did not write (issue 34)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from inspect_helpers import rules, tiny_data, train
from torch import nn

from lmlab.inspector import format_finding
from lmlab.models.base import ModelOutput


@pytest.fixture
def data(tiny_names):
    return tiny_data(tiny_names)


def _loss(logits, labels):
    if labels is None:
        return None
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100)


class Attention(nn.Module):
    """Causal self-attention as people write it by hand; `scaled=False` forgets the 1/sqrt(head size);
    `sdpa` uses F.scaled_dot_product_attention instead of an explicit softmax."""

    def __init__(self, width, n_head, scaled=True, sdpa=False):
        super().__init__()
        self.n_head, self.scaled, self.sdpa = n_head, scaled, sdpa
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))  # (B, nh, T, hs)
        scale = 1 / math.sqrt(q.size(-1)) if self.scaled else 1.0
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        else:
            scores = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, T)
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            y = F.softmax(scores, dim=-1) @ v
        return x + self.out(y.transpose(1, 2).reshape(B, T, C))


class TinyTransformer(nn.Module):
    def __init__(self, vocab, block, width=64, n_head=2, **attention):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, block_size=block)
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(block, width)
        self.attention = Attention(width, n_head, **attention)
        self.head = nn.Linear(width, vocab)

    def forward(self, input_ids, labels=None):
        T = input_ids.size(1)
        x = self.tokens(input_ids) + self.positions(torch.arange(T))  # (B, T, C)
        logits = self.head(self.attention(x))  # (B, T, V)
        return ModelOutput(logits=logits, loss=_loss(logits, labels))


@pytest.mark.parametrize("sdpa", [False, True])
def test_unscaled_attention_in_a_users_own_module(data, sdpa):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    torch.manual_seed(0)
    model = TinyTransformer(vocab, block, width=256, n_head=1, scaled=False, sdpa=sdpa)
    stats, findings, _ = train(model, data, steps=4, every=1, batch_size=8)
    found = [f for f in findings if f.rule == "attention_saturated"]
    assert found and found[0].layer == "attention" and "sqrt(head_size)" in found[0].fix, \
        [format_finding(f) for f in findings]
    assert stats.layers["attention"].attn_entropy[0][0] < 0.25 * stats.layers["attention"].attn_uniform[0]
    torch.manual_seed(0)
    healthy = TinyTransformer(vocab, block, width=256, n_head=1, sdpa=sdpa)
    stats, findings, _ = train(healthy, data, steps=4, every=1, batch_size=8)
    assert "attention_saturated" not in rules(findings) and stats.layers["attention"].attn_entropy


class Embedded(nn.Module):
    """Token and position embeddings -> a ReLU MLP over the last 3 tokens -> logits."""

    def __init__(self, vocab, block, width=16):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, block_size=block)
        self.embedding = nn.Embedding(vocab, width)
        self.mix = nn.Linear(3 * width, 64)
        self.head = nn.Linear(64, vocab)

    def forward(self, input_ids, labels=None):
        x = self.embedding(input_ids)  # (B, T, C)
        window = torch.cat([F.pad(x, (0, 0, k, 0))[:, : x.size(1)] for k in (0, 1, 2)], dim=-1)  # (B, T, 3C)
        logits = self.head(torch.relu(self.mix(window)))  # (B, T, V)
        return ModelOutput(logits=logits, loss=_loss(logits, labels))


def test_a_frozen_embedding_in_a_model_trained_from_scratch(data):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    torch.manual_seed(0)
    model = Embedded(vocab, block)
    model.embedding.weight.requires_grad_(False)  # a random table that never trains
    _, findings, _ = train(model, data, steps=20, every=5)
    found = [f for f in findings if f.rule == "frozen_parameters"]
    assert found and found[0].severity == "warning" and found[0].numbers["random"] == ["embedding.weight"], \
        [format_finding(f) for f in findings]
    assert "requires_grad=True" in found[0].fix
    torch.manual_seed(0)
    _, findings, _ = train(Embedded(vocab, block), data, steps=60, every=5)
    assert findings == [], [format_finding(f) for f in findings]


class Block(nn.Module):
    """Attention then an MLP, with or without the residual connections around them."""

    def __init__(self, width, residual):
        super().__init__()
        self.attention, self.residual = Attention(width, 2), residual
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        a = self.attention(x)  # x + attention: Attention keeps its own residual
        x = a if self.residual else a - x
        m = self.down(F.gelu(self.up(x)))
        return x + m if self.residual else m


class Deep(nn.Module):
    """12 blocks, GPT-2's init (std 0.02), a final LayerNorm."""

    def __init__(self, vocab, block, residual, width=32, n_layer=12):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, block_size=block)
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(block, width)
        self.blocks = nn.ModuleList(Block(width, residual) for _ in range(n_layer))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, input_ids, labels=None):
        x = self.tokens(input_ids) + self.positions(torch.arange(input_ids.size(1)))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))  # (B, T, V)
        return ModelOutput(logits=logits, loss=_loss(logits, labels))


def test_a_deep_stack_without_residual_connections_vanishes(data):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    torch.manual_seed(0)
    _, findings, _ = train(Deep(vocab, block, residual=False), data, steps=30, every=5, lr=3e-3)
    found = [f for f in findings if f.rule == "vanishing_gradients"]
    assert found and "residual connections" in found[0].fix, [format_finding(f) for f in findings]
    assert "exploding_gradients" not in rules(findings)
    torch.manual_seed(0)
    _, findings, _ = train(Deep(vocab, block, residual=True), data, steps=10, every=5, lr=3e-3)
    assert not rules(findings) & {"vanishing_gradients", "exploding_gradients", "activation_growth"}, \
        [format_finding(f) for f in findings]


class Faulty(Embedded):
    """Embedded with one planted fault in what a next-token model computes."""

    def __init__(self, vocab, block, fault):
        super().__init__(vocab, block)
        self.fault = fault

    def forward(self, input_ids, labels=None):
        x = self.embedding(input_ids)  # (B, T, C)
        if self.fault == "shifted":  # position t reads tokens t-1, t-2, t-3: the newest one is left out
            x = F.pad(x, (0, 0, 1, 0))[:, :-1]
        if self.fault == "from_the_end":  # a position signal counted from the end of the input
            T = x.size(1)
            x = x + torch.linspace(-1, 0, T).view(1, T, 1)
        window = torch.cat([F.pad(x, (0, 0, k, 0))[:, : x.size(1)] for k in (0, 1, 2)], dim=-1)  # (B, T, 3C)
        h = torch.relu(self.mix(window))
        if self.fault == "dropout_in_eval":
            h = F.dropout(h, 0.1)  # training=True by default: still on under model.eval()
        logits = self.head(h)  # (B, T, V)
        if self.fault == "probabilities":
            logits = logits.softmax(-1)
        return ModelOutput(logits=logits, loss=_loss(logits, labels))


@pytest.mark.parametrize(("fault", "rule", "fix"), [
    ("dropout_in_eval", "eval_not_deterministic", "training=self.training"),
    ("shifted", "newest_token_ignored", "unshifted"),
    ("from_the_end", "prefix_mismatch", "torch.arange(T)"),
    ("probabilities", "returns_probabilities", "before the softmax"),
])
def test_invariants_of_a_next_token_model(data, fault, rule, fix):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    torch.manual_seed(0)
    _, findings, _ = train(Faulty(vocab, block, fault), data, steps=6, every=3)
    assert findings[0].rule == rule and findings[0].severity == "error", [format_finding(f) for f in findings]
    assert fix in findings[0].fix
    # One cause: the noise of dropout read as a causal leak or coupled rows is worded as its consequence
    assert all("a consequence" in f.what for f in findings if f.rule in ("causality_leak", "eval_batch_coupling"))


def test_a_healthy_twin_raises_nothing(data):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    torch.manual_seed(0)
    stats, findings, _ = train(Faulty(vocab, block, None), data, steps=60, every=5)
    assert findings == [], [format_finding(f) for f in findings]
    assert stats.invariants.checked and stats.causality.own_change > 0


def test_no_warm_up_at_a_high_rate_is_named_as_the_cause(data):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    torch.manual_seed(0)
    stats, findings, _ = train(TinyTransformer(vocab, block), data, steps=100, every=10, lr=0.05)
    assert findings and findings[0].rule == "early_loss_spike", [format_finding(f) for f in findings]
    assert findings[0].numbers["loss_peak"] > stats.ln_vocab + 1 and "train.warmup_steps=" in findings[0].fix
    # Whatever else the spike did (dead units, spikes of the gradient norm) is worded as its consequence
    assert all(f.fix == findings[0].fix for f in findings[1:] if f.rule in ("dead_units", "exploding_gradients"))
    torch.manual_seed(0)
    _, findings, _ = train(TinyTransformer(vocab, block), data, steps=100, every=10, lr=0.05, warmup_steps=20)
    assert "early_loss_spike" not in rules(findings), [format_finding(f) for f in findings]


def test_weight_decay_that_holds_the_loss_above_the_bigram(data):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    torch.manual_seed(0)
    _, findings, _ = train(Embedded(vocab, block), data, steps=100, every=10, weight_decay=5.0)
    found = [f for f in findings if f.rule == "weight_decay_too_strong"]
    assert found and "train.weight_decay (now 5)" in found[0].fix, [format_finding(f) for f in findings]
    learned = [f for f in findings if f.rule == "not_learning"]
    assert all(f.fix == found[0].fix for f in learned)  # not learning is the decay's consequence
    torch.manual_seed(0)
    _, findings, _ = train(Embedded(vocab, block), data, steps=60, every=5, weight_decay=0.1)
    assert findings == [], [format_finding(f) for f in findings]


# -- never silent on a run that learned nothing -----------------------------------------------------------


def test_a_run_too_short_to_learn_says_so(data):
    vocab, block = data.tokenizer.vocab_size, data.splits["train"].block_size
    torch.manual_seed(0)
    stats, findings, _ = train(Embedded(vocab, block), data, steps=12, every=4)
    (found,) = [f for f in findings if f.rule == "not_learning"]
    assert found.numbers["loss_end"] > stats.baselines.bigram and "too short" in found.what
    assert "--max-steps" in found.fix and "learning rate" not in found.fix


def _stalled(**run):
    """A loss flat at 2.6 (counted bigram 2.4) after `run`'s steps, with a 100-step warm-up."""
    steps = run.pop("steps", 84)
    from lmlab.inspector import InspectorStats

    return InspectorStats.from_dict({
        "layers": {}, "params": {}, "val": [], "ln_vocab": 6.24, "vocab_size": 512, "initial_loss": 6.3,
        "warmup_steps": 100, "lr": 3e-3, "steps": steps,
        "loss": [[s, 2.6 + 0.001 * (s % 3), 3e-3 * s / 100, 1.0] for s in range(1, steps + 1)],
        "baselines": {"unigram": 3.0, "bigram": 2.4, "tokens": 10_000},
        "run": {"planned_steps": 300, "fitted_steps": 300, "steps": steps, **run}})


def test_the_cause_of_a_run_that_learned_nothing_comes_from_what_the_run_knows():
    from lmlab.inspector.loss_rules import not_learning

    (inside,) = not_learning(_stalled(stopped_step=84, best_step=42, monitor="val_loss"))
    assert "inside its 100-step warm-up" in inside.what and "warm-up" in inside.fix
    assert "raise the learning rate" not in inside.fix  # the rate never reached its peak: not its fault
    (cut,) = not_learning(_stalled(steps=200, stopped_step=200, best_step=100, monitor="val_loss"))
    assert "step 200 of the 300 planned" in cut.what and "patience" in cut.fix
    (budget,) = not_learning(_stalled(steps=150, time_budget=60.0))
    assert "time budget" in budget.what and "--budget" in budget.fix
    (done,) = not_learning(_stalled(steps=300))  # all its steps, the loss flat: the model does not use its context
    assert "does not use its context" in done.what and "labels line up" in done.fix
    assert not_learning(_stalled(steps=300, stopped_step=None)) == [done] and done.severity == "warning"
