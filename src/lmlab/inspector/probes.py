"""What the inspector learns about the model and the data apart from its per-step hooks: the data's own
baselines (the training split's unigram entropy and the counted bigram's NLL), the model's default learning
rate, how often to sample, and the causality probe (changing a later token must never change an earlier
position's logits).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmlab.inspector.stats import Baselines, Causality, compact

BASELINE_TOKENS = 1_000_000  # the data baselines read at most this many training tokens


@torch.no_grad()
def data_baselines(dataset: Any, vocab_size: int, max_tokens: int = BASELINE_TOKENS) -> Baselines | None:
    """What trivial models reach on the training split: the unigram entropy (letter frequencies alone) and
    the counted bigram's NLL (add-one smoothing, scored on the counts' own data), in nats per token.
    Sparse counts, so a 50K vocabulary costs no V x V table."""
    if vocab_size < 2 or not hasattr(dataset, "iter_batches"):
        return None
    pairs, targets = [], []
    for input_ids, labels in dataset.iter_batches(256, max_tokens):
        prev, nxt = input_ids[:, :-1].reshape(-1), labels[:, 1:].reshape(-1)  # the pairs the loss scores
        keep = (nxt >= 0) & (nxt < vocab_size) & (prev >= 0) & (prev < vocab_size)
        pairs.append(prev[keep] * vocab_size + nxt[keep])
        targets.append(nxt[keep])
    if not pairs or not sum(len(t) for t in targets):
        return None
    pair, target = torch.cat(pairs), torch.cat(targets)
    n = len(target)
    unigram = torch.bincount(target, minlength=vocab_size).double()
    p = unigram[unigram > 0] / n
    entropy = -(p * p.log()).sum().item()
    keys, counts = pair.unique(return_counts=True)
    row_totals = torch.bincount(keys // vocab_size, weights=counts.double(), minlength=vocab_size)
    counts = counts.double()
    log_p = (counts + 1).log() - (row_totals[keys // vocab_size] + vocab_size).log()
    bigram = -(counts * log_p).sum().item() / n
    return Baselines(unigram=compact(entropy), bigram=compact(bigram), tokens=n)


def default_lr(model: nn.Module) -> float | None:
    """The learning rate lmlab's registry trains this model class with (None for other models)."""
    from lmlab.config import TrainConfig
    from lmlab.models import REGISTRY

    for spec in REGISTRY.values():
        if type(model) is spec.model_cls:
            return spec.train_defaults.get("lr", TrainConfig().lr)
    return None


def default_interval(max_steps: int) -> int:
    """About 50-100 samples per run, never more often than needed: every 100 steps for long runs."""
    return min(100, max(1, max_steps // 50))


@torch.no_grad()
def causality_probe(model: nn.Module, vocab_size: int, length: int, seed: int = 0) -> Causality:
    """Change one token at a time and measure how much earlier positions' logits move (eval mode, so
    BatchNorm uses running statistics and dropout is off). A causal model moves them by 0."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(vocab_size, (2, length), generator=g).to(device)  # (B, T)
        base = model(ids).logits.float()  # (B, T, V)
        worst, where = 0.0, -1
        for j in range(1, length):
            changed = ids.clone()
            changed[:, j] = (changed[:, j] + 1 + torch.randint(vocab_size - 1, (1,), generator=g).item()) % vocab_size
            moved = (model(changed).logits.float()[:, :j] - base[:, :j]).abs().max().item()
            if moved > worst:
                worst, where = moved, j
    finally:
        model.train(was_training)
    scale = 1.0 + base.abs().max().item()
    return Causality(checked=True, length=length, max_change=compact(worst), position=where,
                     leak=bool(worst > 1e-4 * scale))
