"""A forecasting run: load a series, split it by time, train a forecaster with lmlab's Trainer on windows of
the training part, forecast every validation step from the values before it, and score the model beside
every baseline. The run directory holds config.json, model.safetensors, metrics.jsonl, summary.json and
forecast.png.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.config import TrainConfig, build_config, to_dict
from lmlab.errors import ConfigError, DataError, check_count
from lmlab.files import claim_output_folder
from lmlab.run.folder import CONFIG_FILE, SUMMARY_FILE, RunDir, is_run_or_its_start
from lmlab.series.baselines import baseline_forecasts, errors
from lmlab.series.conv_lstm import ConvLSTMForecaster, ConvLSTMForecasterConfig
from lmlab.series.data import SYNTHETIC, WindowDataset, load_series, split_time
from lmlab.series.differencing import SeasonalDifference, default_smooth, detect_period
from lmlab.series.forecast_plot import plot_forecast
from lmlab.series.linear import LinearForecaster, LinearForecasterConfig
from lmlab.series.mlp import MLPForecaster, MLPForecasterConfig
from lmlab.training.callbacks import EarlyStopping
from lmlab.training.lr_finder import lr_find
from lmlab.training.trainer import Trainer

# Huber rather than MSE by default: the score is the MAE, and a season's sudden jumps (the synthetic series has
# one a year) are outliers that MSE lets pull every weight towards them.
MODEL_DEFAULTS: dict[str, Any] = {"loss": "huber"}

# name -> (config class, model class, training defaults that suit it)
FORECASTERS: dict[str, tuple[type, type, dict[str, Any]]] = {
    "linear": (LinearForecasterConfig, LinearForecaster,
               {"lr": 1e-2, "weight_decay": 0.0, "max_steps": 3000, "eval_interval": 100}),
    "mlp": (MLPForecasterConfig, MLPForecaster,
            {"lr": 3e-3, "weight_decay": 0.0, "max_steps": 3000, "eval_interval": 100}),
    "conv_lstm": (ConvLSTMForecasterConfig, ConvLSTMForecaster,
                  {"lr": 3e-3, "weight_decay": 0.0, "max_steps": 1500, "eval_interval": 100}),
}

MAX_HORIZON = 100_000  # steps forecast beyond the data, one model call each


@dataclass
class ForecastResult:
    model_name: str
    split: int
    actual: np.ndarray  # the validation part, series[split:]
    forecast: np.ndarray  # the model's forecast of each validation step
    scores: dict[str, dict[str, float]]  # name -> {"mae", "mse"}; the model first, then each baseline
    baselines: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0
    plot: Path | None = None
    future: np.ndarray | None = None  # --horizon: the iterated forecast of the steps after the data
    history: np.ndarray | None = None  # the whole series, to draw the future after it
    difference: SeasonalDifference | None = None
    lr: float | None = None
    lr_found: bool = False  # the learning rate came from the range test, not from the defaults or --set
    best_step: int | None = None  # early stopping's best evaluation (its weights are the model's)


def _split_and_period(
    source: str, length: int, split: int | None, period: int | None
) -> tuple[int, int | None]:
    if source == "synthetic":  # the course's own period and split (series/data.py)
        period = SYNTHETIC["period"] if period is None else period
        split = SYNTHETIC["split_time"] if split is None else split
    if split is None:
        split = split_time(length, period=period)
    if not 0 < split < length:
        raise DataError(f"--split-time must be inside the series (1 .. {length - 1}), got {split}")
    return split, period


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: WindowDataset, batch_size: int = 1024) -> np.ndarray:
    """The model's forecast for every window's target, in time order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(inputs.to(device)).logits.float().cpu() for inputs, _ in dataset.iter_batches(batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------------------------------------
# Preprocessing: what the model reads (the series, or its seasonal difference) and its learning rate


@dataclass
class Prepared:
    """The values a forecaster reads: the series itself, or its seasonal difference from step `offset` on."""
    values: np.ndarray
    offset: int = 0  # values[i] belongs to series step offset + i
    difference: SeasonalDifference | None = None

    def part(self, start: int, stop: int | None = None) -> np.ndarray:
        """The model's values for series steps start .. stop - 1 (from `offset` on, where they begin)."""
        return self.values[max(start - self.offset, 0) : None if stop is None else stop - self.offset]

    def restore(self, series: np.ndarray, start: int, forecast: np.ndarray) -> np.ndarray:
        if self.difference is None:
            return np.asarray(forecast, dtype=np.float32)
        return self.difference.restore(series, start, forecast)


def resolve_period(series: np.ndarray, source: str, split: int | None, period: int | None,
                   difference: int | str | None) -> int | None:
    """The season for the split and the baselines: --period, the synthetic series' own, or (when differencing
    is 'auto') the one the autocorrelation of the training part shows."""
    if period is not None or source == "synthetic" or difference != "auto":
        return period
    head = split if split is not None else split_time(len(series))
    return detect_period(series[:head])


def prepare(series: np.ndarray, split: int, window: int, *, period: int | None,
            difference: int | str | None = "auto", smooth: int | None = None) -> Prepared:
    """difference: 'auto' (difference at the season's period when there is one), None/'none'/0 (off), or a
    period. Checks that the training part leaves at least one window."""
    if difference in (None, "none", 0):
        lag = None
    elif difference == "auto":
        lag = period
    else:
        try:
            lag = int(difference)
        except (TypeError, ValueError):
            raise DataError(f"--difference takes auto, none or a period, got {difference!r}") from None
    if lag is None:
        prepared = Prepared(np.asarray(series, dtype=np.float32))
    else:
        diff = SeasonalDifference(lag, default_smooth(lag) if smooth is None else smooth)
        if diff.first + window >= split:
            raise DataError(f"differencing at period {lag} uses the first {diff.first} steps, which leaves no "
                            f"window of {window} before validation starts at {split}; pass --difference none "
                            "or a shorter --window")
        prepared = Prepared(diff.apply(series), diff.first, diff)
    if window >= split - prepared.offset:
        raise DataError(f"--window {window} needs over {window} training steps; validation starts at {split}")
    return prepared


def find_lr(model_cls: type, model_config: Any, train_config: TrainConfig, train_part: np.ndarray,
            shuffle_buffer: int) -> float | None:
    """The learning-rate range test's suggestion (lmlab.training.lr_finder, 'valley') on a fresh copy of the
    model and its own window stream, so the run's seeded batches are untouched; None if the test found none."""
    torch.manual_seed(train_config.seed)
    probe = model_cls(model_config)
    data = WindowDataset(train_part, model_config.window, shuffle_buffer=shuffle_buffer)
    result = lr_find(probe, data, train_config, start_lr=1e-5, end_lr=1.0, num_iter=100)
    return result.suggestion


def early_stopping(patience: int) -> list:
    """Stop when the validation loss has not improved for `patience` evaluations and keep the best weights;
    none for patience 0."""
    return [EarlyStopping(patience=patience, restore_best_weights=True)] if patience > 0 else []


# ----------------------------------------------------------------------------------------------------------
# Post-processing: forecasts in the series' units, and the future beyond the data


@torch.no_grad()
def forecast_ahead(model: torch.nn.Module, series: np.ndarray, prepared: Prepared, window: int,
                   horizon: int) -> np.ndarray:
    """Iterated forecasts of the `horizon` steps after the series: each forecast joins the inputs of the
    next (and, when differencing, the values added back once the horizon reaches past a period)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    values = list(np.asarray(series, dtype=np.float64))
    inputs = list(np.asarray(prepared.values, dtype=np.float64))
    for _ in range(horizon):
        x = torch.tensor(inputs[-window:], dtype=torch.float32, device=device).unsqueeze(0)  # (1, W)
        y = float(model(x).logits.float().cpu()[0])
        inputs.append(y)
        diff = prepared.difference
        values.append(y if diff is None else y + diff.base_at(np.asarray(values), len(values)))
    model.train(was_training)
    return np.asarray(values[len(series) :], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# The run


def run_forecast(
    source: str,
    model_name: str,
    *,
    window: int = 20,
    out: str | Path,
    split: int | None = None,
    period: int | None = None,
    shuffle_buffer: int = 1000,
    model_values: dict[str, Any] | None = None,
    train_values: dict[str, Any] | None = None,
    callbacks: tuple = (),
    difference: int | str | None = "auto",
    smooth: int | None = None,
    horizon: int = 0,
    patience: int = 5,
    lr_find: bool | None = None,
    delimiter: str | None = None,
) -> ForecastResult:
    """difference: 'auto' (at the season's period when one is given or detected), 'none', or a period;
    smooth: values averaged around t - period when adding it back (default: 10, at most period // 4);
    horizon: steps to forecast beyond the data; patience: evaluations without improvement before early
    stopping (0: off); lr_find: run the range test (default: unless train.lr is given); delimiter: the CSV
    file's (default: detected)."""
    if model_name not in FORECASTERS:
        raise ConfigError(f"unknown forecaster {model_name!r}; choose one of {', '.join(FORECASTERS)}")
    check_count(horizon, "--horizon", MAX_HORIZON, least=0)
    if patience < 0:
        raise ConfigError(f"--patience must be >= 0, got {patience}")
    series = load_series(source, delimiter=delimiter)
    period = resolve_period(series, source, split, period, difference)
    split, period = _split_and_period(source, len(series), split, period)
    prepared = prepare(series, split, window, period=period, difference=difference, smooth=smooth)
    train_part = prepared.part(0, split)  # normalisation and LR come from the training part only
    config_cls, model_cls, defaults = FORECASTERS[model_name]
    model_config = build_config(config_cls, {
        **MODEL_DEFAULTS, "window": window, "loc": float(train_part.mean()),
        "scale": float(train_part.std() or 1.0), **(model_values or {}),
    }, "model")
    train_config = build_config(TrainConfig, {**defaults, **(train_values or {})}, "train")
    lr_found = False
    if lr_find is None:
        lr_find = "lr" not in (train_values or {})
    if lr_find:
        suggestion = find_lr(model_cls, model_config, train_config, train_part, shuffle_buffer)
        if suggestion is not None:
            train_config, lr_found = dataclasses.replace(train_config, lr=suggestion), True
    train_data = WindowDataset(train_part, model_config.window, shuffle_buffer=shuffle_buffer)
    # Validation windows end at each step from `split` on, so their inputs reach back into the training part.
    val_data = WindowDataset(prepared.part(split - model_config.window), model_config.window)
    stopper = early_stopping(patience)
    callbacks = (*stopper, *callbacks)

    saved = {"data": {"source": source, "split_time": split, "period": period,
                      "shuffle_buffer": shuffle_buffer,
                      "difference": prepared.difference.to_dict() if prepared.difference else None},
             "model": {"name": model_name, **to_dict(model_config)}, "train": to_dict(train_config)}
    torch.manual_seed(train_config.seed)
    model = model_cls(model_config)
    claim_output_folder(out, "a forecast run", may_replace=is_run_or_its_start)
    with RunDir(out) as run_dir:  # locked: one writer at a time
        run_dir.clear()
        run_dir.write_json(CONFIG_FILE, saved)
        trainer = Trainer(model, train_data, val_data, train_config, run_dir=run_dir, callbacks=callbacks).fit()
        actual = series[split:]
        forecast = prepared.restore(series, split, predict(trainer.model, val_data))
        scores = {model_name: errors(actual, forecast)}
        baselines = baseline_forecasts(series, split, period=period)
        scores.update({name: errors(actual, values) for name, values in baselines.items()})
        future = forecast_ahead(trainer.model, series, prepared, model_config.window, horizon) if horizon else None
        result = ForecastResult(model_name, split, actual, forecast, scores, baselines, trainer.step,
                                future=future, history=series, difference=prepared.difference,
                                lr=train_config.lr, lr_found=lr_found,
                                best_step=stopper[0].best_step if stopper else None)
        result.plot = plot_forecast(result, run_dir / "forecast.png")
        summary = {"model": model_name, "steps": trainer.step, "split_time": split, "period": period,
                   "validation_steps": len(actual), "mae": scores[model_name]["mae"], "scores": scores,
                   **forecast_summary(result)}
        run_dir.write_json(SUMMARY_FILE, summary)
    return result


def forecast_summary(result: ForecastResult) -> dict[str, Any]:
    """What this run adds to summary.json beyond the scores: differencing, learning rate, early stopping's
    best step, and the future (as a list) when a horizon was asked for."""
    return {"difference": result.difference.to_dict() if result.difference else None, "lr": result.lr,
            "lr_found": result.lr_found, "best_step": result.best_step,
            "future": None if result.future is None else [round(float(v), 6) for v in result.future]}

