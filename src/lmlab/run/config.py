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
from lmlab.config import DataConfig, TrainConfig, Typed, build_config, merge, to_dict
from lmlab.errors import ConfigError
from lmlab.models import DEFAULT_MODEL, REGISTRY
from lmlab.models.size import check_model_fits
from lmlab.tokenizers import Tokenizer

SECTIONS = ("data", "model", "train")
# The values a run may fit to its data when the user left them to the defaults (run/fit_defaults.py).
FITTED_KEYS = ("train.batch_size", "data.block_size")


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
    values = {k: v for k, v in values.items() if k != "lmlab_version"}
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}; sections are {', '.join(SECTIONS)}")
    for section in SECTIONS:
        if not isinstance(values.get(section, {}), dict):
            raise ConfigError(f"config section {section!r} must be a table of key = value, got "
                              f"{type(values[section]).__name__}")
    model_values = dict(values.get("model", {}))
    name = model_values.pop("name", None) or DEFAULT_MODEL
    if not isinstance(name, str) or name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    train_values = merge({"train": spec.train_defaults}, {"train": values.get("train", {})})["train"]
    given = {f"{section}.{key}" for section in ("data", "train") for key in values.get(section, {})}
    return RunConfig(
        data=build_config(DataConfig, dict(values.get("data", {})), "data"),
        model_name=name,
        model=build_config(spec.config_cls, model_values, "model"),
        train=build_config(TrainConfig, train_values, "train"),
        defaulted=frozenset(FITTED_KEYS) - given,
    )


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
