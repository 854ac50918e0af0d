"""WaveNet-style language model (van den Oord et al. 2016; makemore part 5): a stack of dilated causal
Conv1D layers over the embedded tokens, so the context is fused two at a time, hierarchically, instead of
being crushed into one hidden layer at once as in the MLP.

Makemore part 5 applies the hierarchy to one window per example. Here the same layers run as convolutions
over the whole sequence, so every position predicts its next token in one pass: layer i looks `dilation_i`
positions back, with dilations 1, g, g^2, ... (g = `dilation_growth`). The receptive field, the tokens one
prediction sees, is 1 + (kernel_size - 1) * sum(dilations); with kernel 2 and 3 layers that is 8, part 5's
context. The sequence is padded on the left with the boundary token (makemore's "........" start), never
with zeros, so a position's output equals the model applied to its window alone and generation can slide a
window of exactly the receptive field.

Shape legend: B batch, T time, R receptive field, E embedding width, H hidden width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.base import ModelOutput, causal_lm_loss
from lmlab.models.dropout import Dropout
from lmlab.models.generation import GenerationMixin

MAX_RECEPTIVE_FIELD = 4096


class _ChannelNorm(nn.Module):
    """BatchNorm1d or LayerNorm over the channel axis of a (B, H, T) activation."""

    def __init__(self, kind: str, width: int):
        super().__init__()
        self.kind = kind
        self.norm = nn.BatchNorm1d(width) if kind == "batch" else nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "batch":
            return self.norm(x)  # statistics over B and T, one pair per channel
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # (B, T, H) for LayerNorm, back to (B, H, T)


class CausalConvBlock(nn.Module):
    """conv (no padding: the input arrives already padded) -> norm -> tanh, plus a residual when the
    widths match. The output is (kernel_size - 1) * dilation positions shorter than the input."""

    def __init__(self, width_in: int, width_out: int, kernel_size: int, dilation: int, norm: str,
                 residual: bool, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(width_in, width_out, kernel_size, dilation=dilation, bias=norm == "none")
        # Kaiming with the tanh gain (makemore part 3): fan_in = width_in * kernel_size
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="tanh")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        self.norm = _ChannelNorm(norm, width_out) if norm != "none" else nn.Identity()
        self.act = nn.Tanh()  # a module, so the inspector's hooks see it
        self.dropout = Dropout(dropout)
        self.residual = residual and width_in == width_out
        self.shrink = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        y = self.dropout(self.act(self.norm(self.conv(x))))  # (B, H, T_in - shrink)
        if self.residual:
            y = y + x[:, :, self.shrink :]  # the input positions the output positions line up with
        return y


@dataclass(frozen=True, kw_only=True, slots=True)
class WaveNetConfig:
    vocab_size: int = 0
    block_size: int = 0
    pad_id: int = 0
    n_embd: int = 24
    n_hidden: int = 128
    n_layer: int = 3
    kernel_size: int = 2
    dilation_growth: int = 2  # layer i has dilation dilation_growth ** i
    norm: Literal["none", "batch", "layer"] = "batch"
    residual: bool = True
    dropout: float = 0.0
    output_scale: float = 0.1  # small output layer at init: the first loss sits near ln V

    def __post_init__(self) -> None:
        for name in ("n_embd", "n_hidden", "n_layer", "dilation_growth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.kernel_size < 2:
            raise ConfigError(f"model.kernel_size must be at least 2, got {self.kernel_size}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.receptive_field > MAX_RECEPTIVE_FIELD:
            raise ConfigError(
                f"model.n_layer={self.n_layer}, kernel_size={self.kernel_size}, dilation_growth="
                f"{self.dilation_growth} give a receptive field of {self.receptive_field:,} tokens "
                f"(limit {MAX_RECEPTIVE_FIELD}); use fewer layers"
            )

    @property
    def dilations(self) -> list[int]:
        return [self.dilation_growth**i for i in range(self.n_layer)]

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel_size - 1) * sum(self.dilations)


class WaveNet(GenerationMixin, nn.Module):
    def __init__(self, config: WaveNetConfig):
        super().__init__()
        self.config = config
        self.max_context = config.receptive_field  # generation slides a window of exactly what it can see
        self.embedding = nn.Embedding(config.vocab_size, config.n_embd)
        widths = [config.n_embd] + [config.n_hidden] * config.n_layer
        self.blocks = nn.ModuleList(
            CausalConvBlock(widths[i], widths[i + 1], config.kernel_size, dilation, config.norm,
                            config.residual, config.dropout)
            for i, dilation in enumerate(config.dilations)
        )
        self.head = nn.Linear(config.n_hidden, config.vocab_size)
        with torch.no_grad():
            self.head.weight.mul_(config.output_scale)
            self.head.bias.zero_()

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, **_) -> ModelOutput:
        padded = F.pad(input_ids, (self.config.receptive_field - 1, 0), value=self.config.pad_id)  # (B, T+R-1)
        x = self.embedding(padded).transpose(1, 2)  # (B, E, T+R-1): Conv1d wants channels first
        for block in self.blocks:
            x = block(x)  # each block eats (k-1)*dilation positions of the left padding
        logits = self.head(x.transpose(1, 2))  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss)
