"""What the three forecasters share: their common config fields, the standardisation that lets one learning
rate suit a series in any units, and the regression loss.

Shape legend: B batch, W window (inputs per example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class ForecasterConfig:
    window: int = 20  # past values the model sees
    loc: float = 0.0  # the training part's mean and std: inputs are standardised with them and the
    scale: float = 1.0  # output mapped back, so the model reads and writes the series' own units
    loss: Literal["mse", "huber"] = "mse"

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"model.window must be at least 1, got {self.window}")
        if not self.scale > 0:
            raise ConfigError(f"model.scale must be positive, got {self.scale}")
        if self.loss not in ("mse", "huber"):
            raise ConfigError(f"model.loss must be 'mse' or 'huber', got {self.loss!r}")


class Standardise(nn.Module):
    def __init__(self, loc: float, scale: float):
        super().__init__()
        self.loc, self.scale = loc, scale

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.loc) / self.scale

    def inverse(self, y: Tensor) -> Tensor:
        return y * self.scale + self.loc


def regression_loss(prediction: Tensor, labels: Tensor, kind: str, scale: float) -> Tensor:
    """Mean loss in the series' units; Huber's threshold is one standard deviation of the training part."""
    if kind == "huber":
        return F.huber_loss(prediction, labels.to(prediction.dtype), delta=scale)
    return F.mse_loss(prediction, labels.to(prediction.dtype))
