"""A forecasting run: load a series, split it by time, train a forecaster with lmlab's Trainer on windows of
the training part, forecast every validation step from the values before it, and score the model beside
every baseline. The run directory holds config.json, model.safetensors, metrics.jsonl, summary.json and
forecast.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.config import TrainConfig, build_config, to_dict
from lmlab.errors import ConfigError, DataError
from lmlab.series.baselines import baseline_forecasts, errors
from lmlab.series.conv_lstm import ConvLSTMForecaster, ConvLSTMForecasterConfig
from lmlab.series.data import SYNTHETIC, WindowDataset, load_series, split_time
from lmlab.series.linear import LinearForecaster, LinearForecasterConfig
from lmlab.series.mlp import MLPForecaster, MLPForecasterConfig
from lmlab.training.run_dir import CONFIG_FILE, SUMMARY_FILE, RunDir
from lmlab.training.trainer import Trainer

# name -> (config class, model class, training defaults that suit it)
FORECASTERS: dict[str, tuple[type, type, dict[str, Any]]] = {
    "linear": (LinearForecasterConfig, LinearForecaster,
               {"lr": 1e-2, "weight_decay": 0.0, "max_steps": 3000, "eval_interval": 500}),
    "mlp": (MLPForecasterConfig, MLPForecaster,
            {"lr": 3e-3, "weight_decay": 0.0, "max_steps": 3000, "eval_interval": 500}),
    "conv_lstm": (ConvLSTMForecasterConfig, ConvLSTMForecaster,
                  {"lr": 3e-3, "weight_decay": 0.0, "max_steps": 1500, "eval_interval": 500}),
}


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


def _split_and_period(
    source: str, length: int, split: int | None, period: int | None
) -> tuple[int, int | None]:
    if source == "synthetic":  # the reference's own period and split (REFERENCES.md)
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
) -> ForecastResult:
    if model_name not in FORECASTERS:
        raise ConfigError(f"unknown forecaster {model_name!r}; choose one of {', '.join(FORECASTERS)}")
    series = load_series(source)
    split, period = _split_and_period(source, len(series), split, period)
    if window >= split:
        raise DataError(f"--window {window} needs over {window} training steps; validation starts at {split}")
    train_part = series[:split]
    config_cls, model_cls, defaults = FORECASTERS[model_name]
    model_config = build_config(config_cls, {
        "window": window, "loc": float(train_part.mean()), "scale": float(train_part.std() or 1.0),
        **(model_values or {}),
    }, "model")
    train_config = build_config(TrainConfig, {**defaults, **(train_values or {})}, "train")
    train_data = WindowDataset(train_part, model_config.window, shuffle_buffer=shuffle_buffer)
    # Validation windows end at each step from `split` on, so their inputs reach back into the training part.
    val_data = WindowDataset(series[split - model_config.window :], model_config.window)

    saved = {"data": {"source": source, "split_time": split, "period": period,
                      "shuffle_buffer": shuffle_buffer},
             "model": {"name": model_name, **to_dict(model_config)}, "train": to_dict(train_config)}
    torch.manual_seed(train_config.seed)
    model = model_cls(model_config)
    with RunDir(out) as out:  # locked: one writer at a time
        out.clear()
        out.write_json(CONFIG_FILE, saved)
        trainer = Trainer(model, train_data, val_data, train_config, run_dir=out, callbacks=callbacks).fit()
        return _finish(out, model_name, trainer, series, split, period, val_data)


def _finish(out: RunDir, model_name: str, trainer: Trainer, series: np.ndarray, split: int, period: int | None,
            val_data: WindowDataset) -> ForecastResult:
    """Score the model and every baseline on the validation part; write the plot and summary.json."""
    actual = series[split:]
    forecast = predict(trainer.model, val_data)
    scores = {model_name: errors(actual, forecast)}
    baselines = baseline_forecasts(series, split, period=period)
    scores.update({name: errors(actual, values) for name, values in baselines.items()})
    result = ForecastResult(model_name, split, actual, forecast, scores, baselines, trainer.step)
    result.plot = plot_forecast(result, out / "forecast.png")
    summary = {"model": model_name, "steps": trainer.step, "split_time": split, "period": period,
               "validation_steps": len(actual), "scores": scores}
    out.write_json(SUMMARY_FILE, summary)
    return result


def plot_forecast(result: ForecastResult, path: Path) -> Path:
    """Actual values against the model's forecast (and the best baseline, dashed) over the validation part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    time = np.arange(result.split, result.split + len(result.actual))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(time, result.actual, color="0.55", linewidth=1, label="actual")
    model_mae = result.scores[result.model_name]["mae"]
    ax.plot(time, result.forecast, color="tab:blue", linewidth=1.4,
            label=f"{result.model_name} (MAE {model_mae:.3f})")
    if result.baselines:
        best = min(result.baselines, key=lambda name: result.scores[name]["mae"])
        ax.plot(time, result.baselines[best], color="tab:orange", linewidth=1, linestyle="--",
                label=f"{best} (MAE {result.scores[best]['mae']:.3f})")
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.set_title(f"forecast of the validation part (from step {result.split})")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
