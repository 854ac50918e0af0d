"""An exponential moving average of the weights (Polyak averaging; Keras' `use_ema`, timm's ModelEma).

The average of the last few hundred steps sits nearer the bottom of the valley than any one noisy step:
on names.txt the default GPT's test NLL is ~0.004 lower with it (benchmarks/RESULTS.md). The trainer
evaluates and saves the average; the raw weights keep training. `swap()` exchanges the two in place, so
every caller (evaluation, callbacks, checkpoint writers) sees an ordinary model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lmlab.training.distributed import copy_full_, full_tensor


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.swapped = False  # True while the model holds the average and `shadow` the raw weights

    def decay_at(self, step: int) -> float:
        """Ramped up over the first steps, so the random initial weights do not linger in the average."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        if self.swapped:
            raise RuntimeError("WeightAverage.update while the average is swapped into the model")
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay_at(step))

    @torch.no_grad()
    def swap(self) -> None:
        for param, other in zip(self.params, self.shadow, strict=True):
            held = param.detach().clone()
            param.copy_(other)
            other.copy_(held)
        self.swapped = not self.swapped

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The average in the model for the duration (a no-op if it is there already)."""
        if self.swapped:
            yield
            return
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def raw_weights(self) -> list[torch.Tensor]:
        """Copies of the raw weights, whole: under FSDP every rank must call this (the shards are gathered)."""
        return [full_tensor(t) for t in (self.shadow if self.swapped else self.params)]

    @torch.no_grad()
    def restore(self, raw: list[torch.Tensor] | None) -> None:
        """After a checkpoint's averaged weights were loaded into the model: they become the average and the
        saved raw weights the ones that train on (without saved raw weights, both start from the model)."""
        self.swapped = False
        for param, other in zip(self.params, self.shadow, strict=True):
            other.copy_(param)
        if raw is not None:
            if len(raw) != len(self.params):
                raise ValueError(f"{len(raw)} saved raw weights for {len(self.params)} parameters")
            for param, saved in zip(self.params, raw, strict=True):
                copy_full_(param, saved)
