"""GPT: token and learned position embeddings, pre-LayerNorm blocks (causal self-attention, then an MLP,
each added back to the residual stream), a final LayerNorm and an output layer tied to the token embedding.

The configuration can express GPT-2 exactly (tanh-approximated GELU, LayerNorm eps 1e-5, biases, learned
positions, tied embeddings), and parameter names follow HF's GPT2LMHeadModel (transformer.wte, transformer.h.0
.attn.c_attn, ...) so converting to and from transformers is a rename plus a transpose (HF's Conv1D stores
weights as (in, out); nn.Linear as (out, in)).

Init as GPT-2: normal(0, 0.02) everywhere, and the projections that write into the residual stream scaled
by 1/sqrt(2 * n_layer), because each of the 2 * n_layer residual branches adds its variance to the stream.
Why GPT-2's block is written here though llama.py can express it (its GPT2_SWITCHES): this file is the
rung a reader meets first and the one exported to GPT-2, so it reads as GPT-2 does, top to bottom with no
switches, where Llama's block has to branch on each of its seven. The two cannot drift apart unnoticed:
tests/models/test_llama.py checks that Llama with GPT-2's switches computes exactly this model's logits from the
same weights. `GPT.decoder` is not a third copy of the block but the sampler's fast path over the same
weights, checked against `forward` bit for bit (tests/models/test_gpt.py); a change to the block is made in
`Block` and there.
Shape legend: B batch, T time, C width (n_embd), V vocabulary, L layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.attention import KVBuffer, KVCache, MultiHeadAttention, cache_length, document_mask
from lmlab.models.base import ModelOutput, causal_lm_loss
from lmlab.models.dropout import Dropout
from lmlab.models.generation import GenerationMixin
from lmlab.names import did_you_mean

# Shapes in the spirit of the GPT-3 paper's table (n_layer, n_head, n_embd; head size = n_embd / n_head),
# from makemore's default transformer up to the GPT-2 family. Sizes a CPU trains in minutes come first.
PRESETS: dict[str, dict[str, int]] = {
    "gpt-nano": {"n_layer": 3, "n_head": 3, "n_embd": 48},
    "gpt": {"n_layer": 4, "n_head": 4, "n_embd": 64},  # makemore's default transformer
    "gpt-micro": {"n_layer": 4, "n_head": 4, "n_embd": 128},  # nanoGPT's CPU Shakespeare run
    "gpt-mini": {"n_layer": 6, "n_head": 6, "n_embd": 192},
    "gpt-small": {"n_layer": 6, "n_head": 6, "n_embd": 384},  # nanoGPT's GPU Shakespeare run
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768},  # GPT-2 124M, GPT-3 Small
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024},  # GPT-3 Medium
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280},
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600},
}

# Modules, not functions, so forward hooks (the inspector) see the activation like any other layer.
ACTIVATIONS = {
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # GPT-2's "gelu_new"
    "gelu": lambda: nn.GELU(),  # the exact erf form
}


@dataclass(frozen=True, kw_only=True, slots=True)
class GPTConfig:
    vocab_size: int = 0  # filled in from the tokenizer
    block_size: int = 0  # the context: filled in from the data (longest line, or data.block_size)
    pad_id: int = 0
    preset: str = "gpt"  # supplies n_layer, n_head and n_embd that are not given explicitly
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    dropout: float = 0.15  # on embeddings, attention weights and residual branches (GPT-2: 0.1)
    bias: bool = True  # in Linear layers and LayerNorms (GPT-2: True)
    # None: GPT-2's tanh form for the gpt2* presets (exact HF parity), the exact erf form for the others,
    # which is faster on CPU (forward+backward 1.2-1.8x, benchmarks/RESULTS.md) and trains as well
    activation: Literal["gelu_tanh", "gelu"] | None = None
    layer_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    # Ablations for the notes' lessons (lmlab sweep --experiment attention-scaling / residual): attention
    # scores without the 1/sqrt(head size) scale, and blocks whose branches replace the stream instead of
    # adding to it (no identity path for the gradient).
    attn_scale: bool = True
    residual: bool = True

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown model.preset {self.preset!r}; {did_you_mean(self.preset, PRESETS)}choose one "
                              f"of {', '.join(PRESETS)}")
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: fill in once, at construction
        if self.activation is None:
            object.__setattr__(self, "activation", "gelu_tanh" if self.preset.startswith("gpt2") else "gelu")
        for name in ("n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be a multiple of model.n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"model.layer_norm_eps must be positive, got {self.layer_norm_eps}")


def preset_config(preset: str) -> type[GPTConfig]:
    """A GPTConfig whose default preset is `preset`: what a registry name such as `gpt2` builds."""
    return dataclasses.make_dataclass(
        f"GPTConfig_{preset.replace('-', '_')}", [("preset", str, dataclasses.field(default=preset))],
        bases=(GPTConfig,), frozen=True, kw_only=True, slots=True,
    )


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.act = ACTIVATIONS[config.activation]()
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, 4C) inside, (B, T, C) out


class Block(nn.Module):
    """Pre-LayerNorm: normalise the input of each branch, never the residual stream itself, so gradients
    reach the embeddings through an identity path."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = MultiHeadAttention(config.n_embd, config.n_head, bias=config.bias, dropout=config.dropout,
                                       scale=None if config.attn_scale else 1.0)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)
        self.residual = config.residual

    def forward(self, x: Tensor, past: KVCache | None, use_cache: bool,
                attn_mask: Tensor | None = None) -> tuple[Tensor, KVCache | None]:
        attended, present = self.attn(self.ln_1(x), causal=True, past_key_value=past, use_cache=use_cache,
                                      attn_mask=attn_mask)
        x = x + attended if self.residual else attended  # (B, T, C)
        x = x + self.mlp(self.ln_2(x)) if self.residual else self.mlp(self.ln_2(x))
        return x, present


class GPT(GenerationMixin, nn.Module):
    supports_cache = True  # generate() feeds one token per step and passes past_key_values back
    packs_examples = True  # forward(position_ids=...) keeps the examples of a packed row apart

    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.vocab_size < 1 or config.block_size < 1:
            raise ConfigError("model.vocab_size and model.block_size must be set (build_model fills them in)")
        self.config = config
        self.max_context = config.block_size
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "wpe": nn.Embedding(config.block_size, config.n_embd),
            "drop": Dropout(config.dropout),
            "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            "ln_f": nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # one (V, C) matrix reads and writes tokens
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=residual_std)

    def new_cache(self, capacity: int) -> list[KVBuffer]:
        """Empty preallocated KV caches, one per layer, for `generate` to fill in place."""
        return [KVBuffer(capacity) for _ in self.transformer.h]

    def decoder(self) -> Callable[[Tensor, list[KVBuffer]], Tensor]:
        """`step(token_ids, cache)`: logits (B, V) for one new token per row, `token_ids` (B,), at the next
        position of `cache`, which takes its keys and values. What `forward` computes for T = 1, written as
        functions of the same weights, bit for bit the same logits (tests/models/test_gpt.py).

        `generate` makes one per call and steps it once per token. At the sizes a CPU samples, a token's
        arithmetic costs less than what surrounds it in `forward`: module calls, (B, T, C) reshapes, a position
        lookup, the output object, and nn.Module attribute lookups, which is why the weights are looked up once,
        here. A token takes a third of the CPU time it took through `forward` (benchmarks/RESULTS.md).
        Evaluation only: no dropout, and forward hooks do not see it.
        """
        config = self.config
        C, nh, eps = config.n_embd, config.n_head, config.layer_norm_eps
        scale, keep = (None if config.attn_scale else 1.0), (1.0 if config.residual else 0.0)
        approximate = "tanh" if config.activation == "gelu_tanh" else "none"
        wte, wpe, ln_f = self.transformer.wte.weight, self.transformer.wpe.weight, self.transformer.ln_f
        layers = [(b.ln_1.weight, b.ln_1.bias, b.attn.c_attn.weight, b.attn.c_attn.bias, b.attn.c_proj.weight,
                   b.attn.c_proj.bias, b.ln_2.weight, b.ln_2.bias, b.mlp.c_fc.weight, b.mlp.c_fc.bias,
                   b.mlp.c_proj.weight, b.mlp.c_proj.bias) for b in self.transformer.h]
        lm_head, ln_f_weight, ln_f_bias = self.lm_head.weight, ln_f.weight, ln_f.bias

        def step(token_ids: Tensor, cache: list[KVBuffer]) -> Tensor:
            position, B = cache[0].length, token_ids.size(0)
            if position >= config.block_size:
                raise ValueError(f"the KV cache holds {position} tokens, the whole context of {config.block_size}")
            x = F.embedding(token_ids, wte) + wpe[position]  # (B, C)
            for (ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fc_proj_w, fc_proj_b), \
                    buffer in zip(layers, cache, strict=True):
                qkv = F.linear(F.layer_norm(x, (C,), ln1_w, ln1_b, eps), attn_w, attn_b)  # (B, 3C)
                q, k, v = qkv.view(B, 3, nh, 1, C // nh).unbind(1)  # 3 x (B, nh, 1, hs)
                k, v = buffer.append(k, v)  # (B, nh, S, hs)
                y = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, nh, 1, hs): one query needs no mask
                x = keep * x + F.linear(y.reshape(B, C), proj_w, proj_b)
                h = F.gelu(F.linear(F.layer_norm(x, (C,), ln2_w, ln2_b, eps), fc_w, fc_b), approximate=approximate)
                x = keep * x + F.linear(h, fc_proj_w, fc_proj_b)  # (B, C)
            return F.linear(F.layer_norm(x, (C,), ln_f_weight, ln_f_bias, eps), lm_head)  # (B, V)

        return step

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
        """`position_ids` (B, T): packed rows (data/datasets.py `pack`), each example's positions from 0 and
        its attention confined to itself; None: one sequence a row, positions from the cache's length."""
        T = input_ids.size(1)
        start = cache_length(past_key_values[0]) if past_key_values else 0  # tokens already in the cache
        attn_mask = None
        if position_ids is not None:
            positions = position_ids  # (B, T)
            attn_mask = document_mask(position_ids)  # (B, 1, T, T), shared by every layer
        elif start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the context of {self.config.block_size}; "
                "generate() slides the window for you"
            )
        else:
            positions = torch.arange(start, start + T, device=input_ids.device)  # (T,)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(positions)  # (B, T, C)
        x = self.transformer.drop(x)
        presents: list[KVCache] = []
        for i, block in enumerate(self.transformer.h):
            x, present = block(x, past_key_values[i] if past_key_values else None, use_cache, attn_mask)
            if use_cache:
                presents.append(present)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, past_key_values=presents if use_cache else None)
