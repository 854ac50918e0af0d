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
from lmlab.models.gpt import GPT, PRESETS, GPTConfig
from lmlab.tokenizers import BOUNDARY, CharTokenizer, Tokenizer
from lmlab.tokenizers.hf import HFTokenizer
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


def hf_config(config: GPTConfig, boundary_id: int) -> dict[str, Any]:
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
    return GPTConfig(
        vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", 1024), n_layer=hf.get("n_layer", 12),
        n_head=hf.get("n_head", 12), n_embd=n_embd, dropout=float(hf.get("resid_pdrop", 0.1)),
        activation=FROM_HF_ACTIVATION[activation], layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


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


def hf_tokenizer_files(tokenizer: Tokenizer, model_max_length: int) -> dict[str, str]:
    """{file name: text} for PreTrainedTokenizerFast: tokenizer.json, tokenizer_config.json, special tokens."""
    if isinstance(tokenizer, CharTokenizer):
        backend = char_backend(tokenizer)
    elif hasattr(tokenizer, "backend"):  # HFTokenizer, or any tokenizer built on HF `tokenizers`
        backend = tokenizer.backend
    else:
        raise ExportError(f"{type(tokenizer).__name__} has no HF tokenizers equivalent to export")
    boundary = backend.id_to_token(tokenizer.boundary_id)
    special = {"bos_token": boundary, "eos_token": boundary, "pad_token": boundary, "unk_token": boundary}
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                        "clean_up_tokenization_spaces": False, **special}
    return {
        "tokenizer.json": backend.to_str(),
        "tokenizer_config.json": json.dumps(tokenizer_config, indent=2),
        "special_tokens_map.json": json.dumps(special, indent=2),
    }


def char_backend(tokenizer: CharTokenizer):
    """A `tokenizers` Tokenizer giving the same ids: every character is its own word of a WordLevel vocab."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    vocab = {token: i for i, token in enumerate(tokenizer.vocab)}
    backend = Backend(models.WordLevel(vocab, unk_token=BOUNDARY))
    # "[\s\S]" is any single character, newlines included (stream-mode vocabularies hold "\n").
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join characters back without spaces
    backend.add_special_tokens([AddedToken(BOUNDARY, special=True, normalized=False)])
    return backend


def tokenizer_from_hf(path: Path, vocab_size: int | None = None) -> Tokenizer:
    """An HF tokenizer.json as an lmlab tokenizer: a CharTokenizer when it is one lmlab wrote."""
    from tokenizers import Tokenizer as Backend

    try:
        backend = Backend.from_file(str(path))
    except Exception as err:  # noqa: BLE001 (tokenizers raises a bare Exception on a malformed file)
        raise CheckpointError(f"{path}: not a readable HF tokenizer.json ({err})") from None
    vocab = backend.get_vocab()
    ordered = sorted(vocab, key=vocab.get)
    model_kind = json.loads(backend.to_str())["model"]["type"]
    is_char = model_kind == "WordLevel" and ordered and ordered[0] == BOUNDARY and all(
        len(t) == 1 for t in ordered[1:]) and [vocab[t] for t in ordered] == list(range(len(ordered)))
    if is_char:
        return CharTokenizer(ordered[1:])
    return HFTokenizer(backend, vocab_size=vocab_size)


# ----------------------------------------------------------------------------------------------------------
# Export and import


def export_hf(run: LoadedRun, out: str | Path) -> Path:
    """Write `run` as a GPT-2 directory that transformers' Auto classes load offline."""
    config = check_expressible(run.model, run.config.model_name)
    files = hf_tokenizer_files(run.tokenizer, config.block_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(config, run.tokenizer.boundary_id), indent=2) + "\n")
    generation = {"bos_token_id": run.tokenizer.boundary_id, "eos_token_id": run.tokenizer.boundary_id,
                  "pad_token_id": run.tokenizer.boundary_id}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    safetensors.torch.save_file(to_hf_state_dict(run.model), str(out / "model.safetensors"),
                                metadata={"format": "pt"})
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return out


def load_hf_dir(hf_dir: str | Path) -> tuple[GPT, Tokenizer]:
    """A local GPT-2 directory (config.json, model.safetensors, tokenizer.json) as an lmlab GPT and tokenizer."""
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise CheckpointError(f"{hf_dir}: not an HF model directory (config.json is missing)")
    try:
        hf = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{hf_dir}/config.json: not valid JSON ({err})") from None
    config = gpt_config_from_hf(hf)
    weights_path = hf_dir / "model.safetensors"
    if not weights_path.is_file():
        raise CheckpointError(f"{hf_dir}: model.safetensors is missing (pickled pytorch_model.bin is not loaded, "
                              "for safety; re-save with save_pretrained(safe_serialization=True))")
    if not (hf_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"{hf_dir}: tokenizer.json is missing (a fast tokenizer is needed)")
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
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{hf_dir}: weights do not fit GPT-2 of this config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    if not all(bool(torch.isfinite(p.detach()).all()) for p in model.parameters()):
        raise CheckpointError(f"{hf_dir}: weights contain NaN or infinity")
    return model.eval(), tokenizer


def import_hf(hf_dir: str | Path, out: str | Path, data: dict[str, Any] | None = None) -> LoadedRun:
    """Turn a GPT-2 directory into an lmlab run directory at `out` (step 0, fresh optimizer), which samples,
    evaluates, and fine-tunes with `lmlab train --out OUT --resume`. `data` sets the run's data section
    (source, mode, ...): what eval scores and fine-tuning trains on."""
    out = RunDir(out)
    if out.holds_run():
        raise CheckpointError(f"{out} already holds a run; choose another --out")
    model, tokenizer = load_hf_dir(hf_dir)
    data = {"block_size": min(model.config.block_size, DataConfig().block_size), **(data or {})}
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
