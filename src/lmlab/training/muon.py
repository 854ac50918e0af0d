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
    muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay)  # lr_ratio scales it if hidden else None
    decay = [p for p in other if p.dim() >= 2]
    no_decay = [p for p in other if p.dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None) if groups else None
    return MuonWithAdamW(muon, adamw, muon_lr / lr)
