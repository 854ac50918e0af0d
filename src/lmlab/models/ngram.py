"""Counted n-gram: P(next | previous n-1 tokens) = (count + alpha) / (context count + alpha * V).

Fitted by one counting pass (`fit_counts`), no gradient steps. The counts are the model's only state, a
buffer saved with the weights; probabilities are normalised on the fly so alpha can change after fitting.
Shape legend: B batch, T time, V vocabulary, C = V ** (n - 1) contexts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.base import IGNORE_INDEX, ModelOutput, causal_lm_loss, left_pad_windows
from lmlab.models.generation import GenerationMixin

MAX_TABLE_ENTRIES = 50_000_000


@dataclass(frozen=True, kw_only=True, slots=True)
class NGramConfig:
    vocab_size: int = 0  # set from the tokenizer
    block_size: int = 0  # set from the data (unused: the context is n - 1 tokens)
    pad_id: int = 0
    n: int = 2
    alpha: float = 1.0  # add-alpha smoothing (1: Laplace); 0 is the maximum-likelihood estimate

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"model.n must be at least 1, got {self.n}")
        if self.alpha < 0:
            raise ConfigError(f"model.alpha must be >= 0, got {self.alpha}")
        # In logarithms: V ** n itself can have millions of digits
        if self.vocab_size > 1 and self.n * math.log10(self.vocab_size) > math.log10(MAX_TABLE_ENTRIES):
            raise ConfigError(
                f"model.n={self.n:,} with {self.vocab_size} tokens needs a table of about "
                f"10^{self.n * math.log10(self.vocab_size):,.0f} counts (limit {MAX_TABLE_ENTRIES:,}); lower n"
            )


class NGram(GenerationMixin, nn.Module):
    counted = True  # the trainer fits it with fit_counts instead of an optimizer

    def __init__(self, config: NGramConfig):
        super().__init__()
        self.config = config
        self.context = config.n - 1
        self.max_context = max(self.context, 1)
        self.register_buffer("counts", torch.zeros(config.vocab_size**self.context, config.vocab_size))
        self.register_buffer("powers", config.vocab_size ** torch.arange(self.context - 1, -1, -1))

    def _context_index(self, input_ids: Tensor) -> Tensor:
        """(B, T) -> (B, T) row index into `counts` of the n-1 tokens ending at each position."""
        if self.context == 0:
            return torch.zeros_like(input_ids)
        windows = left_pad_windows(input_ids, self.context, self.config.pad_id)  # (B, T, n-1)
        return (windows * self.powers).sum(-1)

    @torch.no_grad()
    def fit_counts(self, input_ids: Tensor, labels: Tensor) -> None:
        """Add the (context, next token) pairs of one batch to the table: one flat index per pair, counted
        by one bincount (or, when the table is much larger than the batch, one scatter-add)."""
        rows = self._context_index(input_ids[:, :-1])  # (B, T-1): the context ends where the target's does
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        flat = (rows * self.config.vocab_size + targets)[keep]
        table = self.counts.view(-1)
        if table.numel() <= 4 * flat.numel():
            table += torch.bincount(flat, minlength=table.numel()).to(table.dtype)
        else:
            table.index_add_(0, flat, torch.ones_like(flat, dtype=table.dtype))

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, **_) -> ModelOutput:
        counts = self.counts[self._context_index(input_ids)] + self.config.alpha  # (B, T, V)
        totals = counts.sum(-1, keepdim=True)
        # A context never seen (with alpha = 0) has no estimate: fall back to uniform rather than 0/0.
        probs = torch.where(totals > 0, counts / totals.clamp_min(1e-30), 1.0 / self.config.vocab_size)
        logits = probs.log()  # log-probabilities are valid logits; unseen pairs are -inf
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss)
