"""A small conv classifier: (Conv2D 3x3 -> ReLU -> MaxPool 2x2) repeated, each block doubling the filters
and halving the picture, then Flatten -> Dropout -> Linear -> ReLU -> Dropout -> Linear to class scores. The
Keras course's MNIST/horses-or-humans model, in PyTorch, with dropout against small folders' overfitting.

Shape legend: B batch, C channels, H height, W width, F filters, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.base import ModelOutput


@dataclass(frozen=True, kw_only=True, slots=True)
class ConvNetConfig:
    in_channels: int = 1
    image_size: int = 8
    n_classes: int = 10
    n_conv: int = 2  # conv blocks; each halves height and width
    n_filters: int = 16  # filters of the first block, doubled by each next one
    kernel_size: int = 3
    n_hidden: int = 64
    dropout: float = 0.0  # on the flattened maps and on the hidden layer, in training only

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for name in ("in_channels", "image_size", "n_conv", "n_filters", "n_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.n_classes < 2:
            raise ConfigError(f"model.n_classes must be at least 2, got {self.n_classes}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size must be odd (symmetric padding), got {self.kernel_size}")
        if self.image_size < 2**self.n_conv:
            raise ConfigError(f"model.n_conv={self.n_conv} halves the picture {self.n_conv} times: "
                              f"image_size must be at least {2**self.n_conv}, got {self.image_size}")


class ConvNet(nn.Module):
    def __init__(self, config: ConvNetConfig):
        super().__init__()
        self.config = config
        channels = [config.in_channels] + [config.n_filters * 2**i for i in range(config.n_conv)]
        # 'same' padding keeps the size through each conv, so only the pools shrink it.
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, config.kernel_size, padding=config.kernel_size // 2)
            for c_in, c_out in pairwise(channels)
        )
        side = config.image_size // 2**config.n_conv
        self.hidden = nn.Linear(channels[-1] * side * side, config.n_hidden)
        self.head = nn.Linear(config.n_hidden, config.n_classes)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> ModelOutput:
        x = images  # (B, C, H, W)
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)  # (B, F, H/2, W/2)
        x = F.dropout(x.flatten(1), self.config.dropout, self.training)  # (B, F * H * W)
        x = F.dropout(F.relu(self.hidden(x)), self.config.dropout, self.training)  # (B, n_hidden)
        logits = self.head(x)  # (B, K)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return ModelOutput(logits=logits, loss=loss)
