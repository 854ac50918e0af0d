"""What the inspector learns about the model and the data apart from its per-step hooks: the data's own
baselines (the training split's unigram entropy and the counted bigram's NLL), training examples repeated in
the validation split, the model's default learning rate, how often to sample, and probes of the model in eval
mode: causality (changing a later token must never change an earlier position's logits), batch coupling
(changing the other rows of a batch must never change an example's logits) and the targets probe (is the
model's loss the next-token loss of the labels it was given, or does it copy its input or score padding?).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.data.datasets import IGNORE_INDEX
from lmlab.inspector.stats import (
    Baselines,
    BatchCoupling,
    Causality,
    DataOverlap,
    Invariants,
    TargetsProbe,
    compact,
)

BASELINE_TOKENS = 1_000_000  # the data baselines read at most this many training tokens
PROBE_ROWS = 16  # rows per forward pass of the causality probe (16 x 16 tokens x V logits)


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
        B = ids.size(0)
        variants = ids.repeat(length, 1, 1)  # (T, B, T): variant j changes token j of every row
        for j in range(length):
            variants[j, :, j] = (ids[:, j] + 1 + torch.randint(vocab_size - 1, (1,), generator=g).item()) % vocab_size
        # The variants go through in a few batches, not one forward each (eval mode: rows are independent, and a
        # model whose rows are not is named by the batch-coupling probe)
        rows = torch.cat([ids, variants.reshape(length * B, length)])  # (B + T*B, T)
        logits = torch.cat([model(chunk).logits.float() for chunk in rows.split(PROBE_ROWS)])  # (B + T*B, T, V)
        base, changed = logits[:B], logits[B:].view(length, B, length, -1)  # (B, T, V), (T, B, T, V)
        worst, where, own = 0.0, -1, math.inf
        for j in range(length):
            own = min(own, (changed[j, :, j] - base[:, j]).abs().max().item())
            moved = (changed[j, :, :j] - base[:, :j]).abs().max().item() if j else 0.0
            if moved > worst:
                worst, where = moved, j
    finally:
        model.train(was_training)
    scale = 1.0 + base.abs().max().item()
    return Causality(checked=True, length=length, max_change=compact(worst), position=where,
                     leak=bool(worst > 1e-4 * scale), own_change=compact(own))


@torch.no_grad()
def invariants_probe(model: nn.Module, vocab_size: int, length: int, seed: int = 0) -> Invariants:
    """In eval mode: the same batch twice (dropout left on changes it), the first half of the sequence alone
    against the same positions inside the whole (a causal model computes position t from tokens <= t only,
    whatever follows and however long the input is: generation relies on it), and whether the outputs are
    already probabilities (every row in [0, 1], summing to 1) rather than logits."""
    was_training = model.training
    model.eval()
    device = _probe_device(model)
    try:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(vocab_size, (2, length), generator=g).to(device)  # (B, T)
        base = model(ids).logits.float()  # (B, T, V)
        again = model(ids).logits.float()
        half = max(1, length // 2)
        prefix = model(ids[:, :half]).logits.float()  # (B, T/2, V)
    finally:
        model.train(was_training)
    sums = base.sum(-1)  # (B, T)
    probabilities = bool(base.min() >= 0 and base.max() <= 1 and (sums - 1).abs().max() < 1e-3)
    return Invariants(checked=True, scale=compact(1.0 + base.abs().max().item()),
                      repeat_change=compact((again - base).abs().max().item()),
                      prefix_change=compact((prefix - base[:, :half]).abs().max().item()),
                      probabilities=probabilities)


def _probe_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def batch_coupling_probe(model: nn.Module, vocab_size: int, length: int, rows: int = 4, seed: int = 0) -> BatchCoupling:
    """In eval mode an example's logits must not depend on the rest of its batch: change every other row
    and measure how far the first row's logits move (BatchNorm with batch statistics at evaluation does)."""
    was_training = model.training
    model.eval()
    device = _probe_device(model)
    try:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(vocab_size, (rows, length), generator=g).to(device)  # (B, T)
        base = model(ids).logits.float()[0]  # (T, V)
        others = ids.clone()
        others[1:] = torch.randint(vocab_size, (rows - 1, length), generator=g).to(device)
        moved = (model(others).logits.float()[0] - base).abs().max().item()
    finally:
        model.train(was_training)
    scale = 1.0 + base.abs().max().item()
    return BatchCoupling(checked=True, max_change=compact(moved), coupled=bool(moved > 1e-4 * scale))


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> float | None:
    keep = targets != IGNORE_INDEX
    if not keep.any():
        return None
    return compact(F.cross_entropy(logits[keep].float(), targets[keep]).item())


def _padding_token(model: nn.Module, input_ids: torch.Tensor, ignored_inputs: torch.Tensor) -> int | None:
    """The model's declared pad id; else the token at the positions the labels ignore; else a token that
    ends most rows in a run of two or more (right padding)."""
    declared = getattr(getattr(model, "config", None), "pad_id", None)
    if isinstance(declared, int) and declared >= 0:
        return declared
    if ignored_inputs.numel():
        return int(ignored_inputs.mode().values)
    last = input_ids[:, -1]
    token = int(last.mode().values)
    padded = (input_ids[:, -1] == token) & (input_ids[:, -2] == token)
    return token if padded.float().mean().item() >= 0.5 else None


@torch.no_grad()
def targets_probe(model: nn.Module, dataset: Any, vocab_size: int, rows: int = 32) -> TargetsProbe:
    """One training batch through the model in eval mode (dropout off), with the labels the trainer passes.
    The loss it returns is compared with the next-token loss of its logits, and with the two mistakes a
    home-made loss makes: labels not shifted (the model learns to copy its input) and padding scored (it
    earns loss predicting padding after padding)."""
    if not hasattr(dataset, "iter_batches"):
        return TargetsProbe()
    input_ids, labels = next(iter(dataset.iter_batches(rows, None)))
    if input_ids.dim() != 2 or input_ids.size(1) < 2:
        return TargetsProbe()
    was_training = model.training
    model.eval()
    device = _probe_device(model)
    try:
        out = model(input_ids.to(device), labels=labels.to(device))
    finally:
        model.train(was_training)
    logits = out.logits.float().cpu()  # (B, T, V)
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape or logits.size(-1) < vocab_size:
        return TargetsProbe()
    model_loss = getattr(out, "loss", None)
    scored = labels[:, 1:] != IGNORE_INDEX  # (B, T-1): the targets the labels score
    ignored = ~scored
    pad_id = _padding_token(model, input_ids, input_ids[:, 1:][ignored])
    label_loss = _cross_entropy(logits[:, :-1], labels[:, 1:])
    unshifted = _cross_entropy(logits, labels)
    unmasked = _cross_entropy(logits[:, :-1], input_ids[:, 1:])
    real = torch.ones_like(input_ids, dtype=torch.bool)
    if pad_id is not None:  # padding positions after the last real token predict nothing worth counting
        real[:, 1:] = scored | (input_ids[:, 1:] != pad_id)
    predicted = logits.argmax(-1)  # (B, T)
    copy_share = (predicted == input_ids)[real].float().mean().item()
    repeat = (labels[:, 1:] == input_ids[:, :-1])[scored]
    if pad_id is not None:
        pad_after_pad = (input_ids[:, 1:] == pad_id) & (input_ids[:, :-1] == pad_id)  # (B, T-1)
        padded_share = pad_after_pad.float().mean().item()
        scored_padding = ((labels[:, 1:] == pad_id) & (input_ids[:, :-1] == pad_id))[scored].float().mean().item()
    else:
        padded_share = scored_padding = 0.0
    return TargetsProbe(
        checked=True, positions=int(scored.sum()),
        model_loss=compact(float(model_loss)) if model_loss is not None else None,
        label_loss=label_loss, unshifted_loss=unshifted, unmasked_loss=unmasked, copy_share=compact(copy_share),
        repeat_share=compact(repeat.float().mean().item()) if repeat.numel() else 0.0,
        padded_share=compact(padded_share), scored_padding=compact(scored_padding), pad_id=pad_id)


OVERLAP_TOKENS = 1_000_000  # the overlap check reads at most this many tokens of each split
OVERLAP_WINDOW = 32  # tokens: a shared window this long is a copied passage, not a common phrase


def _position_weights(n: int) -> torch.Tensor:
    """A fixed pseudo-random weight per position (the same for every batch, whatever its length)."""
    return (torch.arange(1, n + 1) * 0x5851F42D4C957F2D) ^ 0x14057B7EF767814F


def _hashes(dataset: Any, window: int, max_tokens: int):
    """Per example: a hash of its real tokens, its length and the example itself (padding cut); and a hash
    of every `window`-token run inside one example. Vectorised per batch: int64 products wrap, as a hash's do."""
    rows, lengths, examples, runs = [], [], [], []
    for input_ids, labels in dataset.iter_batches(256, max_tokens):
        keep = labels != IGNORE_INDEX  # (B, T)
        keep[:, 0] = True  # the first token is context for the rest
        T = input_ids.size(1)
        weights = _position_weights(max(T, window))
        ids = (input_ids + 1) * keep  # (B, T): padding and unscored tails count as 0
        rows.append((ids * weights[:T]).sum(1))
        lengths.append(keep.sum(1))
        examples.append(ids)
        if window <= T:
            windows = ids.unfold(1, window, 1)  # (B, T - window + 1, window)
            whole = keep.unfold(1, window, 1).all(-1)  # (B, T - window + 1): inside the example
            runs.append((windows * weights[:window]).sum(-1)[whole])
    return rows, lengths, examples, (torch.cat(runs) if runs else torch.zeros(0, dtype=torch.long))


@torch.no_grad()
def data_overlap(train: Any, other: Any, split: str = "val", window: int = OVERLAP_WINDOW,
                 max_tokens: int = OVERLAP_TOKENS) -> DataOverlap:
    """Validation examples that are also training examples (exact rows), and the share of the validation
    split's `window`-token runs found anywhere in the training split (copied passages)."""
    if other is None or not hasattr(train, "iter_batches") or not hasattr(other, "iter_batches"):
        return DataOverlap()
    train_rows, _, _, train_runs = _hashes(train, window, max_tokens)
    val_rows, val_lengths, val_examples, val_runs = _hashes(other, window, max_tokens)
    if not val_rows:
        return DataOverlap()
    row_hash, length = torch.cat(val_rows), torch.cat(val_lengths)
    found = torch.isin(row_hash, torch.cat(train_rows)) & (length >= 3)  # a 1-2 token row repeats by chance
    exact = int(found.sum())
    examples = []
    for ids in val_examples:
        for row in ids[found[: len(ids)]][:3 - len(examples)]:
            examples.append([int(t) - 1 for t in row if t > 0])
        found = found[len(ids):]
    shared = int(torch.isin(val_runs, train_runs).sum()) if len(val_runs) and len(train_runs) else 0
    return DataOverlap(checked=True, split=split, rows=len(row_hash), exact=exact, examples=examples,
                       window=window, windows=len(val_runs), shared=shared)
