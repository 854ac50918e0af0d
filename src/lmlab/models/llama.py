"""Llama: the decoder block of today's open models (Llama 2/3, Qwen3, nanochat) beside GPT-2's.

What changed since GPT-2, each a switch of LlamaConfig so the ladder can turn them on one at a time
(`gpt+rope`, `gpt+rmsnorm`, ... in the registry start from GPT-2's settings and flip one):
- rotary position embeddings instead of a learned position table (`position`): q and k are rotated by
  their position, so attention scores depend on distance only and the model runs past its training context;
- RMSNorm instead of LayerNorm (`norm`): no mean subtraction, no bias;
- a gated MLP, SwiGLU (`mlp`): silu(x W_gate) * (x W_up) W_down, with 8/3 C hidden units so it has the
  parameters of GPT's 4 C one; ReLU² (nanochat, modded-nanogpt) as an ungated option;
- QK-norm (`qk_norm`, Qwen3): an RMSNorm on each head's queries and keys;
- grouped-query attention (`n_kv_head` < `n_head`): the KV cache shrinks by n_head / n_kv_head;
- no biases (`bias`), and untied input and output embeddings as an option (`tie_embeddings`).
With every switch at GPT-2's value the model computes exactly what lmlab's GPT does, parameter names
included (tested), so each rung of the ablation differs from `gpt` in one thing only.

Parameter names follow lmlab's GPT (transformer.wte, transformer.h.0.attn.c_attn, ...); export/llama.py maps
them to HF's LlamaForCausalLM / Qwen3ForCausalLM (q_proj, gate_proj, ...).
Shape legend: B batch, T time, C width (n_embd), H MLP hidden width, V vocabulary, hs head size.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.attention import (
    KVBuffer,
    KVCache,
    MultiHeadAttention,
    RollingKVBuffer,
    cache_length,
    document_mask,
    rotary_tables,
)
from lmlab.models.base import ModelOutput, causal_lm_loss
from lmlab.models.dropout import Dropout
from lmlab.models.generation import GenerationMixin
from lmlab.names import did_you_mean

# The GPT's shapes (gpt.py), with key/value heads: grouped-query attention at the 124M size, as Llama 3.
LLAMA_PRESETS: dict[str, dict[str, int]] = {
    "llama-nano": {"n_layer": 3, "n_head": 3, "n_embd": 48, "n_kv_head": 3},
    "llama": {"n_layer": 4, "n_head": 4, "n_embd": 64, "n_kv_head": 4},  # makemore's default transformer
    "llama-micro": {"n_layer": 4, "n_head": 4, "n_embd": 128, "n_kv_head": 4},  # nanoGPT's CPU Shakespeare
    "llama-mini": {"n_layer": 6, "n_head": 6, "n_embd": 192, "n_kv_head": 6},
    "llama-small": {"n_layer": 6, "n_head": 6, "n_embd": 384, "n_kv_head": 6},
    "llama-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_kv_head": 4},  # GPT-2 124M's trunk
}

# The switches at GPT-2's values: what the `gpt+...` ablation rungs start from (and lmlab's GPT defaults).
# The GELU is the exact one, as lmlab's GPT rungs use (GPT-2's own presets keep the tanh form).
GPT2_SWITCHES = {"position": "learned", "norm": "layernorm", "mlp": "gelu", "qk_norm": False,
                 "bias": True, "tie_embeddings": True, "norm_eps": 1e-5, "dropout": 0.15}


@dataclass(frozen=True, kw_only=True, slots=True)
class LlamaConfig:
    vocab_size: int = 0  # filled in from the tokenizer
    block_size: int = 0  # the training context and generation's sliding window (filled in from the data)
    pad_id: int = 0
    preset: str = "llama"  # supplies n_layer, n_head, n_embd and n_kv_head that are not given explicitly
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    n_kv_head: int | None = None  # key/value heads (None: the preset's, or n_head if that is given); fewer:
    # grouped-query attention
    mlp_hidden: int = 0  # 0: 4 C, or 8/3 C rounded up to a multiple of 8 for swiglu (the same parameters)
    position: Literal["rope", "learned"] = "rope"
    rope_theta: float = 10000.0
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    mlp: Literal["swiglu", "relu2", "gelu", "gelu_tanh"] = "swiglu"
    qk_norm: bool = False
    bias: bool = False  # in Linear layers and LayerNorms
    tie_embeddings: bool = True  # small models do better tied; Llama's larger ones untie
    dropout: float = 0.15  # the GPT's value on names.txt, where 25K names over-fit a model this size

    def __post_init__(self) -> None:
        if self.preset not in LLAMA_PRESETS:
            raise ConfigError(f"unknown model.preset {self.preset!r}; {did_you_mean(self.preset, LLAMA_PRESETS)}"
                              f"choose one of {', '.join(LLAMA_PRESETS)}")
        if self.n_kv_head is None and self.n_head is not None:
            object.__setattr__(self, "n_kv_head", self.n_head)  # heads given, key/value heads not: one each
        for name, value in LLAMA_PRESETS[self.preset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: fill in once, at construction
        for name in ("n_layer", "n_head", "n_embd", "n_kv_head"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be a multiple of model.n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"model.n_head ({self.n_head}) must be a multiple of model.n_kv_head "
                              f"({self.n_kv_head})")
        if self.position == "rope" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"rotary embeddings turn pairs of dimensions: the head size n_embd / n_head "
                              f"({self.n_embd // self.n_head}) must be even")
        if self.mlp_hidden < 0:
            raise ConfigError(f"model.mlp_hidden must be >= 0 (0: the default width), got {self.mlp_hidden}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not (self.norm_eps > 0 and self.rope_theta > 0):
            raise ConfigError("model.norm_eps and model.rope_theta must be positive")

    @property
    def hidden(self) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return 8 * math.ceil(8 * self.n_embd / 3 / 8)
        return 4 * self.n_embd


def variant_config(name: str, **defaults) -> type[LlamaConfig]:
    """A LlamaConfig with other defaults: what a registry name such as `gpt+rope` or `llama-mini` builds."""
    hints = typing.get_type_hints(LlamaConfig)  # keep each field's type (Literal choices included)
    fields = [(key, hints[key], dataclasses.field(default=value)) for key, value in defaults.items()]
    class_name = "LlamaConfig_" + name.replace("-", "_").replace("+", "_")
    return dataclasses.make_dataclass(class_name, fields, bases=(LlamaConfig,), frozen=True, kw_only=True,
                                      slots=True)


def make_norm(config: LlamaConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class MLP(nn.Module):
    """c_fc is the up projection, c_gate the gate (SwiGLU only), c_proj the down projection."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.kind = config.mlp
        self.c_fc = nn.Linear(config.n_embd, config.hidden, bias=config.bias)
        self.c_gate = nn.Linear(config.n_embd, config.hidden, bias=config.bias) if config.mlp == "swiglu" else None
        self.c_proj = nn.Linear(config.hidden, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        up = self.c_fc(x)  # (B, T, H)
        if self.kind == "swiglu":
            h = F.silu(self.c_gate(x)) * up
        elif self.kind == "relu2":
            h = F.relu(up).square()
        else:
            h = F.gelu(up, approximate="tanh" if self.kind == "gelu_tanh" else "none")
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm, as the GPT: normalise each branch's input, never the residual stream itself."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = MultiHeadAttention(config.n_embd, config.n_head, bias=config.bias, dropout=config.dropout,
                                       n_kv_head=config.n_kv_head, qk_norm=config.qk_norm,
                                       norm_eps=config.norm_eps)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, past: KVCache | None,
                use_cache: bool, attn_mask: Tensor | None = None) -> tuple[Tensor, KVCache | None]:
        attended, present = self.attn(self.ln_1(x), causal=True, past_key_value=past, use_cache=use_cache,
                                      rope=rope, attn_mask=attn_mask)
        x = x + attended  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))
        return x, present


class Llama(GenerationMixin, nn.Module):
    supports_cache = True  # generate() feeds one token per step and passes past_key_values back
    packs_examples = True  # forward(position_ids=...) keeps the examples of a packed row apart

    def __init__(self, config: LlamaConfig):
        super().__init__()
        if config.vocab_size < 1 or config.block_size < 1:
            raise ConfigError("model.vocab_size and model.block_size must be set (build_model fills them in)")
        self.config = config
        self.max_context = config.block_size  # generation slides its window here, as the GPT's
        layers = {"wte": nn.Embedding(config.vocab_size, config.n_embd)}
        if config.position == "learned":
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict({
            **layers,
            "drop": Dropout(config.dropout),
            "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            "ln_f": make_norm(config),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        # GPT-2's init, so the ablation changes only what it names: normal(0, 0.02), and the projections that
        # write into the residual stream scaled by 1/sqrt(2 * n_layer).
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @property
    def rolling_cache(self) -> bool:
        """Rotary positions are relative, so generate(sliding_window=True) may keep a rolling KV cache."""
        return self.config.position == "rope"

    def new_cache(self, capacity: int, rolling: bool = False) -> list[KVBuffer]:
        """Empty preallocated KV caches, one per layer, for `generate` to fill in place; `rolling` keeps only
        the last `capacity` positions (sliding-window attention, RoPE only: see RollingKVBuffer)."""
        if rolling and not self.rolling_cache:
            raise ValueError("a rolling KV cache needs rotary positions (model.position=rope)")
        return [(RollingKVBuffer if rolling else KVBuffer)(capacity) for _ in self.transformer.h]

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        past_key_values: list[KVCache] | None = None,
        use_cache: bool = False,
        position_ids: Tensor | None = None,
    ) -> ModelOutput:
        """`position_ids` (B, T): packed rows, as the GPT's forward."""
        config = self.config
        T = input_ids.size(1)
        start = cache_length(past_key_values[0]) if past_key_values else 0  # tokens already seen
        attn_mask = None
        if position_ids is not None:
            positions = position_ids  # (B, T)
            attn_mask = document_mask(position_ids)  # (B, 1, T, T), shared by every layer
        elif config.position == "learned" and start + T > config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the context of {config.block_size}; "
                "generate() slides the window for you"
            )
        else:
            positions = torch.arange(start, start + T, device=input_ids.device)  # (T,)
        x = self.transformer.wte(input_ids)  # (B, T, C)
        rope = None
        if config.position == "learned":
            x = x + self.transformer.wpe(positions)
        else:
            rope = rotary_tables(config.n_embd // config.n_head, positions, config.rope_theta)  # 2 x (T, hs)
        x = self.transformer.drop(x)
        presents: list[KVCache] = []
        for i, block in enumerate(self.transformer.h):
            x, present = block(x, rope, past_key_values[i] if past_key_values else None, use_cache, attn_mask)
            if use_cache:
                presents.append(present)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, past_key_values=presents if use_cache else None)
