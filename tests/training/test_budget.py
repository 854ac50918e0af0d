"""Budgets: units and their errors, work turned into steps before the run (checked against hand counts), the
evaluations held to a tenth of the work, and time budgets whose rate never rises after warm-up, on a fake
clock that slows down, and whose config.json reproduces the run without a clock."""

from __future__ import annotations

import json
import math

import pytest
import torch

import lmlab
from lmlab.config import Budget, TrainConfig, parse_budget
from lmlab.errors import ConfigError
from lmlab.models import REGISTRY
from lmlab.run.config import resolve_config
from lmlab.run.plan import plan_run, resolve_run
from lmlab.training.budget import EVAL_SHARE, FORWARD_SHARE, TimeBudget, evaluation_plan, steps_for
from lmlab.training.callbacks import Callback
from lmlab.training.performance import flops_per_token
from lmlab.training.schedule import Schedule, lr_at
from lmlab.training.step import predicted_tokens


@pytest.mark.parametrize(("text", "budget"), [
    ("2e13flops", Budget(2e13, "flops")), ("3e6tokens", Budget(3e6, "tokens")), ("1500steps", Budget(1500, "steps")),
    ("90s", Budget(90, "seconds")), ("5min", Budget(300, "seconds")), ("1.5h", Budget(5400, "seconds")),
    ("3_000 Tokens", Budget(3000, "tokens")), ("", None),
])
def test_a_budget_is_a_number_and_its_unit(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["90", "1e13", "5 parsecs", "-3s", "0steps", "1.5steps", "nanflops", "1e400flops"])
def test_a_bare_number_or_an_unknown_unit_is_one_error_naming_the_units(text):
    with pytest.raises(ConfigError, match="flops.*tokens.*steps.*90s") if text != "1.5steps" else \
            pytest.raises(ConfigError, match="whole number"):
        TrainConfig(budget=text)


def test_the_users_steps_win_over_a_models_budget_and_both_given_is_an_error():
    assert resolve_config({}).train.budget  # the default GPT has a work budget
    assert resolve_config({"train": {"max_steps": 30}}).train.budget == ""
    assert resolve_config({"train": {"budget": "90s"}}).train.schedule == "wsd"  # time: the rate never jumps
    with pytest.raises(ConfigError, match="give one"):
        resolve_config({"train": {"budget": "1e6tokens", "max_steps": 30}})
    with pytest.raises(ConfigError, match="wsd or constant"):
        resolve_config({"train": {"budget": "90s", "schedule": "cosine"}})


@pytest.mark.parametrize("model", ["bigram", "mlp", "wavenet", "rnn", "gru", "lstm", "gpt-nano", "llama-nano"])
def test_work_becomes_steps_as_a_hand_count_says(tiny_names, model):
    """tokens: the budget over the tokens a step predicts, counted by hand on the same draws; flops: over
    6 x parameters (+ attention) a token as well."""
    values = {"data": {"source": str(tiny_names)}, "model": {"name": model},
              "train": {"budget": "2e4tokens", "batch_size": 8}}
    plan = plan_run(resolve_run(values))
    generator = torch.Generator().manual_seed(0)
    per_step = sum(predicted_tokens(plan.data.splits["train"].sample_batch(8, generator)[1]) for _ in range(16)) / 16
    assert plan.work.tokens_per_step == per_step
    assert plan.config.train.max_steps == round(2e4 / per_step) and plan.config.train.budget == ""
    flops = plan_run(resolve_run({**values, "train": {"budget": "3e9flops", "batch_size": 8}}))
    with torch.device("meta"):
        net = REGISTRY[model].model_cls(flops.config.model.__class__(
            **{**vars_of(flops.config.model), "vocab_size": plan.data.tokenizer.vocab_size,
               "block_size": plan.context}))
    params = sum(p.numel() for p in net.parameters())
    attention = 12 * net.config.n_layer * net.config.n_embd * plan.context if hasattr(net.config, "n_head") else 0
    assert flops.work.flops_per_token == 6 * params + attention == flops_per_token(net, plan.context)
    assert flops.config.train.max_steps == max(1, round(3e9 / (6 * params + attention) / per_step))
    assert steps_for(Budget(700, "steps"), per_step, 1.0) == 700


def vars_of(config) -> dict:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


@pytest.mark.parametrize(("steps", "per_step", "val"), [(3000, 900, 22_000), (200, 64, 50_000), (20, 10, 10**6),
                                                        (5000, 8000, 3000)])
def test_evaluation_costs_at_most_a_tenth_of_the_training_work(steps, per_step, val):
    interval, sample = evaluation_plan(steps, per_step, None, 20_000, val)
    evaluated = steps // interval * sample
    assert evaluated * FORWARD_SHARE <= EVAL_SHARE * steps * per_step + 1e-9
    assert sample <= min(20_000, val) and interval >= 1


def test_a_budgeted_run_plans_its_evaluations_and_summary_json_says_what_the_budget_bought(tiny_names, tmp_path):
    run = lmlab.train({"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
                       "train": {"budget": "3e4tokens", "threads": 1}}, out=tmp_path / "run", inspect=False)
    summary = run.summary
    assert summary["budget"]["requested"] == "3e4tokens" and summary["steps"] == summary["budget"]["steps"]
    assert summary["budget"]["eval_flops_share"] <= EVAL_SHARE
    assert abs(summary["tokens"] - 3e4) <= summary["budget"]["tokens_per_step"]  # the nearest whole step
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["budget"] == "" and saved["max_steps"] == summary["steps"]  # config.json names the steps


class SlowingClock:
    """A clock that moves `seconds` a call, and `factor` times more once `after` calls have been made."""

    def __init__(self, seconds: float, after: int, factor: float):
        self.now, self.calls, self.seconds, self.after, self.factor = 0.0, 0, seconds, after, factor

    def __call__(self) -> float:
        self.calls += 1
        self.now += self.seconds * (self.factor if self.calls > self.after else 1.0)
        return self.now


class UseClock(Callback):
    name = "clock"

    def __init__(self, clock):
        self.clock = clock

    def on_train_begin(self, trainer):
        trainer.clock = self.clock


def test_a_time_budget_never_raises_the_rate_after_warm_up_even_when_the_machine_slows(tiny_names, tmp_path):
    values = {"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
              "train": {"budget": "20s", "max_steps": 100_000, "warmup_steps": 20, "log_interval": 1,
                        "eval_interval": 50, "threads": 1}}
    # 5 ms a clock reading (two a step): 10 ms a step, then 4x slower in the stable phase
    clock = SlowingClock(0.005, after=600, factor=4.0)
    run = lmlab.train(values, out=tmp_path / "timed", inspect=False, callbacks=[UseClock(clock)])
    lrs = [m["lr"] for m in run.metrics if "lr" in m]
    after_warmup = lrs[20:]
    assert all(b <= a for a, b in zip(after_warmup, after_warmup[1:], strict=False))  # never rises, never jumps back
    drops = [a - b for a, b in zip(after_warmup, after_warmup[1:], strict=False) if b < a]
    assert max(drops) < 0.05 * values["train"].get("lr", 3e-3)  # a decay, not a cut
    assert lrs[-1] < 0.5 * max(lrs)  # it did decay before the clock ran out
    schedule = run.trainer.schedule
    assert schedule.decay_start > 20 and schedule.decay_steps > 0
    # config.json holds the schedule it ran: the same config again, with no clock, is the same run
    saved = json.loads((tmp_path / "timed" / "config.json").read_text())
    assert saved["train"]["budget"] == "" and saved["train"]["decay_start"] == schedule.decay_start
    again = lmlab.train(saved, out=tmp_path / "again", inspect=False)
    assert [m["lr"] for m in again.metrics if "lr" in m] == lrs
    first, second = (p / "model.safetensors" for p in (tmp_path / "timed", tmp_path / "again"))
    assert first.read_bytes() == second.read_bytes()


def test_the_decay_starts_once_when_its_share_of_the_time_is_left():
    config = TrainConfig(max_steps=10_000, warmup_steps=10, schedule="wsd", decay_share=0.2)
    timed = TimeBudget(config, Schedule.of(config), 100.0, window=5)
    plans = [timed.after_step(step, 0.1 * step) for step in range(1, 900)]
    fitted = [(i + 1, p) for i, p in enumerate(plans) if p is not None]
    assert len(fitted) == 1  # once
    step, plan = fitted[0]
    assert step == 800 and plan.decay_start == 800  # 20 s of 100 left
    assert plan.decay_steps == math.floor(0.9 * 20 / 0.1) and plan.max_steps == 800 + plan.decay_steps
    assert lr_at(799, config, plan) == config.lr and lr_at(plan.max_steps, config, plan) == pytest.approx(
        config.lr * config.min_lr_ratio)


def test_a_schedule_a_time_budget_fixed_is_trainer_state_that_a_resume_takes_back(tiny_names, tmp_path):
    values = {"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
              "train": {"budget": "2s", "max_steps": 100_000, "warmup_steps": 5, "threads": 1}}
    # 6 ms a step (two readings): the decay starts at 1.6 s (step ~266) and plans ~60 steps; stop inside it
    run = lmlab.train(values, out=tmp_path / "run", inspect=False,
                      callbacks=[UseClock(SlowingClock(0.003, 10**9, 1.0)), StopAt(300)])
    fixed = run.trainer.schedule
    assert run.trainer.interrupted and fixed != Schedule.of(run.config.train) and fixed.max_steps > 300
    resumed = lmlab.train({}, out=tmp_path / "run", resume=True, inspect=False,
                          callbacks=[UseClock(SlowingClock(0.003, 10**9, 1.0))])
    assert resumed.trainer.schedule == fixed and resumed.trainer.step <= fixed.max_steps


class StopAt(Callback):
    name = "stop_at"

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, record):
        if trainer.step >= self.step:
            trainer.interrupt()
