"""Bengio et al. 2003: embed the last `context` tokens with a table C, concatenate, tanh hidden layer(s),
then a linear layer to the vocabulary. Optional BatchNorm or LayerNorm before each tanh.

Init follows makemore part 3: Kaiming-scaled hidden weights (gain 5/3 for tanh) so the tanh is neither
saturated nor idle, and a small output layer so the initial loss sits at ln V instead of far above it.
Shape legend: B batch, T time, c context tokens, E embedding width, H hidden width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.base import ModelOutput, causal_lm_loss, left_pad_windows
from lmlab.models.dropout import Dropout
from lmlab.models.generation import GenerationMixin


@dataclass(frozen=True, kw_only=True, slots=True)
class MLPConfig:
    vocab_size: int = 0
    block_size: int = 0
    pad_id: int = 0
    context: int = 3
    n_embd: int = 10
    n_hidden: int = 200
    n_layer: int = 1
    norm: Literal["none", "batch", "layer"] = "none"
    dropout: float = 0.0
    output_scale: float = 0.1  # the output layer's init scale: small, so initial logits are nearly uniform

    def __post_init__(self) -> None:
        for name in ("context", "n_embd", "n_hidden", "n_layer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class _Norm(nn.Module):
    """BatchNorm1d over the feature axis of (B, T, H), or LayerNorm; statistics over B and T for BatchNorm."""

    def __init__(self, kind: str, width: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(width) if kind == "batch" else nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.norm, nn.BatchNorm1d):
            return self.norm(x.reshape(-1, x.size(-1))).view_as(x)  # (B*T, H) -> (B, T, H)
        return self.norm(x)


class MLP(GenerationMixin, nn.Module):
    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.max_context = config.context
        self.embedding = nn.Embedding(config.vocab_size, config.n_embd)
        layers: list[nn.Module] = []
        width = config.context * config.n_embd
        for _ in range(config.n_layer):
            linear = nn.Linear(width, config.n_hidden, bias=config.norm == "none")  # a norm's shift is the bias
            nn.init.kaiming_normal_(linear.weight, nonlinearity="tanh")  # std = (5/3) / sqrt(fan_in)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
            layers.append(linear)
            if config.norm != "none":
                layers.append(_Norm(config.norm, config.n_hidden))
            layers.append(nn.Tanh())
            if config.dropout:
                layers.append(Dropout(config.dropout))
            width = config.n_hidden
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.vocab_size)
        with torch.no_grad():
            self.head.weight.mul_(config.output_scale)
            self.head.bias.zero_()

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, **_) -> ModelOutput:
        windows = left_pad_windows(input_ids, self.config.context, self.config.pad_id)  # (B, T, c)
        x = self.embedding(windows).flatten(2)  # (B, T, c*E)
        logits = self.head(self.hidden(x))  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss)
