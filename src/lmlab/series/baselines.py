"""Forecasts without learning, the yardsticks a model must beat. Each returns the forecast of series[t] for
every t in [start, len(series)), made only from values before t.

- naive: the last value, series[t - 1].
- moving average: the mean of the `window` values before t.
- seasonal: remove the period by differencing at lag `period`, forecast the differenced series by its moving
  average, then add back the value one period earlier (optionally smoothed by a centred moving average of
  `smooth` values around t - period, which lie in the past as long as smooth // 2 < period).
"""

from __future__ import annotations

import numpy as np

from lmlab.errors import DataError


def _check(series: np.ndarray, start: int, history: int, name: str) -> np.ndarray:
    series = np.asarray(series, dtype=np.float64)
    if start < history:
        raise DataError(f"the {name} baseline needs {history} steps of history before step {start}")
    if start >= len(series):
        raise DataError(f"nothing to forecast: step {start} is past the series' end ({len(series)} steps)")
    return series


def _trailing_means(values: np.ndarray, window: int) -> np.ndarray:
    """out[i] = mean(values[i : i + window]) for every full window, via a cumulative sum."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    return (sums[window:] - sums[:-window]) / window


def naive_forecast(series: np.ndarray, start: int) -> np.ndarray:
    series = _check(series, start, 1, "naive")
    return series[start - 1 : -1]


def moving_average_forecast(series: np.ndarray, start: int, window: int) -> np.ndarray:
    series = _check(series, start, window, f"{window}-step moving average")
    # The mean of series[t - window : t] for t = start ..: windows starting at start - window.
    return _trailing_means(series, window)[start - window : len(series) - window]


def seasonal_forecast(
    series: np.ndarray, start: int, *, period: int, window: int, smooth: int = 1
) -> np.ndarray:
    """Moving average (over `window` steps) of the period-differenced series, plus the previous period's
    value (a centred mean of `smooth` values when smooth > 1)."""
    if smooth < 1 or smooth // 2 >= period:
        raise DataError(f"the seasonal baseline's smoothing must be in [1, {2 * period}), got {smooth}")
    series = _check(series, start, period + window + smooth // 2, "seasonal")
    n = len(series)
    diff = series[period:] - series[:-period]  # diff[j] = series[j + period] - series[j]
    # Forecast of diff at t: its mean over t - window .. t - 1, i.e. diff indices t - period - window ...
    diff_forecast = _trailing_means(diff, window)[start - period - window : n - period - window]
    # Centred on t - period: from t - period - smooth // 2, `smooth` values (the course's -370:-360 for 10).
    lo = start - period - smooth // 2
    past = _trailing_means(series, smooth)[lo : lo + n - start]
    return past + diff_forecast


def baseline_forecasts(
    series: np.ndarray, start: int, *, period: int | None, ma_window: int = 30, diff_window: int = 50,
    smooth: int = 10,
) -> dict[str, np.ndarray]:
    """Every baseline that the series' length and period allow, by name."""
    forecasts = {"naive": naive_forecast(series, start)}
    if start >= ma_window:
        forecasts[f"moving average {ma_window}"] = moving_average_forecast(series, start, ma_window)
    if period and start >= period + diff_window + smooth // 2:
        forecasts[f"seasonal diff + MA {diff_window}"] = seasonal_forecast(
            series, start, period=period, window=diff_window)
        forecasts[f"seasonal diff + MA {diff_window}, past smoothed {smooth}"] = seasonal_forecast(
            series, start, period=period, window=diff_window, smooth=smooth)
    return forecasts


def errors(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    """MAE and MSE of a forecast against the actual values."""
    diff = np.asarray(forecast, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {"mae": float(np.abs(diff).mean()), "mse": float((diff**2).mean())}
