"""Time budgets that fit the schedule: when `train.time_budget` is set, the trainer measures its step time
and shortens `max_steps` (and the warm-up and evaluation interval with it) so the learning rate decays to
its end within the budget, instead of being cut off near its peak.

The first fit comes after a few timed steps; the trainer fits again whenever the median step time of a
recent window drifts from the one the last fit used (another job started or ended), planning the steps
left from the budget left. It never plans more steps than the config asks for: the registered counts
suit their data, and the budget stays a hard cap on training time.

Budgeted runs are not bitwise reproducible: the number of steps, and so the learning rate at each step,
depends on how fast the machine was. Runs without a budget never call this and stay exact.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque

from lmlab.config import TrainConfig
from lmlab.training.schedule import Schedule

log = logging.getLogger(__name__)

# Share of the budget the fitted schedule plans to use: the rest covers evaluations, checkpoints and noise
# in the timing on a shared machine.
PLANNED_SHARE = 0.85
# A re-fit is logged when it moves the planned steps by more than this share of the last logged plan; smaller
# ones (a shared machine's load moving a little) go to the debug log, so a run prints a few lines, not dozens.
LOGGED_CHANGE = 0.2


def _cut(planned: TrainConfig, max_steps: int) -> Schedule:
    """The config's schedule cut to `max_steps`: warm-up at most a tenth of them, evaluations as often."""
    return Schedule(max_steps=max_steps, warmup_steps=min(planned.warmup_steps, max_steps // 10),
                    eval_interval=min(planned.eval_interval, max(max_steps // 10, 1)))


def fit_steps_to_budget(train: TrainConfig, step_seconds: float, budget: float) -> Schedule:
    """The steps that fit in the budget at the measured speed (never more than the config's own); warm-up
    at most a tenth of them."""
    return _cut(train, max(1, min(train.max_steps, int(PLANNED_SHARE * budget / max(step_seconds, 1e-9)))))


def fit_remaining(planned: TrainConfig, step: int, step_seconds: float, seconds_left: float) -> Schedule:
    """The schedule of `planned` (the run's own config) with max_steps = `step` plus the steps that fit in the
    seconds left, never more than planned; warm-up and evaluation interval cut as in fit_steps_to_budget.
    When all planned steps fit, the config's own schedule."""
    left = max(1, int(PLANNED_SHARE * max(seconds_left, 0.0) / max(step_seconds, 1e-9)))
    max_steps = min(planned.max_steps, step + left)
    if max_steps == planned.max_steps:  # it all fits: the run's own plan, warm-up and evaluations included
        return Schedule.of(planned)
    return _cut(planned, max_steps)


class BudgetFitter:
    """Fits the schedule to `planned.time_budget` from measured step times.

    `after_step(step, seconds, elapsed)` takes the step just finished, its wall time and the run's training
    seconds so far (evaluations included); it returns a new Schedule when the plan changed, else None. The
    first fit needs `first` timed steps (or whatever was timed in the first tenth of the budget); later ones
    happen when the median of the last `window` steps is more than `drift` times off the step time of the
    last fit (either way). The log gets the first fit, re-fits that move the plan by more than
    LOGGED_CHANGE, and `finished(step)`'s line at the end.
    """

    def __init__(self, planned: TrainConfig, *, first: int = 5, window: int = 20, drift: float = 1.5):
        self.planned = planned
        self.first, self.drift = first, drift
        self.step_seconds: float | None = None  # the step time the current plan assumes
        self.fits: list[tuple[int, float, int]] = []  # (at step, seconds a step, max_steps)
        self._recent: deque[float] = deque(maxlen=window)
        self._logged_steps: int | None = None  # max_steps of the last plan written to the log

    @classmethod
    def for_config(cls, config: TrainConfig) -> BudgetFitter | None:
        return cls(config) if config.time_budget and config.fit_schedule else None

    def after_step(self, step: int, seconds: float, elapsed: float) -> Schedule | None:
        self._recent.append(seconds)
        if self.step_seconds is None:
            # A tenth of the budget gone before `first` steps: fit on what was timed, or the run never does.
            if len(self._recent) < self.first and elapsed < 0.1 * self.planned.time_budget:
                return None
        elif len(self._recent) < self._recent.maxlen:
            return None
        now = statistics.median(self._recent)
        if self.step_seconds is not None and self.step_seconds / self.drift <= now <= self.step_seconds * self.drift:
            return None
        fitted = fit_remaining(self.planned, step, now, self.planned.time_budget - elapsed)
        previous = self.fits[-1][2] if self.fits else self.planned.max_steps
        self.step_seconds = now
        self._recent.clear()
        self.fits.append((step, now, fitted.max_steps))
        first = self._logged_steps is None
        if first or abs(fitted.max_steps - self._logged_steps) > LOGGED_CHANGE * self._logged_steps:
            log.info("time budget %.0f s at %.1f ms a step: %s%d steps (warm-up %d, evaluation every %d)",
                     self.planned.time_budget, 1000 * now, "" if first else "re-fitted to ", fitted.max_steps,
                     fitted.warmup_steps, fitted.eval_interval)
            self._logged_steps = fitted.max_steps
        elif fitted.max_steps != previous:
            log.debug("time budget re-fitted at %.1f ms a step: %d steps", 1000 * now, fitted.max_steps)
        return fitted

    def finished(self, step: int) -> None:
        """Log, once, how the run ended against the plan: a budgeted run's one line after the first fit."""
        if self.fits:
            log.info("time budget %.0f s: planned %d steps, ran %d", self.planned.time_budget, self.fits[-1][2],
                     step)


def train_longer_hint(planned_max_steps: int, trainer) -> str | None:
    """A line for the CLI to print after a run whose schedule the time budget shortened: how to train the
    full schedule. None when the run did all `planned_max_steps`."""
    if not trainer.config.time_budget or trainer.step >= planned_max_steps:
        return None
    return (f"the {trainer.config.time_budget:g} s time budget fitted {trainer.step:,} of {planned_max_steps:,} "
            f"steps; to train longer: --time-budget 0 --max-steps {planned_max_steps}")
