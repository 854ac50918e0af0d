"""A run: the resolved configuration, and everything built from it (tokenizer, data splits, model), plus
the run directory that holds them: config.json, tokenizer.json, model.safetensors, trainer_state.pt,
metrics.jsonl, summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab import __version__
from lmlab.config import DataConfig, TrainConfig, build_config, merge, to_dict
from lmlab.data import LinesDataset, StreamDataset, TokenDataset, load_corpus, split_indices
from lmlab.data.shards import is_prepared, open_shards
from lmlab.errors import CheckpointError, ConfigError, DataError, TokenizerError
from lmlab.models import DEFAULT_MODEL, REGISTRY
from lmlab.tokenizers import CharTokenizer, Tokenizer, fit_tokenizer, load_tokenizer, tokenizer_kind
from lmlab.training.checkpoint import MODEL_FILE, atomic_write_text, load_weights, read_json

log = logging.getLogger(__name__)

SECTIONS = ("data", "model", "train")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    data: DataConfig
    model_name: str
    model: Any  # the chosen model's config dataclass
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "lmlab_version": __version__,
            "data": to_dict(self.data),
            "model": {"name": self.model_name, **to_dict(self.model)},
            "train": to_dict(self.train),
        }


def resolve_config(values: dict[str, Any]) -> RunConfig:
    """{'data': {...}, 'model': {'name': ..., ...}, 'train': {...}} -> RunConfig, layering the model's own
    training defaults between TrainConfig's defaults and the user's values."""
    values = {k: v for k, v in values.items() if k != "lmlab_version"}
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}; sections are {', '.join(SECTIONS)}")
    model_values = dict(values.get("model", {}))
    name = model_values.pop("name", None) or DEFAULT_MODEL
    if name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    train_values = merge({"train": spec.train_defaults}, {"train": values.get("train", {})})["train"]
    return RunConfig(
        data=build_config(DataConfig, dict(values.get("data", {})), "data"),
        model_name=name,
        model=build_config(spec.config_cls, model_values, "model"),
        train=build_config(TrainConfig, train_values, "train"),
    )


# ----------------------------------------------------------------------------------------------------------
# Data: corpus -> tokenizer -> splits


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    mode: str
    splits: dict[str, TokenDataset]
    texts: dict[str, list[str]]  # lines mode: the raw examples of each split (for sample novelty)


def _lines(documents: list[str], max_chars: int) -> list[str]:
    lines = [line.rstrip("\r") for doc in documents for line in doc.split("\n")]
    lines = [line for line in lines if line.strip()]
    too_long = [i for i, line in enumerate(lines) if len(line) > max_chars]
    if too_long:
        raise DataError(
            f"line {too_long[0] + 1} has {len(lines[too_long[0]]):,} characters, over data.max_line_chars="
            f"{max_chars}; use --mode stream for running text, or raise data.max_line_chars"
        )
    return lines


def _encode_known(tokenizer: Tokenizer, text: str, add_boundary: bool = False) -> list[int] | None:
    try:
        return tokenizer(text, add_boundary=add_boundary).input_ids
    except TokenizerError:
        return None


def prepare_data(config: DataConfig, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Load the source, split it deterministically, fit the tokenizer on the training split (unless one is
    given, as on resume) and encode every split. A folder made by `lmlab data prepare` is read as is."""
    if is_prepared(config.source):
        return _prepared_folder(config, tokenizer)
    corpus = load_corpus(config.source, config.encoding)
    mode = config.mode or corpus.default_mode
    if mode == "lines":
        lines = _lines(corpus.documents, config.max_line_chars)
        if len(lines) < 2:
            raise DataError(f"{config.source}: lines mode needs at least 2 examples, found {len(lines)}")
        index = split_indices(len(lines), config.val_fraction, config.test_fraction, config.split_seed)
        texts = {name: [lines[i] for i in rows] for name, rows in index.items()}
        tokenizer = tokenizer or fit_tokenizer(config.tokenizer, texts["train"], config.vocab_size)
        splits: dict[str, TokenDataset] = {}
        for name, examples in texts.items():
            encoded = [_encode_known(tokenizer, t, add_boundary=True) for t in examples]
            dropped = sum(e is None for e in encoded)
            if dropped and name == "train":
                raise CheckpointError(
                    f"the tokenizer does not cover {dropped} training example(s): this data does not match "
                    "the run's tokenizer"
                )
            if dropped:
                log.warning("%s: %d example(s) with characters unseen in training were left out", name, dropped)
            splits[name] = LinesDataset([e + [tokenizer.boundary_id] for e in encoded if e is not None],
                                        pad_id=tokenizer.boundary_id)
        return PreparedData(tokenizer, mode, splits, texts)

    text = "\n".join(corpus.documents)
    n_val, n_test = int(len(text) * config.val_fraction), int(len(text) * config.test_fraction)
    n_train = len(text) - n_val - n_test
    parts = {"train": text[:n_train], "val": text[n_train : n_train + n_val], "test": text[n_train + n_val :]}
    if len(parts["train"]) <= config.block_size:  # no tokenizer makes more tokens than characters
        raise DataError(
            f"{config.source}: the training split has {len(parts['train'])} characters, not more than the "
            f"context of {config.block_size}; use more text or a smaller data.block_size"
        )
    tokenizer = tokenizer or fit_tokenizer(config.tokenizer, [parts["train"]], config.vocab_size)
    splits = {}
    for name, part in parts.items():
        known = part
        if name != "train" and isinstance(tokenizer, CharTokenizer):  # word/bpe encode anything
            known = "".join(c for c in part if c in tokenizer.char_to_id)
        if len(known) < len(part):
            log.warning("%s: %d character(s) unseen in training were left out", name, len(part) - len(known))
        ids = _encode_known(tokenizer, known)
        if ids is None:
            raise CheckpointError("the training text has characters the run's tokenizer lacks: data mismatch")
        splits[name] = StreamDataset(torch.tensor(ids, dtype=torch.long), config.block_size)
    if len(splits["train"]) <= config.block_size:
        raise DataError(
            f"{config.source}: the training split has {len(splits['train'])} tokens, not more than the context "
            f"of {config.block_size}; use more text or a smaller data.block_size"
        )
    return PreparedData(tokenizer, mode, splits, {})


def _prepared_folder(config: DataConfig, tokenizer: Tokenizer | None) -> PreparedData:
    if config.mode == "lines":
        raise ConfigError(f"{config.source} holds prepared token shards, which train in stream mode only")
    _, splits = open_shards(config.source, config.block_size)
    own = load_tokenizer(Path(config.source) / "tokenizer.json")
    if tokenizer is not None and tokenizer != own:
        raise CheckpointError(f"{config.source}: its tokenizer differs from the run's; data mismatch")
    if len(splits["train"]) <= config.block_size:
        raise DataError(f"{config.source}: the training split has {len(splits['train'])} tokens, not more than "
                        f"the context of {config.block_size}; use a smaller data.block_size")
    return PreparedData(own, "stream", splits, {})


def resolved_data_config(config: DataConfig, data: PreparedData) -> DataConfig:
    """The data config as the run really used it (the mode and, for a prepared folder, its tokenizer)."""
    kind = tokenizer_kind(data.tokenizer)
    vocab_size = 0 if kind == "char" else data.tokenizer.vocab_size
    return dataclasses.replace(config, mode=data.mode, tokenizer=kind, vocab_size=vocab_size)


# ----------------------------------------------------------------------------------------------------------
# Model


def build_model(config: RunConfig, tokenizer: Tokenizer, block_size: int) -> torch.nn.Module:
    """The registered model with the sizes only the data knows filled in."""
    model_config = dataclasses.replace(
        config.model, vocab_size=tokenizer.vocab_size, block_size=block_size, pad_id=tokenizer.boundary_id
    )
    torch.manual_seed(config.train.seed)
    return REGISTRY[config.model_name].model_cls(model_config)


# ----------------------------------------------------------------------------------------------------------
# Run directory


def write_run_files(run_dir: Path, config: RunConfig, tokenizer: Tokenizer, block_size: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = config.to_dict()
    saved["model"]["block_size"] = block_size
    atomic_write_text(run_dir / "config.json", json.dumps(saved, indent=2) + "\n")
    tokenizer.save(run_dir / "tokenizer.json")


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    tokenizer: Tokenizer
    model: torch.nn.Module
    step: int


def load_run_config(run_dir: str | Path) -> tuple[RunConfig, int]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    saved = read_json(run_dir / "config.json", "config")
    block_size = saved.get("model", {}).get("block_size", 0)
    try:
        return resolve_config(saved), block_size
    except ConfigError as err:
        raise CheckpointError(f"{run_dir}/config.json: {err}") from None


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Everything needed to sample, evaluate or export a trained run."""
    run_dir = Path(run_dir)
    config, block_size = load_run_config(run_dir)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    model = build_model(config, tokenizer, block_size)
    step = load_weights(model, run_dir / MODEL_FILE)
    model.to(device).eval()
    return LoadedRun(run_dir, config, tokenizer, model, step)


def layered_config(file_values: dict[str, Any], *layers: dict[str, Any]) -> dict[str, Any]:
    """Config file < named CLI options < --set, each a {section: {key: value}} dict."""
    merged = file_values
    for layer in layers:
        merged = merge(merged, layer)
    return merged


def split_nll(trainer, splits: dict[str, TokenDataset]) -> dict[str, float]:
    """NLL of the trained model on every non-empty split (capped at train.eval_max_tokens each)."""
    from lmlab.training.scoring import mean_nll

    return {name: mean_nll(trainer.model, ds, device=trainer.device, max_tokens=trainer.config.eval_max_tokens)[0]
            for name, ds in splits.items() if len(ds)}


def write_summary(out: Path, model_name: str, splits: dict[str, TokenDataset], trainer, **extra: Any) -> dict:
    """summary.json: NLL per split, size, steps, speed and time (the timings metrics.jsonl leaves out)."""
    from lmlab.models import count_parameters

    summary = {
        "model": model_name,
        "parameters": count_parameters(trainer.model),
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 3),
        **extra,
        "tokens_per_s": round(trainer.tokens_seen / max(trainer.train_seconds, 1e-9)),
        "nonfinite_steps": trainer.nonfinite_steps,
        "nll": split_nll(trainer, splits),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
