"""A run's configuration: the data, model and train sections resolved into frozen dataclasses, and the model
that config names, built with the sizes only the data knows.

Layers, weakest first: TrainConfig's defaults < the model's own training defaults (models.REGISTRY) <
a config file < named command-line options < `--set section.key=value`. The batch and context that took a
default are noted (RunConfig.defaulted), so a run may fit them to its vocabulary (run/fit_defaults.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from lmlab import __version__
from lmlab.config import DataConfig, TrainConfig, Typed, build_config, merge, parse_budget, to_dict
from lmlab.errors import ConfigError
from lmlab.models import DEFAULT_MODEL, REGISTRY
from lmlab.models.size import check_model_fits
from lmlab.names import did_you_mean
from lmlab.tokenizers import Tokenizer

SECTIONS = ("data", "model", "train")
# The values a run may fit to its data (run/fit_defaults.py) or its budget (run/plan.py) when the user left
# them to the defaults.
FITTED_KEYS = ("train.batch_size", "data.block_size", "train.warmup_steps", "train.eval_interval",
               "train.eval_max_tokens")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    data: DataConfig
    model_name: str
    model: Any  # the chosen model's config dataclass
    train: TrainConfig
    # Which of FITTED_KEYS took a default rather than a value the user gave: resolve_config fills it in; a
    # RunConfig built by hand has none, so nothing of it is changed. Not saved: config.json holds every value.
    defaulted: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lmlab_version": __version__,
            "data": to_dict(self.data),
            "model": {"name": self.model_name, **to_dict(self.model)},
            "train": to_dict(self.train),
        }


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """{section: {key: value}} dicts merged left to right: later layers win."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)
    return merged


def resolve_config(values: dict[str, Any] | RunConfig) -> RunConfig:
    """{'data': {...}, 'model': {'name': ..., ...}, 'train': {...}} -> RunConfig, layering the model's own
    training defaults between TrainConfig's defaults and the user's values."""
    if isinstance(values, RunConfig):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"a config is a dict of sections ({', '.join(SECTIONS)}), got {type(values).__name__}")
    complete = "lmlab_version" in values  # RunConfig.to_dict()'s: every value written out, none chosen by hand
    values = {k: v for k, v in values.items() if k != "lmlab_version"}
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}; {did_you_mean(unknown[0], SECTIONS)}sections "
                          f"are {', '.join(SECTIONS)}")
    for section in SECTIONS:
        if not isinstance(values.get(section, {}), dict):
            raise ConfigError(f"config section {section!r} must be a table of key = value, got "
                              f"{type(values[section]).__name__}")
    model_values = dict(values.get("model", {}))
    name = model_values.pop("name", None) or DEFAULT_MODEL
    if not isinstance(name, str) or name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; {did_you_mean(name, REGISTRY)}choose one of "
                          f"{', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    given = {f"{section}.{key}" for section in ("data", "train") for key in values.get(section, {})}
    train_values = merge({"train": spec.train_defaults}, {"train": values.get("train", {})})["train"]
    # In a complete config, max_steps is TrainConfig's default written out beside a budget not yet spent (a seed
    # group's, a sweep trial's): the budget decides. A run folder's config.json holds no work budget (spent).
    train_values = _budget_values(train_values, given - {"train.max_steps"} if complete else given)
    return RunConfig(
        data=build_config(DataConfig, dict(values.get("data", {})), "data"),
        model_name=name,
        model=build_config(spec.config_cls, model_values, "model"),
        train=build_config(TrainConfig, train_values, "train"),
        defaulted=frozenset(FITTED_KEYS) - given,
    )


def upgrade_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json in today's keys. Before work budgets (lmlab 0.1.0 wrote no budget key) a time
    budget (`time_budget`, re-fitted while training by `fit_schedule`) is dropped: the schedule it last fitted
    is in the run's checkpoint and a resume follows it to its end, where a new clock would change the run. A
    work budget a run folder holds (written by hand) is spent already: its steps are the run's max_steps."""
    train = saved.get("train")
    if not isinstance(train, dict):
        return saved
    train = {k: v for k, v in train.items() if k not in ("time_budget", "fit_schedule")}
    try:
        budget = parse_budget(train.get("budget", ""))
    except ConfigError:
        return {**saved, "train": train}  # resolving it names what is wrong
    if budget is not None and not budget.is_time:
        train["budget"] = ""
    return {**saved, "train": train}


def _budget_values(train: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The train values with the budget's rules applied: a max_steps the user gave wins over a budget the
    model's defaults name; a work budget and max_steps both given is a contradiction; a time budget runs the
    wsd schedule unless the user chose one (cosine and step decay need the steps known before the run)."""
    train = dict(train)
    if "train.max_steps" in given and "train.budget" not in given:
        train["budget"] = ""
    budget = parse_budget(train.get("budget", ""))
    if budget is None:
        return train
    if not budget.is_time and "train.max_steps" in given:
        raise ConfigError(f"train.budget={train['budget']} and train.max_steps both say how long to train; give one")
    if budget.is_time and "train.schedule" not in given:
        train["schedule"] = "wsd"
    elif budget.is_time and train["schedule"] not in ("wsd", "constant"):
        raise ConfigError(f"a time budget ({train['budget']}) runs the wsd or constant schedule, whose rate never "
                          f"jumps when the clock decides; train.schedule={train['schedule']} needs the steps known "
                          "before the run: give a work budget (tokens, flops, steps)")
    return train


def exact_values(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the text typed on the command line (config.Typed) replaced by the value it resolves to,
    so the layers survive a JSON round trip (a sweep's plan, handed to its workers) with their types: a
    config file's "0.01" is a string, refused where a number is due."""
    resolved = resolve_config(values).to_dict()
    return {section: {key: resolved[section][key] if isinstance(value, Typed) else value
                      for key, value in table.items()} if isinstance(table, dict) else table
            for section, table in values.items()}


def build_model(config: RunConfig, tokenizer: Tokenizer, block_size: int, *, training: bool = False) -> torch.nn.Module:
    """The registered model with the sizes only the data knows filled in, initialised from train.seed; its
    sizes are checked against hard limits and the machine's memory first (to train it, or to use it)."""
    model_config = dataclasses.replace(
        config.model, vocab_size=tokenizer.vocab_size, block_size=block_size, pad_id=tokenizer.boundary_id
    )
    model_cls = REGISTRY[config.model_name].model_cls
    copies = int(bool(config.train.ema_decay)) + int(bool(config.train.early_stopping))  # the average, the best
    check_model_fits(model_cls, model_config, training=training, extra_copies=copies,
                     what=f"the {config.model_name} model")
    torch.manual_seed(config.train.seed)
    return model_cls(model_config)
