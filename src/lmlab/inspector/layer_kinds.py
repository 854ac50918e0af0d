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


class FunctionWatch(TorchFunctionMode):
    """Notes activation functions called inside modules that are not themselves activation modules."""

    def __init__(self, stack: list[str], kinds: dict[str, str], found: dict[str, str]):
        super().__init__()
        self.stack, self.kinds, self.found = stack, kinds, found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kind = FUNCTIONAL.get(func)
        if kind is not None and self.stack and self.kinds.get(self.stack[-1]) not in ACTIVATION_KINDS:
            self.found.setdefault(self.stack[-1], getattr(func, "__name__", kind))  # silu, not its kind
        return func(*args, **(kwargs or {}))
