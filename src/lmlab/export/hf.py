"""Export a run as an HF transformers GPT-2 folder (config.json, model.safetensors, tokenizer files, generation
config and a model card) that transformers' Auto classes load offline, and import such a folder back as an
lmlab run. The conversions of config, weights and tokenizer live in hf_convert.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from lmlab.config import DataConfig
from lmlab.errors import CheckpointError
from lmlab.export.card import generation_config, model_card
from lmlab.export.hf_convert import (
    ExportError,
    check_expressible,
    from_hf_state_dict,
    gpt_config_from_hf,
    hf_config,
    hf_tokenizer_files,
    to_hf_state_dict,
    tokenizer_adds_boundary,
    tokenizer_from_hf,
)
from lmlab.export.safety import check_export_target, check_hf_weights, read_hf_config
from lmlab.files import atomic_write, atomic_write_text, claim_output_folder, not_a_file
from lmlab.models.gpt import GPT, PRESETS
from lmlab.run.config import resolve_config
from lmlab.run.folder import LoadedRun, RunDir
from lmlab.tokenizers import Tokenizer, tokenizer_kind


def export_metadata(run: LoadedRun) -> dict[str, Any]:
    """What an lmlab import needs to behave as the run did: its data mode above all (lines-mode samples end
    at the boundary token)."""
    from lmlab import __version__

    return {"version": __version__, "data_mode": run.config.data.mode, "data_source": run.config.data.source,
            "tokenizer": tokenizer_kind(run.tokenizer)}


def export_hf(run: LoadedRun, out: str | Path, force: bool = False) -> Path:
    """Write `run` as a GPT-2 directory that transformers' Auto classes load offline, with a generation
    config holding lmlab's sampling defaults and a README.md model card. OUT must be empty or new (or
    `force`), and is never a run directory."""
    config = check_expressible(run.model, run.config.model_name)
    hf = hf_config(config, run.tokenizer.boundary_id, export_metadata(run))
    return write_hf_folder(run, out, hf, to_hf_state_dict(run.model), config.block_size, force)


def write_hf_folder(run: LoadedRun, out: str | Path, hf: dict[str, Any], weights: dict[str, Tensor], context: int,
                    force: bool) -> Path:
    """An HF model folder: config.json `hf`, the weights, the tokenizer files, a generation config with
    lmlab's sampling defaults and a README.md model card; every export format shares it."""
    lines_mode = run.config.data.mode == "lines"
    files = hf_tokenizer_files(run.tokenizer, context, lines_mode)
    files["config.json"] = json.dumps(hf, indent=2) + "\n"
    files["generation_config.json"] = json.dumps(generation_config(run.tokenizer.boundary_id, context, lines_mode),
                                                 indent=2) + "\n"
    files["README.md"] = model_card(run)
    out = check_export_target(Path(out), run.run_dir, force)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors",
                 lambda tmp: safetensors.torch.save_file(weights, str(tmp), metadata={"format": "pt"}))
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return out


def load_hf_dir(hf_dir: str | Path) -> tuple[GPT, Tokenizer]:
    """A local GPT-2 directory (config.json, model.safetensors, tokenizer.json) as an lmlab GPT and tokenizer.
    The weights file's header is checked against the config, and the memory the model needs against the
    machine's, before anything is allocated."""
    hf_dir = Path(hf_dir)
    hf = read_hf_config(hf_dir)
    config = gpt_config_from_hf(hf)
    weights, tokenizer = read_weights_and_tokenizer(hf_dir, config.vocab_size,
                                                    lambda path: check_hf_weights(path, config))
    return fill(GPT(config), from_hf_state_dict(weights, config), hf_dir, "GPT-2"), tokenizer


def read_weights_and_tokenizer(hf_dir: Path, vocab_size: int, check_header=None) -> tuple[dict[str, Tensor], Tokenizer]:
    """model.safetensors (after `check_header(path)` has vetted its header, when given) and tokenizer.json of an
    HF folder, each refused in one line if missing, unreadable or of another vocabulary size."""
    weights_path = hf_dir / "model.safetensors"
    problem = not_a_file(weights_path)
    if problem == "missing":
        raise CheckpointError(f"{hf_dir}: model.safetensors is missing (pickled pytorch_model.bin is not loaded, "
                              "for safety; re-save with save_pretrained(safe_serialization=True))")
    if problem:
        raise CheckpointError(f"{hf_dir}: model.safetensors is {problem}, not a weights file")
    problem = not_a_file(hf_dir / "tokenizer.json")
    if problem:
        raise CheckpointError(f"{hf_dir}: tokenizer.json is {problem} (a fast tokenizer's file is needed)")
    if check_header is not None:
        check_header(weights_path)
    try:
        weights = safetensors.torch.load_file(str(weights_path))
    except (OSError, safetensors.SafetensorError) as err:
        raise CheckpointError(f"{weights_path}: unreadable ({err})") from None
    tokenizer = tokenizer_from_hf(hf_dir / "tokenizer.json", vocab_size)
    if tokenizer.vocab_size != vocab_size:
        raise CheckpointError(f"{hf_dir}: the tokenizer has {tokenizer.vocab_size} tokens, the model's "
                              f"vocab_size is {vocab_size}")
    return weights, tokenizer


def fill(model: torch.nn.Module, state: dict[str, Tensor], hf_dir: Path, what: str) -> torch.nn.Module:
    """`model` with the converted HF weights `state` in it, in eval mode; every tensor must fit and be finite."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{hf_dir}: weights do not fit {what} of this config "
                              f"({str(err).strip().splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(f"{hf_dir}: weights do not fit {what} of this config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    if not all(bool(torch.isfinite(p.detach()).all()) for p in model.parameters()):
        raise CheckpointError(f"{hf_dir}: weights contain NaN or infinity")
    return model.eval()


def imported_data_values(hf_dir: str | Path, tokenizer: Tokenizer, data: dict[str, Any] | None) -> dict[str, Any]:
    """The data section of an imported run. The mode, first found wins: the caller's; the one lmlab
    recorded at export (config.json's "lmlab"); lines when the tokenizer puts the boundary token first
    (what lmlab exports for lines-mode runs); the data source's own. Never left unset, or sampling
    would not know whether the boundary token ends a sample."""
    from lmlab.data import load_corpus
    from lmlab.data.shards import is_prepared

    hf_dir = Path(hf_dir)
    values = dict(data or {})
    values.setdefault("source", "names")
    kind = tokenizer_kind(tokenizer)
    values["tokenizer"] = kind
    values["vocab_size"] = 0 if kind == "char" else tokenizer.vocab_size
    if values.get("mode") is None:
        recorded = read_hf_config(hf_dir).get("lmlab")
        mode = recorded.get("data_mode") if isinstance(recorded, dict) else None
        if mode not in ("lines", "stream"):
            mode = "lines" if tokenizer_adds_boundary(hf_dir / "tokenizer.json", tokenizer.boundary_id) else None
        if mode is None:
            source = str(values["source"])
            encoding = values.get("encoding", "utf-8")
            mode = "stream" if is_prepared(source) else load_corpus(source, encoding).default_mode
        values["mode"] = mode
    return values


def import_hf(hf_dir: str | Path, out: str | Path, data: dict[str, Any] | None = None) -> LoadedRun:
    """Turn a GPT-2 directory into an lmlab run directory at `out` (step 0, fresh optimizer), which samples,
    evaluates, and fine-tunes with `lmlab train --out OUT --resume`. `data` sets the run's data section
    (source, mode, ...): what eval scores and fine-tuning trains on."""
    out = new_run_folder(out)
    model, tokenizer = load_hf_dir(hf_dir)
    shape = {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd")}
    preset = next((name for name, sizes in PRESETS.items() if sizes == shape), "gpt")
    model.config = dataclasses.replace(model.config, preset=preset)
    return create_imported_run(out, "gpt", model, tokenizer, hf_dir, data)


def new_run_folder(out: str | Path) -> RunDir:
    """The folder an import writes, refused before anything is read if it already holds a run."""
    return RunDir(claim_output_folder(out, "the imported model"))


def create_imported_run(out: RunDir, name: str, model: torch.nn.Module, tokenizer: Tokenizer, hf_dir: str | Path,
                        data: dict[str, Any] | None) -> LoadedRun:
    """What every import ends with: the run's data section, its config (the registered `name` with the
    imported model's sizes), and the untrained run (step 0, fresh optimizer) written into `out`."""
    data = {"block_size": min(model.config.block_size, DataConfig().block_size),
            **imported_data_values(hf_dir, tokenizer, data)}
    model_values = {"name": name, **dataclasses.asdict(model.config)}
    # No budget: an imported model was trained elsewhere, and a fine-tune names its own (or --max-steps).
    config = resolve_config({"data": data, "model": model_values, "train": {"device": "cpu", "budget": ""}})
    if config.data.block_size > model.config.block_size:
        raise ExportError(f"data.block_size {config.data.block_size} exceeds the model's context of "
                          f"{model.config.block_size}")
    with out:  # locked while written
        out.create_untrained(config, tokenizer, model)
    return LoadedRun(out, config, tokenizer, model, 0)
