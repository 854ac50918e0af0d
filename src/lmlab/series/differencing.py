"""Seasonal differencing, the trick that makes the course's best baseline: forecast the change since one period
ago instead of the value, then add the previous period back. Any forecaster can work on the differenced
series; `restore` turns its forecasts back into the series' units.

The value added back is a centred mean of `smooth` values around t - period (the course's
series[t - 370 : t - 360] for smooth 10 and period 365): one noisy value from a year ago would carry its noise
into every forecast. All of them lie before t as long as smooth // 2 < period.

`detect_period` finds a season from the autocorrelation of the training part, after removing a linear trend
(which would otherwise make every lag look alike): the highest local maximum of the autocorrelation at lags up
to half the part's length, when it is at least `min_acf`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.errors import DataError

DEFAULT_SMOOTH = 10  # the course's -370:-360


def autocorrelation(values: np.ndarray) -> np.ndarray:
    """ac[lag] for lag in 0 .. n - 1 of the linearly detrended values (ac[0] = 1), by FFT."""
    x = np.asarray(values, dtype=np.float64)
    t = np.arange(len(x))
    if len(x) > 1:
        x = x - np.polyval(np.polyfit(t, x, 1), t)
    x = x - x.mean()
    n = len(x)
    spectrum = np.fft.rfft(x, 2 * n)  # zero-padded: the circular correlation is then the linear one
    ac = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    return ac / ac[0] if ac[0] > 0 else np.zeros(n)


def detect_period(values: np.ndarray, *, min_acf: float = 0.3, min_lag: int = 2) -> int | None:
    """The lag of the strongest autocorrelation peak (lags up to half the length), or None if under min_acf."""
    ac = autocorrelation(values)
    peaks = [lag for lag in range(min_lag, len(ac) // 2) if ac[lag] > ac[lag - 1] and ac[lag] >= ac[lag + 1]]
    if not peaks:
        return None
    best = max(peaks, key=lambda lag: ac[lag])
    return best if ac[best] >= min_acf else None


def default_smooth(period: int) -> int:
    """The course's 10 for long seasons; at most a quarter period for short ones, so it stays local."""
    return max(1, min(DEFAULT_SMOOTH, period // 4))


@dataclass(frozen=True)
class SeasonalDifference:
    period: int
    smooth: int = 1

    def __post_init__(self) -> None:
        if self.period < 1:
            raise DataError(f"--difference takes a period of at least 1, got {self.period}")
        if not self.smooth >= 1 or self.smooth // 2 >= self.period:
            raise DataError(f"--smooth must be in [1, {2 * self.period}) for period {self.period}, got "
                            f"{self.smooth}")

    @property
    def first(self) -> int:
        """The first step that has a whole smoothed period behind it."""
        return self.period + self.smooth // 2

    def base_at(self, values: np.ndarray, t: int) -> float:
        """What is added back at step t: the mean of `smooth` values centred on t - period."""
        lo = t - self.period - self.smooth // 2
        return float(np.mean(values[lo : lo + self.smooth]))

    def base(self, values: np.ndarray) -> np.ndarray:
        """base_at(t) for every t >= first (NaN before), via a cumulative sum."""
        x = np.asarray(values, dtype=np.float64)
        out = np.full(len(x), np.nan)
        if len(x) <= self.first:
            return out
        sums = np.cumsum(np.concatenate([[0.0], x]))
        means = (sums[self.smooth :] - sums[: -self.smooth]) / self.smooth  # means[i] = mean(x[i : i + smooth])
        out[self.first :] = means[: len(x) - self.first]
        return out

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The differenced series from step `first` on: values[t] - base(t), float32."""
        x = np.asarray(values, dtype=np.float64)
        if len(x) <= self.first:
            raise DataError(f"differencing at period {self.period} (smoothed over {self.smooth}) needs more "
                            f"than {self.first} steps, got {len(x)}")
        return (x - self.base(x))[self.first :].astype(np.float32)

    def restore(self, values: np.ndarray, start: int, forecast: np.ndarray) -> np.ndarray:
        """Forecasts of the differenced series at steps start, start + 1, .. back in the series' units."""
        base = self.base(values)[start : start + len(forecast)]
        return (np.asarray(forecast, dtype=np.float64) + base).astype(np.float32)

    def to_dict(self) -> dict[str, int]:
        return {"period": self.period, "smooth": self.smooth}
