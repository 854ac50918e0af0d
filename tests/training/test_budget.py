"""Time budgets that fit the schedule: the plan from scripted step times, and a budgeted run that ends on its
schedule's last step instead of being cut off near the peak learning rate."""

from __future__ import annotations

import pytest

from lmlab.config import TrainConfig
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.budget import BudgetFitter, fit_remaining, fit_steps_to_budget
from lmlab.training.schedule import Schedule, lr_at
from lmlab.training.trainer import Trainer

PLANNED = TrainConfig(max_steps=7000, warmup_steps=100, eval_interval=500, time_budget=60.0)


def test_the_first_fit_plans_the_whole_budget():
    assert fit_remaining(PLANNED, 0, 0.1, 60.0) == fit_steps_to_budget(PLANNED, 0.1, 60.0)
    assert fit_steps_to_budget(PLANNED, 0.01, 60.0).max_steps == int(0.85 * 60 / 0.01)  # 85 %: evals, noise
    assert fit_steps_to_budget(PLANNED, 1e-4, 60.0) == Schedule.of(PLANNED)  # all steps fit: the plan stays


def test_remaining_steps_count_from_the_step_reached_and_never_exceed_the_plan():
    fitted = fit_remaining(PLANNED, 200, 0.05, 30.0)  # 0.85 * 30 s / 50 ms = 510 more steps
    assert fitted.max_steps == 710 and fitted.warmup_steps == 71 and fitted.eval_interval == 71
    assert fit_remaining(PLANNED, 200, 1e-6, 30.0) == Schedule.of(PLANNED)  # all fits: warm-up, evaluations untouched
    assert fit_remaining(PLANNED, 200, 0.05, -1.0).max_steps == 201  # out of time: end after this step


def test_fitter_fits_after_a_few_steps_then_only_on_drift():
    fitter = BudgetFitter(PLANNED, first=5, window=10, drift=1.5)
    plans = [fitter.after_step(step, 0.02, 0.02 * step) for step in range(1, 6)]
    assert plans[:4] == [None] * 4 and plans[4].max_steps == 5 + int(0.85 * (60 - 0.1) / 0.02)
    steady = [fitter.after_step(step, 0.021, 0.02 * step) for step in range(6, 40)]
    assert steady == [None] * len(steady)  # 5% slower is noise, not drift
    drifted = [fitter.after_step(step, 0.1, 1.0 + 0.1 * step) for step in range(40, 50)]
    refit = next(i for i, plan in enumerate(drifted) if plan is not None)  # once the window's median moved
    step, seconds = 40 + refit, fitter.step_seconds
    assert refit <= 6 and seconds > 0.03
    assert drifted[refit].max_steps == step + int(0.85 * (60 - 1.0 - 0.1 * step) / seconds)
    assert BudgetFitter.for_config(TrainConfig()) is None  # no budget: the plan is the config's


def test_a_budgeted_run_decays_its_rate_by_the_end(tiny_names):
    config = resolve_config({"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
                             "train": {"max_steps": 10_000_000, "time_budget": 1.5, "threads": 1}})
    data = prepare_data(config.data)
    net = build_model(config, data.tokenizer, data.splits["train"].block_size)
    trainer = Trainer(net, data.splits["train"], None, config.train).fit()
    fitted = trainer.schedule
    assert trainer.config == config.train  # the budget re-fits the trainer's schedule, never its config
    assert fitted.max_steps < 10_000_000 and fitted.warmup_steps <= fitted.max_steps // 10
    # ended on (or, if the machine slowed sharply at the very end, near) the schedule's last step
    assert trainer.step >= 0.8 * fitted.max_steps
    assert trainer.last_record["lr"] == pytest.approx(lr_at(trainer.step - 1, config.train, fitted))
    assert lr_at(trainer.step - 1, config.train, fitted) < 0.3 * config.train.lr


def test_the_default_gpt_run_is_budgeted_and_says_how_to_train_longer():
    from types import SimpleNamespace

    from lmlab.training.budget import train_longer_hint

    config = resolve_config({"model": {"name": "gpt"}})
    assert 0 < config.train.time_budget <= 300
    assert resolve_config({"model": {"name": "gpt"}, "train": {"time_budget": 0}}).train.time_budget == 0
    cut = SimpleNamespace(config=config.train, step=2500)
    assert train_longer_hint(7000, cut) == (f"the {config.train.time_budget:g} s time budget fitted 2,500 of "
                                            "7,000 steps; to train longer: --time-budget 0 --max-steps 7000")
    assert train_longer_hint(7000, SimpleNamespace(config=config.train, step=7000)) is None


def test_the_refitted_schedule_is_trainer_state_that_a_resume_takes_back(tiny_names, tmp_path):
    import dataclasses

    config = resolve_config({"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
                             "train": {"max_steps": 10_000_000, "time_budget": 1.0, "threads": 1}})
    data = prepare_data(config.data)
    block = data.splits["train"].block_size
    first = Trainer(build_model(config, data.tokenizer, block), data.splits["train"], None, config.train,
                    run_dir=tmp_path).fit()
    assert first.schedule != Schedule.of(config.train) and first.config == config.train
    resumed = Trainer(build_model(config, data.tokenizer, block), data.splits["train"], None, config.train)
    resumed.load_checkpoint(tmp_path)
    assert resumed.schedule == first.schedule and resumed.step == first.step
    # Without the budget the resumed run plans by its own config (more max_steps: go on to them).
    unbudgeted = dataclasses.replace(config.train, time_budget=0.0)
    plain = Trainer(build_model(config, data.tokenizer, block), data.splits["train"], None, unbudgeted)
    plain.load_checkpoint(tmp_path)
    assert plain.schedule == Schedule.of(unbudgeted)


def test_the_log_holds_the_first_fit_large_re_fits_and_the_end(caplog):
    fitter = BudgetFitter(PLANNED, first=5, window=10, drift=1.05)
    seconds = 0.02
    with caplog.at_level("INFO", logger="lmlab.training.budget"):
        for step in range(1, 200):
            seconds *= 1.004  # a machine slowing a little all the time: many re-fits, each small
            fitter.after_step(step, seconds, 0.02 * step)
        fitter.finished(199)
    lines = [r.getMessage() for r in caplog.records]
    assert len(fitter.fits) > 5  # it did re-fit often
    assert lines[0].endswith(f"a step: {fitter.fits[0][2]} steps (warm-up 100, evaluation every 252)")
    logged = [int(line.split("re-fitted to ")[1].split()[0]) for line in lines if "re-fitted" in line]
    assert len(logged) < len(fitter.fits) - 1  # the small ones stayed out of the log
    previous = fitter.fits[0][2]
    for planned in logged:
        assert abs(planned - previous) > 0.2 * previous
        previous = planned
    assert lines[-1] == f"time budget 60 s: planned {fitter.fits[-1][2]} steps, ran 199"
