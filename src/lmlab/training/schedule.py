"""Learning-rate schedules as pure functions of the step, so a resumed run recomputes the same rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmlab.config import TrainConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """The steps a run plans its learning rate and evaluations over. It starts as the train config's; a time
    budget re-fits it while training (budget.py), so it is the trainer's state, kept in every checkpoint, and
    the config itself never changes."""

    max_steps: int
    warmup_steps: int
    eval_interval: int

    @classmethod
    def of(cls, config: TrainConfig) -> Schedule:
        return cls(max_steps=config.max_steps, warmup_steps=config.warmup_steps, eval_interval=config.eval_interval)


def lr_at(step: int, config: TrainConfig, schedule: Schedule | None = None) -> float:
    """Linear warm-up to `lr`, then cosine or step decay towards `lr * min_lr_ratio`, or constant; over
    `schedule`'s steps (the config's own when none is given)."""
    schedule = schedule or Schedule.of(config)
    if schedule.warmup_steps and step < schedule.warmup_steps:
        return config.lr * (step + 1) / schedule.warmup_steps
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        decays = (step - schedule.warmup_steps) // config.step_decay_every
        return max(config.lr * config.step_decay_factor**decays, config.lr * config.min_lr_ratio)
    span = max(schedule.max_steps - schedule.warmup_steps, 1)
    progress = min((step - schedule.warmup_steps) / span, 1.0)
    min_lr = config.lr * config.min_lr_ratio
    return min_lr + 0.5 * (config.lr - min_lr) * (1 + math.cos(math.pi * progress))
