"""Mean negative log-likelihood of a model over a dataset, in eval mode with no gradients: exact over the
whole dataset (`mean_nll`), or estimated from a fixed random sample of its examples with a standard error
(`estimate_nll`), which is what periodic evaluations during training use; and the UTF-8 bytes of text the
scored tokens stand for (`scored_bytes`), so runs with different tokenizers of one text compare in bits per
byte. `score_split` is the final evaluation of a split: exact up to a cap (train.final_eval_max_tokens),
a fixed sample with its standard error beyond, with the bytes of the tokens it scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmlab.data.datasets import IGNORE_INDEX, TokenDataset, next_token_targets
from lmlab.models.base import causal_lm_loss
from lmlab.tokenizers import BPETokenizer, CharTokenizer, HFTokenizer, Tokenizer

# Bytes of logits one evaluation batch may hold (with the softmax and loss, three copies of B x T x V floats):
# a word or BPE vocabulary makes a batch of full-context windows far larger than the model.
EVAL_LOGITS_BUDGET = 1 << 28
LOGIT_COPIES = 3


def batch_rows(model: torch.nn.Module, dataset, batch_size: int) -> int:
    """`batch_size`, or fewer rows where their logits would pass EVAL_LOGITS_BUDGET."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", 0) or 0
    per_row = max(getattr(dataset, "block_size", 0) or 0, 1) * vocab * 4 * LOGIT_COPIES
    return max(1, min(batch_size, EVAL_LOGITS_BUDGET // per_row)) if per_row else batch_size


@torch.no_grad()
def mean_nll(
    model: torch.nn.Module,
    dataset: TokenDataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """(mean NLL in nats, number of predicted tokens). Sums per-token losses, so batches of unequal
    length weigh each token once."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for input_ids, labels in dataset.iter_batches(batch_rows(model, dataset, batch_size), max_tokens):
        input_ids, labels = input_ids.to(device), labels.to(device)
        total += float(causal_lm_loss(model(input_ids).logits, labels, reduction="sum"))
        count += int((next_token_targets(labels) != IGNORE_INDEX).sum())
    model.train(was_training)
    return (total / count if count else float("nan")), count


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    dataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """(mean of the model's own loss, number of targets) for datasets that are not token datasets: they
    yield (inputs, targets) and define `count_targets(targets)`. Each batch's mean loss is weighted by its
    number of targets, so a short last batch counts once per target, as a per-example mean would."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for inputs, targets in dataset.iter_batches(batch_size, max_tokens):
        n = dataset.count_targets(targets)
        total += float(model(inputs.to(device), labels=targets.to(device)).loss) * n
        count += n
    model.train(was_training)
    return (total / count if count else float("nan")), count


# The sample a periodic evaluation scores: the same examples at every evaluation (and in a resumed run), so
# the curve shows the model changing, not the sample.
ESTIMATE_SEED = 0


# The float32 logits and log-softmax of one evaluation batch are made this many bytes at a time (a few rows),
# whatever the batch holds: evaluating a split then allocates the model's logits and temporaries of one small
# size, reused, instead of copies of the whole batch's logits, whose sizes just under glibc's mmap threshold
# (32 MiB) fragmented the heap until the kernel killed the process (issue 38).
LOSS_CHUNK_BYTES = 1 << 22


@dataclass(frozen=True, slots=True)
class SplitScore:
    """A split's mean NLL (nats per token) over `tokens` predictions; `stderr`: the standard error of that
    mean as a sample's (for an exact score, what a sample of its size would have had); `exact`: every
    prediction of the split was scored; `num_bytes`: the UTF-8 bytes of the scored tokens, where byte
    lengths were given."""

    nll: float
    tokens: int
    stderr: float
    exact: bool
    num_bytes: int | None = None


def evaluation_batches(dataset: TokenDataset, batch_size: int, max_tokens: int):
    """Every example in order when the dataset predicts at most `max_tokens` tokens, else examples drawn
    (with replacement) by a generator seeded ESTIMATE_SEED until `max_tokens` are predicted: a fixed,
    unbiased sample, the same at every call."""
    if dataset.num_predictions <= max_tokens:
        return dataset.iter_batches(batch_size)
    return _sampled_batches(dataset, batch_size, max_tokens, torch.Generator().manual_seed(ESTIMATE_SEED))


def row_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) float64: each row's summed NLL of `targets` (B, T) under `logits` (B, T, V), IGNORE_INDEX left
    out, computed a few rows at a time (LOSS_CHUNK_BYTES) so no float32 copy of the whole batch is made."""
    _, width, vocab = logits.shape
    rows = max(1, LOSS_CHUNK_BYTES // max(width * vocab * 4, 1))
    sums = []
    for first in range(0, len(logits), rows):
        part = logits[first : first + rows].float()  # (b, T, V)
        losses = F.cross_entropy(part.transpose(1, 2), targets[first : first + rows], ignore_index=IGNORE_INDEX,
                                 reduction="none")  # (b, T)
        sums.append(losses.sum(1).double())
    return torch.cat(sums)


@torch.no_grad()
def score_split(
    model: torch.nn.Module,
    dataset: TokenDataset,
    *,
    max_tokens: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    byte_lengths: torch.Tensor | None = None,
) -> SplitScore:
    """The split's mean NLL: exact when it predicts at most `max_tokens` tokens, else over a fixed sample of
    about `max_tokens` (evaluation_batches) with its standard error.

    The standard error treats the examples (lines, or windows of a stream) as the sampled units of a ratio
    estimator (sum of losses over sum of tokens): how far another sample of this size could land."""
    was_training = model.training
    model.eval()
    exact = dataset.num_predictions <= max_tokens
    sums, counts, num_bytes = [], [], 0
    for input_ids, labels in evaluation_batches(dataset, batch_rows(model, dataset, batch_size), max_tokens):
        targets = next_token_targets(labels)
        if byte_lengths is not None:
            num_bytes += batch_bytes([(input_ids, labels)], byte_lengths)
        logits = model(input_ids.to(device)).logits[:, :-1]  # (B, T-1, V)
        sums.append(row_losses(logits, targets.to(device)).cpu())
        counts.append((targets != IGNORE_INDEX).sum(1).double())
        del logits
    model.train(was_training)
    nll, n = (torch.cat(sums), torch.cat(counts)) if sums else (torch.zeros(0), torch.zeros(0))
    total = float(n.sum())
    kept = num_bytes if byte_lengths is not None else None
    if not total:
        return SplitScore(float("nan"), 0, float("nan"), exact, kept)
    mean = float(nll.sum()) / total
    units = len(n)
    residual = nll - mean * n
    stderr = math.sqrt(float(residual.pow(2).sum()) * units / max(units - 1, 1)) / total
    return SplitScore(mean, int(total), stderr, exact, kept)


def estimate_nll(
    model: torch.nn.Module,
    dataset: TokenDataset,
    *,
    max_tokens: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[float, int, float]:
    """(mean NLL in nats, predicted tokens, standard error of the mean) of score_split: what periodic
    evaluations report."""
    score = score_split(model, dataset, max_tokens=max_tokens, batch_size=batch_size, device=device)
    return score.nll, score.tokens, score.stderr


def _sampled_batches(dataset: TokenDataset, batch_size: int, max_tokens: int, generator: torch.Generator):
    """Random batches until `max_tokens` targets; the last one cut after the example that reaches it."""
    seen = 0
    while seen < max_tokens:
        input_ids, labels = dataset.sample_batch(batch_size, generator)
        before = (labels[:, 1:] != IGNORE_INDEX).sum(1).cumsum(0) - (labels[:, 1:] != IGNORE_INDEX).sum(1)
        keep = int((before < max_tokens - seen).sum())  # rows that start before the cap
        input_ids, labels = input_ids[:keep], labels[:keep]
        yield input_ids, labels
        seen += int((labels[:, 1:] != IGNORE_INDEX).sum())


def token_bytes(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) the UTF-8 bytes of text each token id stands for. The boundary token counts one byte: it is the
    line break (lines mode) or the break between documents that the text file holds in its place, so a char
    run on ASCII text scores exactly one byte per predicted token. Byte-level BPE tokens are counted in
    bytes (each symbol of its alphabet is one byte, so a token that ends inside a character counts its own
    share); other tokenizers' tokens by the text they decode to (a word tokenizer's unknown token counts the
    five bytes of `<unk>`, so its bits per byte are approximate)."""
    lengths = torch.zeros(tokenizer.vocab_size, dtype=torch.long)
    if isinstance(tokenizer, CharTokenizer):
        for i, piece in enumerate(tokenizer.vocab):
            lengths[i] = len(piece.encode("utf-8"))
    else:
        backend = tokenizer.hf if isinstance(tokenizer, BPETokenizer) else getattr(tokenizer, "backend", None)
        byte_symbols = _byte_level_alphabet() if isinstance(tokenizer, (BPETokenizer, HFTokenizer)) else set()
        for i in range(tokenizer.vocab_size):
            piece = backend.id_to_token(i) if backend is not None else None
            if piece is not None and byte_symbols and all(c in byte_symbols for c in piece):
                lengths[i] = len(piece)
            else:
                lengths[i] = len(tokenizer.decode([i]).encode("utf-8"))
    lengths[tokenizer.boundary_id] = 1
    return lengths


def _byte_level_alphabet() -> set[str]:
    from tokenizers import pre_tokenizers

    return set(pre_tokenizers.ByteLevel.alphabet())


def batch_bytes(batches, byte_lengths: torch.Tensor) -> int:
    """UTF-8 bytes of the tokens the (input_ids, labels) `batches` predict."""
    total = 0
    for _, labels in batches:
        targets = next_token_targets(labels)
        total += int(byte_lengths[targets[targets != IGNORE_INDEX]].sum())
    return total


def scored_bytes(dataset: TokenDataset, byte_lengths: torch.Tensor, *, batch_size: int = 256,
                 max_tokens: int | None = None) -> int:
    """UTF-8 bytes of the tokens `mean_nll` predicts with the same `batch_size` and `max_tokens`."""
    return batch_bytes(dataset.iter_batches(batch_size, max_tokens), byte_lengths)


def bits_per_byte(nll: float, tokens: int, num_bytes: int) -> float | None:
    """Mean NLL per token (nats) over `tokens` predictions that cover `num_bytes` bytes, in bits per byte."""
    return nll * tokens / (math.log(2) * num_bytes) if num_bytes and math.isfinite(nll) else None
