"""The HF transformers Llama and Qwen3 formats, out and in, for lmlab's Llama rung.

A Llama with rotary embeddings, RMSNorm and SwiGLU is LlamaForCausalLM; with QK-norm it is Qwen3ForCausalLM
(transformers' Qwen3 is Llama plus q_norm/k_norm). lmlab keeps q, k and v in one fused `c_attn` matrix
(rows q, then k, then v), so converting splits or joins it; the rotary layout is already HF's half-split
one, so no permutation is needed. Everything else is a rename:

    transformer.wte                 model.embed_tokens
    transformer.h.i.ln_1 / ln_2     model.layers.i.input_layernorm / post_attention_layernorm
    transformer.h.i.attn.c_attn     model.layers.i.self_attn.q_proj | k_proj | v_proj
    transformer.h.i.attn.c_proj     model.layers.i.self_attn.o_proj
    transformer.h.i.attn.q_norm     model.layers.i.self_attn.q_norm (k_norm alike; Qwen3)
    transformer.h.i.mlp.c_gate      model.layers.i.mlp.gate_proj
    transformer.h.i.mlp.c_fc        model.layers.i.mlp.up_proj
    transformer.h.i.mlp.c_proj      model.layers.i.mlp.down_proj
    transformer.ln_f                model.norm
    lm_head                         lm_head (left out when tied)

As export/hf.py, nothing here needs transformers: the files are JSON, safetensors and tokenizer.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmlab.errors import LmlabError
from lmlab.export.hf import (
    create_imported_run,
    export_metadata,
    fill,
    new_run_folder,
    read_weights_and_tokenizer,
    write_hf_folder,
)
from lmlab.export.hf_convert import ExportError
from lmlab.export.safety import read_hf_config
from lmlab.files import read_json_file
from lmlab.models.llama import LLAMA_PRESETS, Llama, LlamaConfig
from lmlab.models.size import check_model_fits
from lmlab.run.folder import LoadedRun

MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
RENAMES = [  # (lmlab, HF) name pieces, applied to whole dotted components
    ("transformer.wte.", "model.embed_tokens."), ("transformer.ln_f.", "model.norm."),
    ("transformer.h.", "model.layers."), (".ln_1.", ".input_layernorm."), (".ln_2.", ".post_attention_layernorm."),
    (".attn.c_proj.", ".self_attn.o_proj."), (".attn.q_norm.", ".self_attn.q_norm."),
    (".attn.k_norm.", ".self_attn.k_norm."), (".mlp.c_gate.", ".mlp.gate_proj."), (".mlp.c_fc.", ".mlp.up_proj."),
    (".mlp.c_proj.", ".mlp.down_proj."),
]


def is_llama_dir(hf_dir: str | Path) -> bool:
    """Whether an HF directory holds a Llama or Qwen3 (what `lmlab import` hands to import_llama)."""
    try:
        hf = read_json_file(Path(hf_dir) / "config.json")
    except LmlabError:
        return False
    return isinstance(hf, dict) and hf.get("model_type") in MODEL_TYPES


def model_type_for(config: LlamaConfig) -> str:
    return "qwen3" if config.qk_norm else "llama"


def check_llama_expressible(model: torch.nn.Module, model_name: str) -> LlamaConfig:
    """The model's LlamaConfig, or ExportError saying which switch HF's Llama / Qwen3 cannot hold."""
    if not isinstance(model, Llama):
        raise ExportError(f"a {model_name!r} model is not a Llama; only the llama rungs export to the Llama/Qwen3 "
                          "format (GPT rungs export as GPT-2)")
    config = model.config
    needs = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
    for field, value in needs.items():
        if getattr(config, field) != value:
            raise ExportError(f"model.{field}={getattr(config, field)!r}: HF's Llama and Qwen3 need "
                              f"model.{field}={value!r}")
    if config.qk_norm and config.bias:
        raise ExportError("model.bias=true with model.qk_norm: Qwen3's MLP has no biases")
    return config


def llama_hf_config(config: LlamaConfig, boundary_id: int) -> dict[str, Any]:
    model_type = model_type_for(config)
    hf = {
        "architectures": [MODEL_TYPES[model_type]],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.n_embd // config.n_head,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_theta": config.rope_theta,  # where transformers 4.x looks for it
        "attention_bias": config.bias,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": boundary_id,
        "eos_token_id": boundary_id,
        "pad_token_id": boundary_id,
        "use_cache": True,
    }
    if model_type == "llama":
        hf["mlp_bias"] = config.bias
    else:
        hf["use_sliding_window"] = False
    return hf


def llama_config_from_hf(hf: dict[str, Any]) -> LlamaConfig:
    """LlamaConfig from a Llama or Qwen3 config.json, or ExportError naming the setting lmlab lacks."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ExportError(f"model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    n_embd, n_head = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    unsupported = {
        "hidden_act": hf.get("hidden_act", "silu") != "silu",
        "head_dim": hf.get("head_dim") not in (None, n_embd // n_head),
        "rope_parameters": rope.get("rope_type", rope.get("type", "default")) != "default",
        "mlp_bias": bool(hf.get("mlp_bias", False)) != bool(hf.get("attention_bias", False)),
        "use_sliding_window": bool(hf.get("use_sliding_window", False)),
    }
    bad = [key for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ExportError(f"config.json: {bad[0]}={hf.get(bad[0])!r} has no equivalent in lmlab's Llama")
    values = {
        "vocab_size": hf["vocab_size"], "block_size": hf.get("max_position_embeddings", 2048),
        "n_layer": hf.get("num_hidden_layers", 32), "n_head": n_head, "n_embd": n_embd,
        "n_kv_head": hf.get("num_key_value_heads") or n_head, "mlp_hidden": hf.get("intermediate_size", 11008),
        "rope_theta": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        "norm_eps": float(hf.get("rms_norm_eps", 1e-6)), "qk_norm": model_type == "qwen3",
        "bias": bool(hf.get("attention_bias", False)), "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "dropout": 0.0,  # HF's Llama has no dropout outside attention, and that is 0 in released models
    }
    shape = {k: values[k] for k in ("n_layer", "n_head", "n_embd", "n_kv_head")}
    preset = next((name for name, sizes in LLAMA_PRESETS.items() if sizes == shape), "llama")
    return LlamaConfig(preset=preset, **values)


def _rename(name: str, pairs: list[tuple[str, str]]) -> str:
    for ours, theirs in pairs:
        name = name.replace(ours, theirs)
    return name


def to_llama_state_dict(model: Llama) -> dict[str, Tensor]:
    config = model.config
    widths = [config.n_embd, *2 * [config.n_kv_head * (config.n_embd // config.n_head)]]
    out = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu", torch.float32)
        if name == "lm_head.weight" and config.tie_embeddings:
            continue  # HF re-ties it to model.embed_tokens.weight on load
        if ".attn.c_attn." in name:
            prefix, kind = _rename(name, RENAMES).split(".attn.c_attn.")
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), tensor.split(widths), strict=True):
                out[f"{prefix}.self_attn.{proj}.{kind}"] = part.contiguous()
            continue
        out[_rename(name, RENAMES)] = tensor.contiguous()
    return out


def from_llama_state_dict(weights: dict[str, Tensor], config: LlamaConfig) -> dict[str, Tensor]:
    """HF Llama / Qwen3 tensors -> lmlab Llama state dict (q, k, v joined into c_attn)."""
    back = [(theirs, ours) for ours, theirs in reversed(RENAMES)]
    out: dict[str, Tensor] = {}
    for name, tensor in weights.items():
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name or "rotary_emb" in name:
            continue  # joined with q_proj below; rotary tables are recomputed
        tensor = tensor.float()
        if ".self_attn.q_proj." in name:
            k, v = (weights[name.replace("q_proj", p)].float() for p in ("k_proj", "v_proj"))
            tensor = torch.cat([tensor, k, v])  # (C + 2 * nkv * hs, ...)
            name = name.replace(".self_attn.q_proj.", ".attn.c_attn.")
        out[_rename(name, back).replace(".self_attn.", ".attn.")] = tensor.contiguous()
    if config.tie_embeddings or "lm_head.weight" not in out:
        out["lm_head.weight"] = out.get("transformer.wte.weight")
    return out


# ----------------------------------------------------------------------------------------------------------
# Export and import


def export_llama(run: LoadedRun, out: str | Path, force: bool = False) -> Path:
    """Write `run` as a Llama (or, with QK-norm, Qwen3) directory that transformers' Auto classes load, with
    the same tokenizer files, generation config and model card as a GPT-2 export (export.hf.export_hf)."""
    config = check_llama_expressible(run.model, run.config.model_name)
    hf = {**llama_hf_config(config, run.tokenizer.boundary_id), "lmlab": export_metadata(run)}
    return write_hf_folder(run, out, hf, to_llama_state_dict(run.model), config.block_size, force)


def load_llama_dir(hf_dir: str | Path) -> tuple[Llama, Any]:
    """A local Llama or Qwen3 directory (config.json, model.safetensors, tokenizer.json) as an lmlab Llama."""
    hf_dir = Path(hf_dir)
    hf = read_hf_config(hf_dir)
    config = llama_config_from_hf(hf)
    check_model_fits(Llama, config, training=False, what=f"{hf_dir}'s model")  # before the weights are read
    weights, tokenizer = read_weights_and_tokenizer(hf_dir, config.vocab_size)
    return fill(Llama(config), from_llama_state_dict(weights, config), hf_dir, f"a {hf['model_type']}"), tokenizer


def import_llama(hf_dir: str | Path, out: str | Path, data: dict[str, Any] | None = None) -> LoadedRun:
    """Turn a Llama or Qwen3 directory into an lmlab run at `out` (step 0, fresh optimizer), which samples,
    evaluates, and fine-tunes with `lmlab train --out OUT --resume`; as export.hf.import_hf for GPT-2."""
    out = new_run_folder(out)
    model, tokenizer = load_llama_dir(hf_dir)
    return create_imported_run(out, "llama", model, tokenizer, hf_dir, data)
