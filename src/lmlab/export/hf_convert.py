"""The pieces of the HF transformers GPT-2 format, both directions: config.json, the weights and the tokenizer
files, converted from and to lmlab's GPT and tokenizers (hf.py puts them together into a folder).

lmlab's GPT already uses GPT2LMHeadModel's parameter names, so converting is a transpose of the four
Conv1D weight matrices per block (Conv1D stores (in, out), nn.Linear (out, in)) and a config in GPT-2's
vocabulary. Nothing here needs transformers itself: the files are JSON, safetensors and a `tokenizers`
tokenizer.json, so export works without it; the tests load the result with transformers to prove it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmlab.errors import CheckpointError, LmlabError
from lmlab.files import read_json_file
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.tokenizers import Tokenizer
from lmlab.tokenizers.convert import from_hf_backend, hf_backend

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
    ablated = [key for key in ("attn_scale", "residual") if not getattr(config, key, True)]
    if ablated:
        raise ExportError(f"a GPT trained with model.{ablated[0]}=false (an ablation) cannot be expressed as GPT-2, "
                          "whose attention always scales by 1/sqrt(head size) and whose blocks always add to the "
                          "residual stream")
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
        # No pad_token_id: generate() drops an all-ones attention mask, and GPT-2 then warns that input_ids "may
        # be padded" whenever their first token is the pad id, which the boundary (BOS) of every lines-mode
        # prompt is. The tokenizer keeps the boundary as its pad token for batches (with their mask).
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
        processor = read_json_file(path).get("post_processor") or {}
        first = processor.get("single", [])[0]
    except (LmlabError, IndexError, AttributeError, TypeError):
        return False
    return processor.get("type") == "TemplateProcessing" and isinstance(first, dict) and (
        first.get("SpecialToken", {}).get("id") is not None and
        processor.get("special_tokens", {}).get(first["SpecialToken"]["id"], {}).get("ids") == [boundary_id])
