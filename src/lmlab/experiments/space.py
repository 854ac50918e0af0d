"""A sweep's search space, from `--set` values: a list (`train.lr=1e-3,3e-3,1e-2`) or a range
(`model.n_embd=64:256`, `train.lr=1e-4:1e-2:log`); any other `--set` is a fixed value of every trial.

Each swept key becomes one Optuna distribution (categorical for a list; int or float, linear or log, for a
range: int where the config field is an int). A grid takes a list as is and a range as `grid_points` values
spaced evenly (on a log scale for `:log`).
"""

from __future__ import annotations

import itertools
import math
import typing
from dataclasses import dataclass
from typing import Any

from lmlab.config import DataConfig, TrainConfig, Typed, coerce
from lmlab.errors import ConfigError
from lmlab.models import REGISTRY
from lmlab.names import did_you_mean

GridValue = bool | int | float | str


@dataclass(frozen=True, kw_only=True, slots=True)
class Axis:
    """One swept config key: a list of choices, or a range [low, high] (log-spaced if `log`)."""

    key: str  # "section.name", as --set spells it
    choices: tuple[GridValue, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return not self.choices

    def grid(self, points: int) -> tuple[GridValue, ...]:
        if not self.is_range:
            return self.choices
        if points == 1:
            values = [self.low]
        elif self.log:
            ratio = (self.high / self.low) ** (1 / (points - 1))
            values = [self.low * ratio**i for i in range(points)]
        else:
            values = [self.low + (self.high - self.low) * i / (points - 1) for i in range(points)]
        if self.integer:
            return tuple(dict.fromkeys(int(round(v)) for v in values))
        return tuple(float(f"{v:.6g}") for v in values)

    def distribution(self):
        import optuna

        if not self.is_range:
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.integer:
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def suggest(self, trial) -> GridValue:
        """This axis' value for an Optuna trial (the enqueued or retried value when the trial has one)."""
        if not self.is_range:
            return trial.suggest_categorical(self.key, self.choices)
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


def field_type(key: str, model_name: str) -> Any:
    """The type hint of config key "section.name" (ConfigError for an unknown key)."""
    section, _, name = key.partition(".")
    classes = {"data": DataConfig, "train": TrainConfig}
    if section == "model":
        if name == "name":
            return str
        cls = REGISTRY[model_name].config_cls
    elif section in classes:
        cls = classes[section]
    else:
        raise ConfigError(f"--set {key}: unknown section {section!r}; "
                          f"{did_you_mean(section, ('data', 'model', 'train'))}sections are data, model, train")
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ConfigError(f"--set {key}: unknown key; {did_you_mean(name, hints, f'{section}.')}{section} takes: "
                          f"{', '.join(sorted(hints))}")
    return hints[name]


def _is_int_type(tp: Any) -> bool:
    return tp is int or int in typing.get_args(tp) and float not in typing.get_args(tp)


def parse_axis(key: str, value: str, model_name: str) -> Axis | None:
    """The axis `--set key=value` sweeps, or None when `value` is one fixed value."""
    tp = field_type(key, model_name)
    if "," in value:
        choices = tuple(coerce(Typed(v.strip()), tp, key) for v in value.split(",") if v.strip())
        if len(choices) < 2 or len(set(choices)) != len(choices):
            raise ConfigError(f"--set {key}={value}: a swept list needs two or more distinct values")
        return Axis(key=key, choices=choices)
    parts = value.split(":")
    if len(parts) == 1 or (len(parts) == 2 and not parts[1]) or key == "data.source":
        return None
    if len(parts) > 3 or (len(parts) == 3 and parts[2] != "log"):
        raise ConfigError(f"--set {key}={value}: a range is LOW:HIGH or LOW:HIGH:log")
    numeric = {int, float} & ({tp} | set(typing.get_args(tp)))
    if not numeric:
        return None  # a text value that holds a colon
    integer = _is_int_type(tp)
    number = int if integer else float
    try:
        low, high = (number(coerce(Typed(p), number, key)) for p in parts[:2])
    except ConfigError:
        raise ConfigError(f"--set {key}={value}: a range needs numbers and {key} takes {tp}") from None
    log = len(parts) == 3
    if not low < high or (log and low <= 0) or not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"--set {key}={value}: a range needs LOW < HIGH (and LOW > 0 on a log scale)")
    return Axis(key=key, low=low, high=high, log=log, integer=integer)


def split_sets(pairs: list[str], model_name: str) -> tuple[list[Axis], list[str]]:
    """(the swept axes, the --set pairs that are fixed values) of a sweep's --set options."""
    axes, fixed = [], []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set takes SECTION.KEY=VALUE (e.g. train.lr=1e-3,3e-3), got {pair!r}")
        axis = parse_axis(key.strip(), value.strip(), model_name)
        if axis is None:
            fixed.append(pair)
        else:
            axes.append(axis)
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--set sweeps {keys[0]} twice")
    return axes, fixed


def grid_points(axes: list[Axis], points: int) -> list[dict[str, GridValue]]:
    """Every combination of the axes' grid values, the first axis changing slowest."""
    return [dict(zip((a.key for a in axes), combo, strict=True))
            for combo in itertools.product(*(a.grid(points) for a in axes))]


def as_layers(params: dict[str, GridValue]) -> dict[str, dict[str, GridValue]]:
    """{"train.lr": 0.01} -> {"train": {"lr": 0.01}}."""
    layers: dict[str, dict[str, GridValue]] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        layers.setdefault(section, {})[name] = value
    return layers
