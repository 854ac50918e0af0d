"""Configuration as plain data: frozen dataclasses, built from JSON/TOML files and `--set a.b=c` overrides.

Every value a user can type goes through `build_config`, which rejects unknown keys and values of the
wrong type with a message naming the field, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmlab.errors import ConfigError
from lmlab.files import not_a_file, read_json_file
from lmlab.names import did_you_mean

MAX_SEED = 2**63  # torch takes seeds below 2**64, numpy below 2**32; one range for all: [0, 2**63)
MAX_BATCH_SIZE = 1 << 20  # sequences per micro-batch; far above what fits any machine's memory at T >= 2
MAX_GRAD_ACCUM_STEPS = 1 << 12  # every micro-batch of a step is drawn before the first is run


def check_finite(config: Any, prefix: str) -> None:
    """ConfigError naming the first float field of `config` that is NaN or infinite."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}.{field.name} must be a finite number, got {value}")


# No lmlab model uses more tokens; the tokenizer library aborts the process on caps far above it.
MAX_VOCAB_SIZE = 10_000_000
# More threads than any machine has cores; torch fails with a SystemError far above it.
MAX_THREADS = 4096


def check_vocab_size(vocab_size: int, tokenizer: str, name: str) -> None:
    """A vocabulary cap is for the word and bpe tokenizers: given with char it meant another tokenizer."""
    if vocab_size < 0 or (tokenizer == "char" and vocab_size):
        raise ConfigError(f"{name} applies to the word and bpe tokenizers and must be >= 0 (char takes every "
                          f"character), got {vocab_size} with {tokenizer}")
    if vocab_size > MAX_VOCAB_SIZE:
        raise ConfigError(f"{name}={vocab_size:,} is more than any lmlab model uses (limit {MAX_VOCAB_SIZE:,})")


def check_seed(value: int, name: str) -> None:
    if not 0 <= value < MAX_SEED:
        raise ConfigError(f"{name} must be in [0, 2**63), got {value}")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    source: str = "names"  # an embedded set (names, surnames, pystdlib), a text file or a folder of them
    mode: Literal["lines", "stream"] | None = None  # None: the source's own default
    encoding: str = "utf-8"
    tokenizer: Literal["char", "word", "bpe", "hf"] = "char"  # hf: an imported model's own (not trained)
    vocab_size: int = 0  # word/bpe vocabulary cap; 0: the tokenizer's default (word 8192, bpe 1024)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 1337  # fixed apart from train.seed, so runs that differ in seed share one split
    block_size: int = 128  # stream mode: tokens per training window (lines mode fits the longest line)
    max_line_chars: int = 1000  # lines mode: longer lines are an error (use stream mode for prose)
    text_field: str = "text"  # .jsonl/.csv/.parquet/datasets folder: the field or column holding the text
    # Stream mode with several documents (files of a folder, records): they are joined by the boundary token,
    # and a window stays inside one document; true lets windows run across them, as nanoGPT's do.
    cross_documents: bool = False
    # Lines mode: pack several examples into each training row for the models that keep them apart (GPT,
    # Llama), instead of padding every example to the batch's longest; the same examples and loss, fewer
    # positions. False: padded batches (the trajectory of runs before packing, dropout's draws included).
    packing: bool = True

    def __post_init__(self) -> None:
        check_finite(self, "data")
        check_seed(self.split_seed, "data.split_seed")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("data.val_fraction + data.test_fraction must leave something to train on (< 1)")
        if self.block_size < 2:
            raise ConfigError(f"data.block_size must be at least 2, got {self.block_size}")
        check_vocab_size(self.vocab_size, self.tokenizer, "data.vocab_size")
        if self.max_line_chars < 1:
            raise ConfigError(f"data.max_line_chars must be at least 1, got {self.max_line_chars}")
        if not self.text_field.strip():
            raise ConfigError("data.text_field must name a field or column, got an empty string")


# ----------------------------------------------------------------------------------------------------------
# Budgets: how much training a run gets, as a number with its unit


BUDGET_UNITS = {"flops": "flops", "tokens": "tokens", "steps": "steps", "s": "seconds", "min": "seconds",
                "h": "seconds"}
_SECONDS_PER = {"s": 1.0, "min": 60.0, "h": 3600.0}
_BUDGET = re.compile(r"(\d+\.?\d*(?:e[+-]?\d+)?|\.\d+(?:e[+-]?\d+)?) ?(flops|tokens|steps|s|min|h)")
BUDGET_HELP = "a number and its unit: 2e13flops, 3e6tokens, 1500steps, or time: 90s, 5min, 1h"
# `lmlab ladder`'s budget for each rung: the default rungs on the embedded names in 223 s on 2 idle CPU cores,
# early stopping ending most (benchmarks/RESULTS.md). Here, not in ladder.py, so the command's help needs no torch.
LADDER_BUDGET = "1e12flops"


@dataclass(frozen=True, slots=True)
class Budget:
    """A parsed `train.budget`. Work (flops, tokens, steps) is turned into a step count once, before the
    first step, so a run is the same on any machine; time (seconds) stops the run when the clock says so."""

    amount: float
    unit: Literal["flops", "tokens", "steps", "seconds"]

    @property
    def is_time(self) -> bool:
        return self.unit == "seconds"

    def __str__(self) -> str:  # as a user types it: 2e13flops, 3e6tokens, 1500steps, 90s
        number = f"{self.amount:.4g}".replace("e+0", "e").replace("e+", "e")
        return f"{number}s" if self.is_time else f"{number}{self.unit}"


def parse_budget(text: str, name: str = "train.budget") -> Budget | None:
    """'3e6tokens' -> Budget(3e6, 'tokens'); '' -> None. A bare number is an error naming the units: a budget
    in seconds and one in steps differ by orders of magnitude, and guessing between them is never safe."""
    if not isinstance(text, str):
        raise ConfigError(f"{name} takes {BUDGET_HELP}; got {text!r}")
    text = text.strip().lower().replace("_", "")
    if not text:
        return None
    match = _BUDGET.fullmatch(text)
    amount = float(match[1]) if match else math.nan
    if not match or not math.isfinite(amount) or amount <= 0:
        raise ConfigError(f"{name} takes {BUDGET_HELP}; got {text!r}")
    suffix = match[2]
    if suffix in _SECONDS_PER:
        return Budget(amount * _SECONDS_PER[suffix], "seconds")
    if suffix == "steps" and not amount.is_integer():
        raise ConfigError(f"{name}: a number of steps is a whole number, got {text!r}")
    return Budget(amount, BUDGET_UNITS[suffix])


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    optimizer: Literal["adamw", "sgd", "muon"] = "adamw"  # muon: Muon on hidden matrices, AdamW on the rest
    lr: float = 1e-3
    muon_lr: float = 0.02  # optimizer muon: the peak rate of the hidden matrices (train.lr is AdamW's)
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    # wsd: warm-up, a stable rate, then a linear decay over the last decay_share of the steps (or of a time
    # budget: the decay starts once, when that share of the time is left, and never moves again)
    schedule: Literal["cosine", "step", "constant", "wsd"] = "cosine"
    warmup_steps: int = 100
    decay_share: float = 0.2  # wsd: the share of the run spent decaying
    decay_start: int = 0  # wsd: the step the decay starts at; 0: max_steps less decay_share of them
    decay_steps: int = 0  # wsd: the decay's length in steps; 0: from decay_start to max_steps
    step_decay_every: int = 1000  # schedule "step": multiply by step_decay_factor every this many steps
    step_decay_factor: float = 0.1
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    momentum: float = 0.9  # sgd only
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    batch_size: int = 32
    max_steps: int = 2000
    # How much training: work ("2e13flops", "3e6tokens", "1500steps") becomes max_steps once, before the first
    # step (run/plan.py), so a run is the same on any machine; time ("90s", "5min") stops the run by the clock
    # and, with the wsd schedule, starts its decay once. "": max_steps as given.
    budget: str = ""
    eval_interval: int = 200
    # Periodic evaluations score a fixed random sample of this many val tokens and report its standard error
    # (training/scoring.py estimate_nll); the final evaluation is exact up to final_eval_max_tokens.
    eval_max_tokens: int = 20_000
    # The final evaluation of val and test: exact for a split of at most this many predicted tokens, else a
    # fixed sample of this many with its standard error (summary.json's nll_stderr), so a large corpus' final
    # evaluation costs a bounded time; 0: exact whatever the size.
    final_eval_max_tokens: int = 2_000_000
    checkpoint_interval: int = 0  # 0: checkpoint at each evaluation
    # > 0: stop once val loss has not improved for this many evaluations, and keep the best (averaged) weights
    # as the run's model (Keras' EarlyStopping(restore_best_weights=True)); 0: train every step
    early_stopping: int = 0
    # > 0: scale the learning rate by 0.1 once val loss has not improved for this many evaluations; 0: off
    reduce_lr_on_plateau: int = 0
    save_top_k: int = 0  # > 0: keep this many best weight files by val loss (and the last) in RUN/checkpoints
    log_interval: int = 10
    seed: int = 1337
    device: Literal["auto", "cpu", "cuda"] = "auto"
    grad_accum_steps: int = 1  # micro-batches per optimizer step: effective batch = batch_size x this x ranks
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model for training
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (DDP) or shard (FSDP2) the model
    peak_tflops: float = 0.0  # the device's peak, for MFU; 0: looked up for known GPUs
    ema_decay: float = 0.0  # > 0: evaluate and save a moving average of the weights (e.g. 0.995); 0: off
    # CPU threads for torch's kernels. "auto": one for a small step, one per core for a large one, from the
    # step's FLOPs and never the machine's load (training/performance.py), so a config trains the same
    # numbers on a busy machine as on an idle one; N: exactly N; 0: torch's default (one per core).
    threads: int | Literal["auto"] = "auto"
    log: str = ""  # metric loggers beside metrics.jsonl, comma-separated: "tensorboard", "wandb" or both

    def __post_init__(self) -> None:
        check_finite(self, "train")
        check_seed(self.seed, "train.seed")
        positive = ("lr", "muon_lr", "batch_size", "max_steps", "eval_interval", "eval_max_tokens", "log_interval",
                    "grad_accum_steps")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        non_negative = ("warmup_steps", "weight_decay", "grad_clip", "checkpoint_interval", "peak_tflops",
                        "final_eval_max_tokens", "early_stopping", "reduce_lr_on_plateau", "save_top_k",
                        "decay_start", "decay_steps")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.threads != "auto" and not (isinstance(self.threads, int) and 0 <= self.threads <= MAX_THREADS):
            raise ConfigError(f"train.threads must be 'auto' or a number of threads in 0..{MAX_THREADS}, got "
                              f"{self.threads!r}")
        parse_budget(self.budget)
        if not 0.0 < self.decay_share <= 1.0:
            raise ConfigError(f"train.decay_share must be in (0, 1], got {self.decay_share}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("beta1", "beta2", "momentum", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.step_decay_every <= 0 or not 0.0 < self.step_decay_factor <= 1.0:
            raise ConfigError("train.step_decay_every must be > 0 and train.step_decay_factor in (0, 1]")
        for name, limit in (("batch_size", MAX_BATCH_SIZE), ("grad_accum_steps", MAX_GRAD_ACCUM_STEPS)):
            if getattr(self, name) > limit:
                raise ConfigError(f"train.{name} must be at most {limit:,}, got {getattr(self, name):,}")
        names = [n.strip() for n in self.log.split(",")] if self.log.strip() else []
        bad = [n for n in names if n not in LOGGER_NAMES]
        if bad or len(set(names)) != len(names):
            raise ConfigError(f"train.log takes comma-separated names from {', '.join(LOGGER_NAMES)}, each once; "
                              f"got {self.log!r}")


LOGGER_NAMES = ("tensorboard", "wandb")  # train.log's choices (lmlab.training.loggers builds them)


# ----------------------------------------------------------------------------------------------------------
# Building dataclasses from untyped input


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


class Typed(str):
    """Text typed on the command line (`--set`, a sweep's axis): the only strings read as numbers, booleans
    or none. A config file (JSON, TOML) states its types, so "48" there stays a string and is refused for
    an int, as true and 3.5 are."""


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` (Typed text from the command line, or JSON/TOML data) to type `tp`, or ConfigError."""
    origin = typing.get_origin(tp)
    typed = isinstance(value, Typed)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (typed and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return allowed[allowed.index(value)]
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if typed and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: {value!r} is not a bool (true or false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if typed:
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
        raise ConfigError(f"{where}: {value!r} is not an int")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float's range
                number = math.inf
        elif typed:
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is not None and not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        if number is not None:
            return number
        raise ConfigError(f"{where}: {value!r} is not a float")
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise ConfigError(f"{where}: {value!r} is not a string")
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def build_config(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass `cls` from `values`, checking every key and type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}.{unknown[0]}; {did_you_mean(unknown[0], fields, f'{prefix}.')}{prefix} takes: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {k: coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def parse_set_args(pairs: list[str]) -> dict[str, dict[str, str]]:
    """['train.lr=3e-3', 'model.n_embd=64'] -> {'train': {'lr': '3e-3'}, 'model': {'n_embd': '64'}}."""
    nested: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name or "." in name:
            raise ConfigError(f"--set takes SECTION.KEY=VALUE (e.g. train.lr=3e-3), got {pair!r}")
        nested.setdefault(section, {})[name] = Typed(value)
    return nested


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into nested dicts."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise ConfigError(f"config file {path} does not exist" if problem == "missing" else
                          f"config file {path} is {problem}, not a file")
    if path.suffix != ".toml":
        values = read_json_file(path, ConfigError, "config file cannot be parsed", "a config file")
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10: the same parser, before it joined the standard library
            import tomli as tomllib
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except RecursionError:
            raise ConfigError(f"config file {path} cannot be parsed: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} cannot be parsed: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: holds a {type(values).__name__}, not sections of key = value")
    for section, table in values.items():
        if section != "lmlab_version" and not isinstance(table, dict):
            raise ConfigError(f"config file {path}: {section!r} must be a section (a table of key = value), "
                              f"got {json.dumps(table, default=str):.40}")
    return values


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Two-level merge of {section: {key: value}} dicts; override wins."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in override.items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
        else:
            merged[section] = values
    return merged


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
