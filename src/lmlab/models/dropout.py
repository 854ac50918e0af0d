"""Dropout whose random mask is cheap to draw on a CPU.

torch's CPU dropout draws one Bernoulli sample per element, each from the Mersenne Twister through a
floating-point comparison; for the small models a CPU trains, that costs more than the layer's matrix
product (benchmarks/RESULTS.md). Here one 64-bit draw gives three elements 16 random bits each (48 of
its bits: `random_(0, 2**48)` is uniform over them), and an element is kept when its bits are at or above
round(p * 65536): the drop probability is p rounded to a multiple of 1/65536 (0.15 becomes 0.149994), and
kept elements are scaled by the inverse of the keep probability actually used, so the expected output is the
input, as nn.Dropout's is. On other devices, and in eval mode, it is torch's dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 1 << 16  # a 16-bit draw per element


def keep_mask(like: Tensor, p: float) -> Tensor:
    """A mask of `like`'s shape and dtype: 0 for a dropped element, 1 / (1 - p) for a kept one."""
    n = like.numel()
    words = torch.empty((n + 2) // 3, dtype=torch.int64, device=like.device).random_(0, 1 << 48)
    bits = words.view(torch.int16).view(-1, 4)[:, :3].reshape(-1)[:n].view(like.shape)  # signed 16-bit draws
    dropped = round(p * LEVELS)
    return (bits >= dropped - LEVELS // 2).to(like.dtype).mul_(LEVELS / (LEVELS - dropped))


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training)
    return x * keep_mask(x, p)


class Dropout(nn.Dropout):
    """nn.Dropout (so hooks, `p` and isinstance checks see one), with the CPU mask above."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
