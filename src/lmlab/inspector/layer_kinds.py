"""What kind of layer a module is (tanh, relu, linear, attention, ...), which modules the inspector hooks,
and a watch for activations called as functions inside a module (which forward hooks cannot see).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

KINDS: tuple[tuple[type, str], ...] = (
    (nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"), (nn.ReLU, "relu"), (nn.GELU, "gelu"),
    (nn.LeakyReLU, "relu"), (nn.SiLU, "gelu"), (nn.Linear, "linear"), (nn.Conv1d, "conv"),
    (nn.Conv2d, "conv"), (nn.Embedding, "embedding"), (nn.LayerNorm, "norm"),
    (nn.modules.batchnorm._BatchNorm, "norm"), (nn.MultiheadAttention, "attention"),
)
NOT_WATCHED = (nn.Dropout, nn.Identity)
ACTIVATION_KINDS = ("tanh", "sigmoid", "relu", "gelu")
# Activations called as functions: a module that calls one hides it from forward hooks.
FUNCTIONAL = {
    torch.tanh: "tanh", torch.Tensor.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.relu: "relu", torch.Tensor.relu: "relu",
    F.relu: "relu", F.leaky_relu: "relu", F.elu: "relu", F.gelu: "gelu", F.silu: "gelu", F.mish: "gelu",
}


def layer_kind(module: nn.Module) -> str:
    if getattr(module, "record_attention", None) is not None:
        return "attention"
    for cls, kind in KINDS:
        if isinstance(module, cls):
            return kind
    return "other"


def is_watched(module: nn.Module) -> bool:
    """Leaf modules and attention blocks get a forward hook; dropout and identities pass values through."""
    if isinstance(module, NOT_WATCHED):
        return False
    leaf = next(module.children(), None) is None
    return leaf or layer_kind(module) == "attention"


SOFTMAX = (F.softmax, torch.softmax, torch.Tensor.softmax)


SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")


def _sdpa_probabilities(query, key, value=None, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """The attention probabilities F.scaled_dot_product_attention computes inside its kernel (before its
    dropout), written out: softmax(q k^T * scale + mask)."""
    scale = query.size(-1) ** -0.5 if scale is None else scale
    if key.size(-3) != query.size(-3) and query.dim() == 4:  # grouped-query attention: keys shared by heads
        key = key.repeat_interleave(query.size(-3) // key.size(-3), dim=-3)
    scores = (query @ key.transpose(-2, -1)).float() * scale  # (B, nh, T, S)
    T, S = scores.shape[-2:]
    if is_causal:
        scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool, device=scores.device).triu(1), float("-inf"))
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    return scores.softmax(-1)


def _softmax_dim(args: tuple, kwargs: dict) -> int | None:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return dim if isinstance(dim, int) else None


class FunctionWatch(TorchFunctionMode):
    """Inside modules, sees what forward hooks cannot: activation functions called as functions (noted), and
    attention computed in a module's own code, whatever its class: a softmax over the last axis of a square
    (..., T, T) score map, or F.scaled_dot_product_attention (its probabilities kept per module, detached)."""

    def __init__(self, stack: list[str], kinds: dict[str, str], found: dict[str, str],
                 attention: dict[str, list[torch.Tensor]] | None = None):
        super().__init__()
        self.stack, self.kinds, self.found = stack, kinds, found
        self.attention = attention if attention is not None else {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = FUNCTIONAL.get(func)
        where = self.stack[-1] if self.stack else None
        if kind is not None and where is not None and self.kinds.get(where) not in ACTIVATION_KINDS:
            self.found.setdefault(where, getattr(func, "__name__", kind))  # silu, not its kind
        out = func(*args, **kwargs)
        # lmlab's own attention modules hand over their maps (record_attention): only the others are read here
        if where is not None and self.kinds.get(where) != "attention":
            if func in SOFTMAX and isinstance(out, torch.Tensor) and out.dim() >= 3 \
                    and out.size(-1) == out.size(-2) > 1 and _softmax_dim(args, kwargs) in (-1, out.dim() - 1):
                self.attention.setdefault(where, []).append(out.detach())
            elif func is F.scaled_dot_product_attention:
                named = dict(zip(SDPA_ARGS, args, strict=False)) | kwargs
                self.attention.setdefault(where, []).append(_sdpa_probabilities(**named).detach())
        return out
