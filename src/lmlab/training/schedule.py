"""Learning-rate schedules as pure functions of the step, so a resumed run recomputes the same rate."""

from __future__ import annotations

import math

from lmlab.config import TrainConfig


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `lr`, then cosine or step decay towards `lr * min_lr_ratio`, or constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        decays = (step - config.warmup_steps) // config.step_decay_every
        return max(config.lr * config.step_decay_factor**decays, config.lr * config.min_lr_ratio)
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    min_lr = config.lr * config.min_lr_ratio
    return min_lr + 0.5 * (config.lr - min_lr) * (1 + math.cos(math.pi * progress))
