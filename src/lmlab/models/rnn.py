"""Recurrent language models: embedding -> recurrent layers -> linear head. One config, three cells:
`rnn` (Elman, tanh), `gru` (Cho et al. 2014) and `lstm` (Hochreiter & Schmidhuber 1997), each torch's own
fused layer.

The context is unbounded: everything seen so far is folded into the hidden state. So generation does not
recompute the prefix: with `use_cache=True` the model returns its final hidden state as `past_key_values`
and takes it back on the next call, which then feeds only the newest token (models/generation.py).

Shape legend: B batch, T time, L layers, E embedding width, H hidden width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.base import ModelOutput, causal_lm_loss
from lmlab.models.dropout import Dropout
from lmlab.models.generation import GenerationMixin

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@dataclass(frozen=True, kw_only=True, slots=True)
class RNNConfig:
    vocab_size: int = 0
    block_size: int = 0
    pad_id: int = 0
    n_embd: int = 32
    n_hidden: int = 128
    n_layer: int = 1
    dropout: float = 0.0  # between stacked layers and before the head
    output_scale: float = 0.1  # small output layer at init: the first loss sits near ln V

    def __post_init__(self) -> None:
        for name in ("n_embd", "n_hidden", "n_layer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class RNN(GenerationMixin, nn.Module):
    """The Elman RNN; GRU and LSTM below differ only in the cell."""

    cell = "rnn"
    max_context = None  # unbounded: generation never slides a window
    supports_cache = True  # the hidden state is the cache

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.recurrent = CELLS[self.cell](
            config.n_embd, config.n_hidden, num_layers=config.n_layer, batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(config.n_hidden, config.vocab_size)
        with torch.no_grad():
            self.head.weight.mul_(config.output_scale)
            self.head.bias.zero_()

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        *,
        past_key_values: Any = None,
        use_cache: bool = False,
        **_,
    ) -> ModelOutput:
        x = self.embedding(input_ids)  # (B, T, E)
        # past_key_values: h (L, B, H) for rnn/gru, the pair (h, c) for lstm; None starts from zeros
        out, state = self.recurrent(x, past_key_values)  # (B, T, H)
        logits = self.head(self.dropout(out))  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, past_key_values=state if use_cache else None)


class GRU(RNN):
    cell = "gru"


class LSTM(RNN):
    cell = "lstm"
