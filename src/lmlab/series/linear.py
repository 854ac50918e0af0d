"""The linear forecaster: one weight per past value plus a bias, Keras' Dense(1) on the window. The notes:
"a simple linear regression can do as well as the baseline".

Shape legend: B batch, W window.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from lmlab.models.base import ModelOutput
from lmlab.series.scaling import ForecasterConfig, Standardise, regression_loss


@dataclass(frozen=True, kw_only=True, slots=True)
class LinearForecasterConfig(ForecasterConfig):
    pass


class LinearForecaster(nn.Module):
    def __init__(self, config: LinearForecasterConfig):
        super().__init__()
        self.config = config
        self.standardise = Standardise(config.loc, config.scale)
        self.dense = nn.Linear(config.window, 1)

    def forward(self, inputs: Tensor, labels: Tensor | None = None) -> ModelOutput:
        x = self.standardise(inputs)  # (B, W)
        prediction = self.standardise.inverse(self.dense(x).squeeze(-1))  # (B,)
        loss = None if labels is None else regression_loss(prediction, labels, self.config.loss,
                                                            self.config.scale)
        return ModelOutput(logits=prediction, loss=loss)
