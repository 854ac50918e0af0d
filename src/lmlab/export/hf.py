"""The HF transformers GPT-2 format, out and in: config.json, model.safetensors and tokenizer files.

lmlab's GPT already uses GPT2LMHeadModel's parameter names, so converting is a transpose of the four
Conv1D weight matrices per block (Conv1D stores (in, out), nn.Linear (out, in)) and a config in GPT-2's
vocabulary. Nothing here needs transformers itself: the files are JSON, safetensors and a `tokenizers`
tokenizer.json, so export works without it; the tests load the result with transformers to prove it.
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
from lmlab.errors import CheckpointError, LmlabError
from lmlab.export.card import generation_config, model_card
from lmlab.export.safety import check_export_target, check_hf_weights, read_hf_config
from lmlab.models.gpt import GPT, PRESETS, GPTConfig
from lmlab.tokenizers import Tokenizer, tokenizer_kind
from lmlab.tokenizers.convert import from_hf_backend, hf_backend
from lmlab.training.run_config import resolve_config
from lmlab.training.run_dir import LoadedRun, RunDir

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TO_HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
FROM_HF_ACTIVATION = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                      "gelu": "gelu"}


class ExportError(LmlabError):
    """A run's model or tokenizer has no equivalent in the requested format."""


# ----------------------------------------------------------------------------------------------------------
# Weights and config, both directions


def check_expressible(model: torch.nn.Module, model_name: str) -> GPTConfig:
    """The model's GPTConfig, or ExportError saying why GPT-2 cannot hold it."""
    if not isinstance(model, GPT):
        raise ExportError(
            f"a {model_name!r} model cannot be expressed as GPT-2 (only the GPT rungs can: transformers' "
            f"GPT2LMHeadModel has no {model_name} layers); train with --model gpt to export"
        )
    config = model.config
    if not config.bias:
        raise ExportError("a GPT trained with model.bias=false cannot be expressed as GPT-2, whose Linear "
                          "layers and LayerNorms always have biases")
    return config


def hf_config(config: GPTConfig, boundary_id: int, lmlab: dict[str, Any] | None = None) -> dict[str, Any]:
    """GPT-2's config.json; `lmlab` (the data mode, tokenizer kind, ...) rides along as one extra key, which
    transformers keeps as an attribute and writes back on save_pretrained."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # 4 * n_embd, as lmlab's MLP
        "activation_function": TO_HF_ACTIVATION[config.activation],
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": boundary_id,
        "eos_token_id": boundary_id,
        "pad_token_id": boundary_id,
        "use_cache": True,
        **({"lmlab": lmlab} if lmlab else {}),
    }


def gpt_config_from_hf(hf: dict[str, Any]) -> GPTConfig:
    """GPTConfig from a GPT-2 config.json, or ExportError naming the setting lmlab's GPT lacks."""
    if hf.get("model_type") != "gpt2":
        raise ExportError(f"model_type {hf.get('model_type')!r} is not gpt2; only the GPT-2 architecture imports")
    activation = hf.get("activation_function", "gelu_new")
    n_embd = hf.get("n_embd", 768)
    unsupported = {
        "activation_function": activation not in FROM_HF_ACTIVATION,
        "n_inner": hf.get("n_inner") not in (None, 4 * n_embd),
        "scale_attn_by_inverse_layer_idx": bool(hf.get("scale_attn_by_inverse_layer_idx", False)),
        "scale_attn_weights": not hf.get("scale_attn_weights", True),
        "add_cross_attention": bool(hf.get("add_cross_attention", False)),
    }
    bad = [key for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ExportError(f"config.json: {bad[0]}={hf.get(bad[0])!r} has no equivalent in lmlab's GPT")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", 1024), n_layer=hf.get("n_layer", 12),
            n_head=hf.get("n_head", 12), n_embd=n_embd, dropout=float(hf.get("resid_pdrop", 0.1)),
            activation=FROM_HF_ACTIVATION[activation], layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"config.json: not a usable GPT-2 config ({type(err).__name__}: {err})") from None


def to_hf_state_dict(model: GPT) -> dict[str, Tensor]:
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_embeddings:
            continue  # HF re-ties it to transformer.wte.weight on load
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        out[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    return out


def from_hf_state_dict(weights: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """HF GPT-2 tensors (with or without the `transformer.` prefix) -> lmlab GPT state dict."""
    out = {}
    for name, tensor in weights.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) and tensor.dim() != 1:
            continue  # old checkpoints store the causal mask as a buffer
        if not name.startswith(("transformer.", "lm_head.")):
            name = f"transformer.{name}"
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        out[name] = tensor.float().contiguous()
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out.get("transformer.wte.weight")
    if config.tie_embeddings:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


# ----------------------------------------------------------------------------------------------------------
# Tokenizer files


def hf_tokenizer_files(tokenizer: Tokenizer, model_max_length: int, lines_mode: bool = False) -> dict[str, str]:
    """{file name: text} for PreTrainedTokenizerFast: tokenizer.json, tokenizer_config.json, special tokens.
    `lines_mode`: encoding puts the boundary token first, as lmlab trained and samples lines-mode runs.

    Special tokens: the boundary is bos, eos and pad (one token, as GPT-2's <|endoftext|>), so generation
    stops at the end of an example and padding never adds an id the model lacks; padding goes on the left,
    where a decoder-only model needs it for batched generation. The word tokenizer's <unk> (id 1) is not
    declared unk_token: transformers would then drop it from decoded text as a special token, where lmlab
    shows it (it stands for a real word); the tokenizer still maps every unseen word to it."""
    try:
        backend = hf_backend(tokenizer, add_boundary=lines_mode)
    except TypeError as err:
        raise ExportError(str(err)) from None
    boundary = backend.id_to_token(tokenizer.boundary_id)
    special = {"bos_token": boundary, "eos_token": boundary, "pad_token": boundary}
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                        "padding_side": "left", "clean_up_tokenization_spaces": False, **special}
    return {
        "tokenizer.json": backend.to_str(),
        "tokenizer_config.json": json.dumps(tokenizer_config, indent=2, ensure_ascii=False),
        "special_tokens_map.json": json.dumps(special, indent=2, ensure_ascii=False),
    }


def char_backend(tokenizer) -> Any:
    """A `tokenizers` Tokenizer giving a CharTokenizer's ids (kept for callers of the old name)."""
    return hf_backend(tokenizer)


def tokenizer_from_hf(path: Path, vocab_size: int | None = None) -> Tokenizer:
    """An HF tokenizer.json as an lmlab tokenizer: the char, word or BPE tokenizer lmlab exported it from,
    or an HFTokenizer for any other."""
    from tokenizers import Tokenizer as Backend

    try:
        backend = Backend.from_file(str(path))
    except Exception as err:  # noqa: BLE001 (tokenizers raises a bare Exception on a malformed file)
        raise CheckpointError(f"{path}: not a readable HF tokenizer.json ({err})") from None
    return from_hf_backend(backend, vocab_size)


def tokenizer_adds_boundary(path: Path, boundary_id: int) -> bool:
    """Whether tokenizer.json's post-processor puts the boundary token in front of every text: how lmlab
    exports a lines-mode run (an export from before lmlab recorded its data mode says so only this way)."""
    try:
        processor = json.loads(path.read_text(encoding="utf-8")).get("post_processor") or {}
        first = processor.get("single", [])[0]
    except (ValueError, UnicodeDecodeError, OSError, IndexError, AttributeError, TypeError):
        return False
    return processor.get("type") == "TemplateProcessing" and isinstance(first, dict) and (
        first.get("SpecialToken", {}).get("id") is not None and
        processor.get("special_tokens", {}).get(first["SpecialToken"]["id"], {}).get("ids") == [boundary_id])


# ----------------------------------------------------------------------------------------------------------
# Export and import


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
    lines_mode = run.config.data.mode == "lines"
    files = hf_tokenizer_files(run.tokenizer, config.block_size, lines_mode)
    boundary = run.tokenizer.boundary_id
    files["config.json"] = json.dumps(hf_config(config, boundary, export_metadata(run)), indent=2) + "\n"
    files["generation_config.json"] = json.dumps(generation_config(boundary, config.block_size, lines_mode),
                                                 indent=2) + "\n"
    files["README.md"] = model_card(run)
    weights = to_hf_state_dict(run.model)
    out = check_export_target(Path(out), run.run_dir, force)
    out.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return out


def load_hf_dir(hf_dir: str | Path) -> tuple[GPT, Tokenizer]:
    """A local GPT-2 directory (config.json, model.safetensors, tokenizer.json) as an lmlab GPT and tokenizer.
    The weights file's header is checked against the config, and the memory the model needs against the
    machine's, before anything is allocated."""
    hf_dir = Path(hf_dir)
    hf = read_hf_config(hf_dir)
    config = gpt_config_from_hf(hf)
    weights_path = hf_dir / "model.safetensors"
    if not weights_path.is_file():
        raise CheckpointError(f"{hf_dir}: model.safetensors is missing (pickled pytorch_model.bin is not loaded, "
                              "for safety; re-save with save_pretrained(safe_serialization=True))")
    if not (hf_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"{hf_dir}: tokenizer.json is missing (a fast tokenizer is needed)")
    check_hf_weights(weights_path, config)
    try:
        weights = safetensors.torch.load_file(str(weights_path))
    except (OSError, safetensors.SafetensorError) as err:
        raise CheckpointError(f"{weights_path}: unreadable ({err})") from None
    tokenizer = tokenizer_from_hf(hf_dir / "tokenizer.json", config.vocab_size)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"{hf_dir}: the tokenizer has {tokenizer.vocab_size} tokens, the model's "
                              f"vocab_size is {config.vocab_size}")
    model = GPT(config)
    state = from_hf_state_dict(weights, config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{hf_dir}: weights do not fit GPT-2 of this config "
                              f"({str(err).strip().splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(f"{hf_dir}: weights do not fit GPT-2 of this config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    if not all(bool(torch.isfinite(p.detach()).all()) for p in model.parameters()):
        raise CheckpointError(f"{hf_dir}: weights contain NaN or infinity")
    return model.eval(), tokenizer


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
    out = RunDir(out)
    if out.holds_run():
        raise CheckpointError(f"{out} already holds a run; choose another --out")
    model, tokenizer = load_hf_dir(hf_dir)
    data = {"block_size": min(model.config.block_size, DataConfig().block_size),
            **imported_data_values(hf_dir, tokenizer, data)}
    shape = {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd")}
    preset = next((name for name, sizes in PRESETS.items() if sizes == shape), "gpt")
    model.config = dataclasses.replace(model.config, preset=preset)
    model_values = {"name": "gpt", **dataclasses.asdict(model.config)}
    config = resolve_config({"data": data, "model": model_values, "train": {"device": "cpu"}})
    if config.data.block_size > model.config.block_size:
        raise ExportError(f"data.block_size {config.data.block_size} exceeds the model's context of "
                          f"{model.config.block_size}")
    with out:  # locked while written
        out.create_untrained(config, tokenizer, model)
    return LoadedRun(out, config, tokenizer, model, 0)
