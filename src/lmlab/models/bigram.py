"""Neural bigram: logits = one_hot(x) @ W with W a V x V table, trained by gradient descent.

Indexing W[x] is exactly one_hot(x) @ W without building the one-hot matrix. With softmax and NLL it learns
the same conditional distribution the counted bigram tallies (the tests check it converges there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmlab.models.base import ModelOutput, causal_lm_loss
from lmlab.models.generation import GenerationMixin


@dataclass(frozen=True, kw_only=True, slots=True)
class BigramConfig:
    vocab_size: int = 0
    block_size: int = 0
    pad_id: int = 0


class Bigram(GenerationMixin, nn.Module):
    max_context = 1

    def __init__(self, config: BigramConfig):
        super().__init__()
        self.config = config
        # Zero init: every row starts as the uniform distribution, so the initial loss is exactly ln V.
        self.weight = nn.Parameter(torch.zeros(config.vocab_size, config.vocab_size))

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, **_) -> ModelOutput:
        logits = self.weight[input_ids]  # (B, T, V) == one_hot(input_ids) @ W
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss)
