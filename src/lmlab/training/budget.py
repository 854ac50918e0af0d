"""Budgets: how much training a run gets (`train.budget`, parsed by lmlab.config.parse_budget).

Work (flops, tokens, steps) is the unit of comparison: `work_plan` turns it into a step count once, before
the first step, from the tokens a step predicts (padding excluded) and the model's training FLOPs a token
(6 per parameter plus attention, performance.flops_per_token), so the same config trains the same steps on
any machine, idle or busy. The same plan holds the periodic evaluations to EVAL_SHARE of the training work.

Time (seconds) is a convenience: `TimeBudget` stops the run when the clock says so and, with the wsd
schedule, starts the decay once, when `decay_share` of the time is left, planning its length from the step
times measured so far. The rate never rises after warm-up and is never cut twice; if the machine slows
down during the decay, the run stops on time with the rate partway down. What the run ran is written back
as a plain schedule (Schedule.config_values), so its config.json reproduces it without any budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass

from lmlab.config import Budget, TrainConfig
from lmlab.training.schedule import Schedule

log = logging.getLogger(__name__)

# A forward pass costs a third of a training step's FLOPs a token (2 of 6 per parameter).
FORWARD_SHARE = 1 / 3
# Periodic evaluations may cost at most this share of the training work.
EVAL_SHARE = 0.1
EVALS_PER_RUN = 10  # when the evaluation interval was left to the default: enough for early stopping's patience
MIN_EVAL_TOKENS = 500  # a smaller sample's standard error would hide the differences early stopping acts on
# Share of the decay's time that a time budget plans steps for: the rest absorbs a slower machine.
PLANNED_SHARE = 0.9


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkPlan:
    """A work budget turned into steps, and the evaluations fitted to it."""

    budget: Budget
    tokens_per_step: float  # predicted tokens a step (all ranks, all micro-batches), padding excluded
    flops_per_token: float  # training FLOPs a predicted token
    steps: int
    eval_interval: int
    eval_max_tokens: int

    @property
    def tokens(self) -> float:
        return self.steps * self.tokens_per_step

    @property
    def flops(self) -> float:
        return self.tokens * self.flops_per_token

    @property
    def eval_flops(self) -> float:
        """The periodic evaluations' work, as planned (each scores eval_max_tokens tokens, forward only)."""
        return self.steps // self.eval_interval * self.eval_max_tokens * FORWARD_SHARE * self.flops_per_token

    def describe(self) -> str:
        return (f"budget {self.budget}: {self.steps:,} steps of {self.tokens_per_step:,.0f} tokens "
                f"({self.tokens:,.0f} tokens, {self.flops:.3g} FLOPs at {self.flops_per_token:,.0f} a token)")


def steps_for(budget: Budget, tokens_per_step: float, flops_per_token: float) -> int:
    """The steps a work budget buys: the nearest whole number, at least one."""
    if budget.unit == "steps":
        return int(budget.amount)
    if budget.is_time:
        raise ValueError("a time budget has no step count before the run")
    tokens = budget.amount if budget.unit == "tokens" else budget.amount / flops_per_token
    return max(1, round(tokens / tokens_per_step))


def evaluation_plan(steps: int, tokens_per_step: float, eval_interval: int | None, eval_max_tokens: int,
                    val_tokens: int) -> tuple[int, int]:
    """(eval_interval, eval_max_tokens) whose periodic evaluations cost at most EVAL_SHARE of the training
    work. `eval_interval` None (left to the default) asks for EVALS_PER_RUN evaluations; the sample shrinks
    first, to MIN_EVAL_TOKENS, then the evaluations thin out."""
    allowed = EVAL_SHARE * steps * tokens_per_step / FORWARD_SHARE  # forward-only tokens
    interval = eval_interval or max(1, steps // EVALS_PER_RUN)
    evals = max(steps // interval, 1)
    sample = min(eval_max_tokens, max(val_tokens, 1), int(allowed / evals))
    if sample < MIN_EVAL_TOKENS and allowed >= MIN_EVAL_TOKENS:  # fewer evaluations, each large enough
        sample = min(eval_max_tokens, max(val_tokens, 1), MIN_EVAL_TOKENS)
        interval = max(interval, math.ceil(steps / int(allowed / sample)))
    elif sample < MIN_EVAL_TOKENS:  # a run this short affords no more than the final evaluation
        interval = steps
    return interval, max(sample, 1)


def work_plan(budget: Budget, train: TrainConfig, *, tokens_per_step: float, flops_per_token: float,
              val_tokens: int, eval_defaulted: bool) -> WorkPlan:
    """The steps `budget` buys and the evaluations that fit them (the interval and sample only where the
    user left them to the defaults: `eval_defaulted`)."""
    steps = steps_for(budget, tokens_per_step, flops_per_token)
    interval, sample = (evaluation_plan(steps, tokens_per_step, None, train.eval_max_tokens, val_tokens)
                        if eval_defaulted else (train.eval_interval, train.eval_max_tokens))
    return WorkPlan(budget=budget, tokens_per_step=tokens_per_step, flops_per_token=flops_per_token, steps=steps,
                    eval_interval=interval, eval_max_tokens=sample)


class TimeBudget:
    """A time budget while training. `out_of_time(elapsed)` says when to stop; `after_step(step, elapsed)`
    returns the schedule with its decay fixed the one time it starts (wsd only), else None. A step's time is
    the clock between two steps, evaluations and checkpoints included: the decay has to pay for them too."""

    def __init__(self, config: TrainConfig, schedule: Schedule, seconds: float, *, window: int = 20):
        self.config, self.seconds = config, seconds
        # A resumed run whose decay was already fixed keeps it: the checkpoint holds the fitted schedule.
        self.decided = config.schedule != "wsd" or schedule != Schedule.of(config)
        self._recent: deque[float] = deque(maxlen=window)
        self._schedule = schedule
        self._last: float | None = None  # the clock at the previous step's end

    def out_of_time(self, elapsed: float) -> bool:
        return elapsed >= self.seconds

    def after_step(self, step: int, elapsed: float) -> Schedule | None:
        if self._last is not None:
            self._recent.append(elapsed - self._last)
        self._last = elapsed
        if self.decided or not self._recent:
            return None
        left = self.seconds - elapsed
        start = max(step, self._schedule.warmup_steps)
        if start >= self._schedule.decay_start:  # the planned steps' own decay comes first: it stays
            self.decided = True
            return None
        if left > self.config.decay_share * self.seconds:
            return None
        self.decided = True
        per_step = statistics.median(self._recent)
        decay = max(1, min(math.floor(PLANNED_SHARE * left / max(per_step, 1e-9)), self._schedule.max_steps - start))
        fitted = dataclasses.replace(self._schedule, decay_start=start, decay_steps=decay, max_steps=start + decay)
        log.info("time budget %.0f s: %.0f s left at step %d (%.1f ms a step); the learning rate decays over the "
                 "next %d steps", self.seconds, left, step, 1000 * per_step, decay)
        return fitted
