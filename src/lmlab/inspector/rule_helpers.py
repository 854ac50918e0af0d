"""Small helpers the health rules share: numbers in words (`times`, `lr_text`), and readers of the
inspector's statistics (losses, the current rate, stacks of repeated layers, early and late windows).
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Any

from lmlab.inspector.stats import InspectorStats
from lmlab.inspector.thresholds import LEARNED_MARGIN, UPDATE_TARGET


def finite(values: list[Any]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def tail_mean(values: list[float], fraction: float = 0.1, least: int = 5) -> float:
    n = max(least, int(len(values) * fraction))
    return statistics.fmean(values[-n:])


def times(x: float) -> str:
    """A factor people can read: 4.2x, 370x, 3.7e10x."""
    if not math.isfinite(x):
        return "infinitely"
    if x < 10:
        return f"{x:.1f}x"
    if x < 1e4:
        return f"{x:.0f}x"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}x"


def lr_text(lr: float) -> str:
    """A learning rate as a user types it: 3e-3, 1e-6, 0.1, 1, 10."""
    if 0.01 <= lr < 1000:
        return f"{lr:.2g}"
    mantissa, exponent = f"{lr:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def round_lr(lr: float) -> float:
    return float(f"{lr:.0e}")


def power_of_ten(factor: float) -> str:
    return f"10^{round(math.log10(factor))}" if factor >= 1000 else times(factor).removesuffix("x")


def names_text(names: list[str], most: int = 3, noun: str = "layers") -> str:
    """A list of layer names, shortened: 'a, b, c' or 'a ... z (14 layers)'."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{names[0]} ... {names[-1]} ({len(names)} {noun})"


def window(values: list[Any], early: bool) -> list[Any]:
    k = max(1, len(values) // 3)
    return values[:k] if early else values[-k:]


def pattern(name: str) -> str:
    return re.sub(r"\d+", "#", name)


def stacks(stats: InspectorStats, key: str, kinds: tuple[str, ...]) -> dict[tuple[str, str], list[str]]:
    """Repeated layers (same kind, same name up to the numbers) with statistic `key`, in forward order."""
    order = stats.order or list(stats.layers)
    groups: dict[tuple[str, str], list[str]] = {}
    for name in order:
        layer = stats.layers.get(name)
        if layer is not None and layer.kind in kinds and getattr(layer, key):
            groups.setdefault((layer.kind, pattern(name)), []).append(name)
    return {k: v for k, v in groups.items() if len(v) >= 3}  # two layers can differ for many reasons


def losses(stats: InspectorStats) -> list[float]:
    return [r.loss for r in stats.loss]


def current_lr(stats: InspectorStats) -> float | None:
    if stats.lr:
        return stats.lr
    rates = finite([r.lr for r in stats.loss])
    return max(rates) if rates else None


def end_loss(stats: InspectorStats) -> float | None:
    values = finite(losses(stats))
    return tail_mean(values) if values else None


def lower_lr(stats: InspectorStats, ratio: float | None) -> tuple[float | None, str]:
    """The rate to try instead of a too-high one, and why: the model's default when the run is above it,
    otherwise the rate that brings the measured update:data ratio to 1e-3."""
    lr, default = current_lr(stats), stats.default_lr
    if lr is None:
        return None, ""
    if default and default < lr:
        return default, f"the model's default; {lr_text(lr)} is {times(lr / default)} it"
    if ratio is not None and ratio > UPDATE_TARGET:
        return round_lr(lr * 10 ** (UPDATE_TARGET - ratio)), "where the update:data ratio would be about 1e-3"
    return round_lr(lr / 10), "10x lower"


def now_text(lr: float | None) -> str:
    return f" (now {lr_text(lr)})" if lr else ""


def lower_lr_text(stats: InspectorStats) -> str:
    lr = current_lr(stats)
    suggestion, why = lower_lr(stats, None)
    return (f"lower train.lr (now {lr_text(lr)}) toward {lr_text(suggestion)} ({why})" if lr and suggestion
            else "lower the learning rate")


def update_ratios(stats: InspectorStats) -> dict[str, float]:
    """Median log10 update:data ratio of each weight matrix (biases and gains are left out, as in lecture 3)."""
    ratios = {}
    for name, p in stats.params.items():
        values = finite(p.update_data)
        if len(p.shape) >= 2 and values:
            ratios[name] = statistics.median(values)
    return ratios


def typical_update(stats: InspectorStats) -> float | None:
    ratios = update_ratios(stats)
    return statistics.median(ratios.values()) if ratios else None


def short_of_bigram(stats: InspectorStats) -> tuple[float, float] | None:
    """(final loss, counted bigram) when the run ended not clearly below its data's counted bigram (a model
    that sees one token, max_context 1, only has to reach it); None when it did, or without baselines."""
    end, base = end_loss(stats), stats.baselines
    if end is None or base is None or not base.bigram:
        return None
    margin = max(LEARNED_MARGIN, LEARNED_MARGIN * base.bigram)
    bar = base.bigram + margin if stats.max_context == 1 else base.bigram - margin
    return (end, base.bigram) if end > bar else None
