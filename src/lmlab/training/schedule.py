"""Learning-rate schedules as pure functions of the step, so a resumed run recomputes the same rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmlab.config import TrainConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """The steps a run plans its learning rate and evaluations over. It starts as the train config's; a time
    budget fixes the wsd decay once, while training (budget.py), so it is the trainer's state, kept in every
    checkpoint, and the config itself never changes."""

    max_steps: int
    warmup_steps: int
    eval_interval: int
    decay_start: int  # wsd: the decay's first step
    decay_steps: int  # wsd: the decay's length; the rate stays at its floor after it

    @classmethod
    def of(cls, config: TrainConfig) -> Schedule:
        decay_start = config.decay_start or config.max_steps - round(config.decay_share * config.max_steps)
        decay_start = max(decay_start, min(config.warmup_steps, config.max_steps))
        return cls(max_steps=config.max_steps, warmup_steps=config.warmup_steps, eval_interval=config.eval_interval,
                   decay_start=decay_start, decay_steps=config.decay_steps or max(config.max_steps - decay_start, 1))

    def config_values(self) -> dict[str, int]:
        """The train.* values that make a run without any budget follow this schedule (config.json after a
        time-budgeted run): running that config again reproduces the run."""
        return {"max_steps": self.max_steps, "warmup_steps": self.warmup_steps, "eval_interval": self.eval_interval,
                "decay_start": self.decay_start, "decay_steps": self.decay_steps}


def lr_at(step: int, config: TrainConfig, schedule: Schedule | None = None) -> float:
    """Linear warm-up to `lr`, then cosine, step or wsd decay towards `lr * min_lr_ratio`, or constant; over
    `schedule`'s steps (the config's own when none is given). After warm-up the rate never rises."""
    schedule = schedule or Schedule.of(config)
    if schedule.warmup_steps and step < schedule.warmup_steps:
        return config.lr * (step + 1) / schedule.warmup_steps
    min_lr = config.lr * config.min_lr_ratio
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        decays = (step - schedule.warmup_steps) // config.step_decay_every
        return max(config.lr * config.step_decay_factor**decays, min_lr)
    if config.schedule == "wsd":
        progress = min(max(step - schedule.decay_start, 0) / schedule.decay_steps, 1.0)
        return config.lr - (config.lr - min_lr) * progress
    span = max(schedule.max_steps - schedule.warmup_steps, 1)
    progress = min((step - schedule.warmup_steps) / span, 1.0)
    return min_lr + 0.5 * (config.lr - min_lr) * (1 + math.cos(math.pi * progress))
