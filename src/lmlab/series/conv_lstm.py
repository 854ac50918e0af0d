"""Conv1D + LSTM forecaster, after the course: a causal 1-D convolution picks out local shapes, stacked LSTMs
read them in time order, and a dense head maps the last hidden state to the next value. The course's final
Lambda(x * 400) rescaled outputs to the series' range; standardisation does that job here.

Shape legend: B batch, W window, C conv filters, H LSTM hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.base import ModelOutput
from lmlab.series.scaling import ForecasterConfig, Standardise, regression_loss


@dataclass(frozen=True, kw_only=True, slots=True)
class ConvLSTMForecasterConfig(ForecasterConfig):
    n_filters: int = 32
    kernel_size: int = 5
    n_hidden: int = 32
    n_layer: int = 2  # stacked LSTM layers

    def __post_init__(self) -> None:
        ForecasterConfig.__post_init__(self)
        for name in ("n_filters", "kernel_size", "n_hidden", "n_layer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")


class ConvLSTMForecaster(nn.Module):
    def __init__(self, config: ConvLSTMForecasterConfig):
        super().__init__()
        self.config = config
        self.standardise = Standardise(config.loc, config.scale)
        self.conv = nn.Conv1d(1, config.n_filters, config.kernel_size)
        self.lstm = nn.LSTM(config.n_filters, config.n_hidden, num_layers=config.n_layer, batch_first=True)
        self.head = nn.Linear(config.n_hidden, 1)

    def forward(self, inputs: Tensor, labels: Tensor | None = None) -> ModelOutput:
        x = self.standardise(inputs).unsqueeze(1)  # (B, 1, W)
        # Causal padding: left only, so the feature at step t sees no value after t.
        x = F.pad(x, (self.config.kernel_size - 1, 0))  # (B, 1, W + k - 1)
        x = F.relu(self.conv(x)).transpose(1, 2)  # (B, W, C)
        h, _ = self.lstm(x)  # (B, W, H)
        prediction = self.standardise.inverse(self.head(h[:, -1]).squeeze(-1))  # (B,)
        loss = None if labels is None else regression_loss(prediction, labels, self.config.loss,
                                                            self.config.scale)
        return ModelOutput(logits=prediction, loss=loss)
