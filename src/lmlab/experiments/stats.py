"""The statistics every table and comparison uses: a mean with its standard error over seeds, and the
difference of two results with its standard error and a two-sided p-value.

Three ways to pair a difference, strongest first:
- by seed: both sides trained the same seeds; the per-seed differences are the units (a paired t-test).
  Each per-seed value is scored on the same evaluation tokens, so the text's own difficulty cancels too.
- over seeds, unpaired: both sides have two or more seeds but not the same ones (Welch's t-test).
- by evaluation unit: one run a side; the units are the examples (lines mode) or blocks of the stream both
  runs score (as benchmarks/ablation.py pairs them), so the SE covers which text was scored, not how the
  training's randomness would have fallen with another seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SIGNIFICANCE = 0.05  # a difference with p below this is reported as a difference


@dataclass(frozen=True, kw_only=True, slots=True)
class MeanSE:
    """A mean over `n` values (seeds) and its standard error (None for one value)."""

    mean: float
    se: float | None
    n: int

    def format(self, digits: int = 4) -> str:
        return f"{self.mean:.{digits}f}" + ("" if self.se is None else f" ± {self.se:.{digits}f}")


def mean_se(values: Sequence[float]) -> MeanSE:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n))."""
    n = len(values)
    if not n:
        raise ValueError("mean_se needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return MeanSE(mean=mean, se=None, n=n)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return MeanSE(mean=mean, se=math.sqrt(variance / n), n=n)


@dataclass(frozen=True, kw_only=True, slots=True)
class Difference:
    """a - b with its standard error, the two-sided p-value of "no difference", and how it was paired."""

    delta: float
    se: float
    p_value: float
    units: int  # seeds, or evaluation units
    method: str  # "paired by seed", "unpaired over seeds", "paired by evaluation unit"

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE

    def format(self, digits: int = 4) -> str:
        return f"{self.delta:+.{digits}f} ± {self.se:.{digits}f} (p {format_p(self.p_value)})"


def format_p(p: float) -> str:
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"


def _two_sided_t(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom; the normal distribution for df = inf."""
    if math.isinf(t):
        return 0.0
    if math.isnan(t):
        return 1.0
    if math.isinf(df):
        return math.erfc(abs(t) / math.sqrt(2))
    try:
        from scipy import stats
    except ImportError:
        from lmlab.errors import ConfigError

        raise ConfigError("p-values over a few seeds need scipy (Student's t): pip install 'lmlab[sweep]'") from None
    return float(2 * stats.t.sf(abs(t), df))


def _from_se(delta: float, se: float, df: float) -> float:
    if se == 0:
        return 1.0 if delta == 0 else 0.0
    return _two_sided_t(delta / se, df)


def paired_by_seed(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Per-seed values of the two sides, in the same seed order (at least two seeds)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("pairing by seed needs the same two or more seeds on both sides")
    diff = mean_se([x - y for x, y in zip(a, b, strict=True)])
    return Difference(delta=diff.mean, se=diff.se, p_value=_from_se(diff.mean, diff.se, len(a) - 1),
                      units=len(a), method="paired by seed")


def unpaired_over_seeds(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Welch's t-test of two groups of per-seed values (two or more each)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("an unpaired comparison over seeds needs two or more seeds a side")
    ma, mb = mean_se(a), mean_se(b)
    va, vb = ma.se**2, mb.se**2
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb else math.inf
    delta = ma.mean - mb.mean
    return Difference(delta=delta, se=se, p_value=_from_se(delta, se, df), units=len(a) + len(b),
                      method="unpaired over seeds")


def paired_by_unit(a_sums: Sequence[float], b_sums: Sequence[float], tokens: int) -> Difference:
    """Summed NLL of each evaluation unit on both sides (the same units, the same order) and the number of
    predicted tokens they hold: the difference in mean NLL per token and its SE over the units (the units
    are many, so the p-value is the normal one)."""
    if len(a_sums) != len(b_sums) or len(a_sums) < 2:
        raise ValueError("pairing by evaluation unit needs the same two or more units on both sides")
    diffs = [x - y for x, y in zip(a_sums, b_sums, strict=True)]
    n = len(diffs)
    mean_unit = math.fsum(diffs) / n
    std = math.sqrt(math.fsum((d - mean_unit) ** 2 for d in diffs) / (n - 1))
    delta, se = math.fsum(diffs) / tokens, std * math.sqrt(n) / tokens
    return Difference(delta=delta, se=se, p_value=_from_se(delta, se, math.inf), units=n,
                      method="paired by evaluation unit")
