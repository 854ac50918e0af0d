"""Muon for the hidden matrices, AdamW for everything else, stepped together as one optimizer.

Muon (Keller Jordan 2024; torch.optim.Muon) replaces each 2-D weight's momentum update by its nearest
semi-orthogonal matrix (a few Newton-Schulz iterations), so every direction of the matrix moves by the same
amount. That suits the matrices inside the network; embeddings (a lookup, one row per token), the output
head, norm gains and biases keep AdamW, as in modded-nanogpt and nanochat.

The trainer sets one scheduled rate on every parameter group; the Muon groups carry `lr_ratio`
(train.muon_lr / train.lr) and step at that multiple of it, so both follow the same warm-up and decay from
their own peaks. The state dict holds both optimizers' states, so checkpoints resume exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lmlab.errors import ConfigError


def split_hidden_matrices(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's parameters, AdamW's): 2-D weights of the network's inside vs embeddings, head, 1-D and others.

    A matrix is left to AdamW when an nn.Embedding owns it (a tied output head included) or its name starts
    with `lm_head` (the output layer, whose rows are per-token like an embedding's)."""
    embedded = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    hidden, other = [], []
    for name, param in model.named_parameters():  # a tied weight appears once
        if not param.requires_grad:
            continue
        is_head = name.split(".")[0] == "lm_head"
        (hidden if param.dim() == 2 and id(param) not in embedded and not is_head else other).append(param)
    return hidden, other


class MuonWithAdamW:
    """The optimizer interface the trainer uses (param_groups, step, zero_grad, state_dict, load_state_dict)
    over torch.optim.Muon and torch.optim.AdamW; either may be absent when a model has no such parameters."""

    def __init__(self, muon: torch.optim.Optimizer | None, adamw: torch.optim.Optimizer | None,
                 muon_lr_ratio: float):
        self.muon, self.adamw = muon, adamw
        for group in muon.param_groups if muon else []:
            group["lr_ratio"] = muon_lr_ratio

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.muon, self.adamw) if o is not None]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    @property
    def state(self) -> dict[Any, Any]:
        return {k: v for optimizer in self.optimizers for k, v in optimizer.state.items()}

    @torch.no_grad()
    def step(self) -> None:
        if self.muon is not None:
            scheduled = [group["lr"] for group in self.muon.param_groups]
            for group in self.muon.param_groups:
                group["lr"] = group["lr"] * group["lr_ratio"]
            self.muon.step()
            for group, lr in zip(self.muon.param_groups, scheduled, strict=True):
                group["lr"] = lr  # what the trainer set, so reading it back shows the schedule
        if self.adamw is not None:
            self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict() if self.muon else {},
                "adamw": self.adamw.state_dict() if self.adamw else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, optimizer in (("muon", self.muon), ("adamw", self.adamw)):
            if optimizer is not None:
                optimizer.load_state_dict(state[key])


class Muon(torch.optim.Muon):
    """torch.optim.Muon with the Newton-Schulz iteration in float32 on CPU. torch's runs it in bfloat16, right
    for GPUs; CPUs without bf16 matmul kernels run a bf16 matmul many times slower than float32 (a 512x128
    X X^T X: 183 vs 9 ms on the 2-core vm), which made a Muon step of the 4x4x128 model ~10x slower than an
    AdamW step. Same update otherwise (momentum, Nesterov, weight decay, the default rate adjustment
    sqrt(max(1, rows/cols))) and the same state dict, so checkpoints of either load in the other."""

    cpu_dtype = torch.float32  # tests set bfloat16 to compare with torch's step bit for bit

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise NotImplementedError("lmlab's Muon takes no closure")
        for group in self.param_groups:
            if group["adjust_lr_fn"] not in (None, "original"):
                raise ConfigError(f"Muon's adjust_lr_fn {group['adjust_lr_fn']!r} is not supported here")
            lr, momentum, (a, b, c) = group["lr"], group["momentum"], group["ns_coefficients"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(param.grad, 1 - momentum)
                update = param.grad.lerp(buf, momentum) if group["nesterov"] else buf
                dtype = self.cpu_dtype if param.device.type == "cpu" else torch.bfloat16
                update = orthogonalize(update, a, b, c, group["ns_steps"], group["eps"], dtype)
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-lr * math.sqrt(max(1, param.shape[0] / param.shape[1])))


def orthogonalize(g: torch.Tensor, a: float, b: float, c: float, steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """The quintic Newton-Schulz iteration X <- aX + (bA + cA^2)X, A = XX^T, on the wide orientation of g
    scaled to Frobenius norm <= 1 (so its spectral norm is too): singular values pushed towards ~1."""
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T  # (cols, rows): the Gram matrix is the small side
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def build_muon(model: nn.Module, *, lr: float, muon_lr: float, weight_decay: float,
               betas: tuple[float, float], fused: bool = False) -> MuonWithAdamW | None:
    """Muon (momentum 0.95, Nesterov, torch's defaults) on the hidden matrices at `muon_lr`, AdamW on the
    rest at `lr`; weight decay on the matrices only, as build_optimizer does for AdamW."""
    hidden, other = split_hidden_matrices(model)
    if any(type(p).__name__ == "DTensor" for p in hidden):  # FSDP shards: Muon must see whole matrices
        raise ConfigError("train.optimizer=muon does not work with FSDP (Muon orthogonalises whole matrices, FSDP "
                          "shards them); use train.parallel=ddp, or train.optimizer=adamw")
    if not hidden and not other:
        return None
    muon = Muon(hidden, lr=lr, weight_decay=weight_decay)  # lr_ratio scales it if hidden else None
    decay = [p for p in other if p.dim() >= 2]
    no_decay = [p for p in other if p.dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None) if groups else None
    return MuonWithAdamW(muon, adamw, muon_lr / lr)
