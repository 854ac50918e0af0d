"""Small helpers the health rules share: the finding record, numbers in words (`times`, `lr_text`),
and readers of the inspector's statistics (losses, the current rate, stacks of repeated layers, early and late
windows).
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Any


def _finding(severity: str, rule: str, layer: str | None, what: str, numbers: dict[str, Any], fix: str,
             since: int | None = None):
    return {"severity": severity, "rule": rule, "layer": layer, "what": what, "numbers": numbers, "fix": fix,
            "since_step": since}


def _finite(values: list[Any]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _tail_mean(values: list[float], fraction: float = 0.1, least: int = 5) -> float:
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


def _round_lr(lr: float) -> float:
    return float(f"{lr:.0e}")


def _power_of_ten(factor: float) -> str:
    return f"10^{round(math.log10(factor))}" if factor >= 1000 else times(factor).removesuffix("x")


def _names_text(names: list[str], most: int = 3, noun: str = "layers") -> str:
    """A list of layer names, shortened: 'a, b, c' or 'a ... z (14 layers)'."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{names[0]} ... {names[-1]} ({len(names)} {noun})"


def _window(values: list[Any], early: bool) -> list[Any]:
    k = max(1, len(values) // 3)
    return values[:k] if early else values[-k:]


def _pattern(name: str) -> str:
    return re.sub(r"\d+", "#", name)


def _stacks(stats: dict[str, Any], key: str, kinds: tuple[str, ...]) -> dict[tuple[str, str], list[str]]:
    """Repeated layers (same kind, same name up to the numbers) with statistic `key`, in forward order."""
    order = stats.get("order") or list(stats["layers"])
    groups: dict[tuple[str, str], list[str]] = {}
    for name in order:
        layer = stats["layers"].get(name, {})
        if layer.get("kind") in kinds and layer.get(key):
            groups.setdefault((layer["kind"], _pattern(name)), []).append(name)
    return {k: v for k, v in groups.items() if len(v) >= 3}  # two layers can differ for many reasons


def _losses(stats: dict[str, Any]) -> list[float]:
    return [r[1] for r in stats.get("loss", [])]


def _current_lr(stats: dict[str, Any]) -> float | None:
    if stats.get("lr"):
        return stats["lr"]
    rates = _finite([r[2] for r in stats.get("loss", [])])
    return max(rates) if rates else None


def _end_loss(stats: dict[str, Any]) -> float | None:
    losses = _finite(_losses(stats))
    return _tail_mean(losses) if losses else None
