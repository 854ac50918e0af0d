"""The MLP forecaster: the course's Dense(10, relu) -> Dense(10, relu) -> Dense(1) on the window.

Shape legend: B batch, W window, H hidden units.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.base import ModelOutput
from lmlab.series.scaling import ForecasterConfig, Standardise, regression_loss


@dataclass(frozen=True, kw_only=True, slots=True)
class MLPForecasterConfig(ForecasterConfig):
    n_hidden: int = 10
    n_layer: int = 2  # hidden layers

    def __post_init__(self) -> None:
        ForecasterConfig.__post_init__(self)
        for name in ("n_hidden", "n_layer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")


class MLPForecaster(nn.Module):
    def __init__(self, config: MLPForecasterConfig):
        super().__init__()
        self.config = config
        self.standardise = Standardise(config.loc, config.scale)
        layers: list[nn.Module] = []
        width = config.window
        for _ in range(config.n_layer):
            layers += [nn.Linear(width, config.n_hidden), nn.ReLU()]
            width = config.n_hidden
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, inputs: Tensor, labels: Tensor | None = None) -> ModelOutput:
        h = self.hidden(self.standardise(inputs))  # (B, H)
        prediction = self.standardise.inverse(self.head(h).squeeze(-1))  # (B,)
        loss = None if labels is None else regression_loss(prediction, labels, self.config.loss,
                                                            self.config.scale)
        return ModelOutput(logits=prediction, loss=loss)
