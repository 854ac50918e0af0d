"""Where a 1-D series comes from (the seeded synthetic series, or a CSV column), how it is split by time, and
how it is cut into (window[:-1], window[-1]) pairs: the tf.data recipe of the notes, in PyTorch.

    tf.data                                  here
    Dataset.from_tensor_slices(series)       WindowDataset(series, ...)
    .window(W + 1, shift=S, drop_remainder)  .windows: (N, W + 1), row i starts at i * S
    .shuffle(shuffle_buffer)                 shuffled(): a buffer of windows, one drawn at random
    .map(lambda w: (w[:-1], w[-1]))          each batch splits into inputs (B, W) and targets (B,)
    .batch(batch_size)                       sample_batch() / iter_batches()

Shape legend: N windows, W window size (inputs per example), B batch.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lmlab.errors import DataError
from lmlab.files import not_a_file

# The TensorFlow time-series course's synthetic series: 4 years of daily values, split at step 1000.
SYNTHETIC = {"length": 4 * 365 + 1, "baseline": 10.0, "slope": 0.05, "period": 365, "amplitude": 40.0,
             "noise": 5.0, "seed": 42, "split_time": 1000}


# ----------------------------------------------------------------------------------------------------------
# Sources


def seasonal_pattern(season_time: np.ndarray) -> np.ndarray:
    """One period's shape on [0, 1): a cosine bump early in the period, then an exponential decay."""
    return np.where(season_time < 0.4, np.cos(season_time * 2 * np.pi), 1 / np.exp(3 * season_time))


def synthetic_series(
    length: int = SYNTHETIC["length"],
    *,
    baseline: float = SYNTHETIC["baseline"],
    slope: float = SYNTHETIC["slope"],
    period: int = SYNTHETIC["period"],
    amplitude: float = SYNTHETIC["amplitude"],
    noise: float = SYNTHETIC["noise"],
    seed: int = SYNTHETIC["seed"],
) -> np.ndarray:
    """baseline + linear trend + seasonality + Gaussian noise, float32 of shape (length,). The noise comes
    from numpy's legacy RandomState, the generator the course used, so the same seed gives its series."""
    time = np.arange(length, dtype=np.float64)
    season = amplitude * seasonal_pattern((time % period) / period)
    noise_values = np.random.RandomState(seed).randn(length) * noise
    return (baseline + slope * time + season + noise_values).astype(np.float32)


DELIMITERS = ",;\t|"


def _sniff_delimiter(fh) -> str:
    """The delimiter csv.Sniffer sees in the file's start (',', ';', tab or '|'); ',' when it cannot tell."""
    sample = fh.read(8192)
    fh.seek(0)
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def read_csv_column(path: str | Path, column: str, *, delimiter: str | None = None) -> np.ndarray:
    """The named column of a CSV file (with a header row) as float32, in file order. The delimiter is
    detected (csv.Sniffer: ',', ';', tab or '|') unless given."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise DataError(f"{path}: no such file" if problem == "missing" else
                        f"{path}: a CSV file expected, not {problem}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            sep = delimiter or _sniff_delimiter(fh)
            reader = csv.reader(fh, delimiter=sep)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: empty file; expected a header row naming the columns")
            header = [h.strip() for h in header]
            if column not in header:
                hint = ""
                other = [d for d in DELIMITERS if d != sep and any(d in h for h in header)]
                if other:  # e.g. one column named 'date;temp': the file is split by something else
                    hint = f": is the file separated by {other[0]!r}? pass --delimiter {other[0]!r}"
                raise DataError(f"{path}: no column {column!r}; columns are "
                                f"{', '.join(repr(h) if other else h for h in header)}{hint}")
            index = header.index(column)
            values = []
            for line_no, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue  # blank lines carry no value
                cell = row[index].strip() if index < len(row) else ""
                try:
                    value = float(cell)
                except ValueError:
                    raise DataError(f"{path}:{line_no}: column {column!r} holds {cell!r}, not a number"
                                    ) from None
                if not math.isfinite(value):
                    raise DataError(f"{path}:{line_no}: column {column!r} holds {cell!r}, not finite")
                values.append(value)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; is this a CSV file?") from None
    return np.asarray(values, dtype=np.float32)


def load_series(source: str, *, delimiter: str | None = None) -> np.ndarray:
    """`synthetic` or `FILE.csv:COLUMN`."""
    if source == "synthetic":
        return synthetic_series()
    path, sep, column = source.rpartition(":")
    if not sep or not path or not column:
        raise DataError(f"--data takes 'synthetic' or FILE.csv:COLUMN, got {source!r}")
    return read_csv_column(path, column, delimiter=delimiter)


# ----------------------------------------------------------------------------------------------------------
# Splitting by time


def split_time(length: int, *, period: int | None = None, val_fraction: float = 0.3) -> int:
    """Where validation starts. With a period, training keeps whole periods, so each season is seen as
    often as the others and a seasonal baseline can reach one period back from the first validation step."""
    split = int(length * (1 - val_fraction))
    if period:
        split = (split // period) * period
        if split < period:
            raise DataError(f"the series has {length} steps: too short to train on a whole period ({period})")
    if not 0 < split < length:
        raise DataError(f"the series has {length} steps: too short to split into training and validation")
    return split


# ----------------------------------------------------------------------------------------------------------
# Windows


class WindowDataset:
    """(inputs (B, W), targets (B,)) batches of windows of a 1-D series. `count_targets` tells the trainer
    this is not a token dataset, so it counts examples and evaluates the model's own loss."""

    def __init__(self, series: np.ndarray | Tensor, window: int, *, shift: int = 1,
                 shuffle_buffer: int = 1000):
        if window < 1 or shift < 1 or shuffle_buffer < 1:
            raise DataError(f"window ({window}), shift ({shift}) and shuffle buffer ({shuffle_buffer}) "
                            "must be at least 1")
        values = torch.as_tensor(np.asarray(series, dtype=np.float32))
        if values.dim() != 1:
            raise DataError(f"a series is 1-D, got shape {tuple(values.shape)}")
        if len(values) < window + 1:
            raise DataError(f"a series of {len(values)} steps has no window of {window} inputs plus a target")
        self.unit = "windows"  # what the trainer counts and shows a rate of (windows/s), for tokens
        self.window, self.shift, self.shuffle_buffer = window, shift, shuffle_buffer
        self.block_size = window
        # drop_remainder: only full windows of W + 1 values; row i starts at step i * shift.
        self.windows = values.unfold(0, window + 1, shift)  # (N, W + 1)
        self._stream: Iterator[Tensor] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def num_predictions(self) -> int:
        return len(self.windows)

    @staticmethod
    def count_targets(targets: Tensor) -> int:
        return targets.numel()

    @staticmethod
    def _pairs(windows: Tensor) -> tuple[Tensor, Tensor]:
        return windows[:, :-1], windows[:, -1]  # (B, W), (B,)

    def shuffled(self, generator: torch.Generator) -> Iterator[Tensor]:
        """One pass over the windows through a shuffle buffer, as tf.data's shuffle: fill the buffer, emit a
        random element and put the next window in its place. A buffer as large as the data shuffles fully."""
        buffer: list[int] = []
        for index in range(len(self.windows)):
            if len(buffer) < self.shuffle_buffer:
                buffer.append(index)
                continue
            pick = int(torch.randint(len(buffer), (1,), generator=generator))
            yield self.windows[buffer[pick]]
            buffer[pick] = index
        while buffer:
            pick = int(torch.randint(len(buffer), (1,), generator=generator))
            yield self.windows[buffer.pop(pick)]

    def _endless(self, generator: torch.Generator) -> Iterator[Tensor]:
        while True:  # dataset.repeat(): epoch after epoch, each shuffled afresh
            yield from self.shuffled(generator)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The next batch of the endless shuffled stream (batches may straddle epochs)."""
        if self._stream is None:
            self._stream = self._endless(generator)
        return self._pairs(torch.stack([next(self._stream) for _ in range(batch_size)]))

    def iter_batches(self, batch_size: int, max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Every window once, in time order (for evaluation and forecasting)."""
        seen = 0
        for start in range(0, len(self.windows), batch_size):
            yield self._pairs(self.windows[start : start + batch_size])
            seen += min(batch_size, len(self.windows) - start)
            if max_tokens is not None and seen >= max_tokens:
                return
