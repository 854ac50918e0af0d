"""What the inspector measures on one tensor of a sampled step, appended to the layer's or the parameter's
record: an activation's mean, std, histogram, saturated (tanh/sigmoid) and dead (ReLU/GELU) shares; an
attention map's entropy per head; a gradient's mean and std; a parameter's grad:data ratio and the
update:data ratio log10(std(dw) / std(w)) of the step that really happened (right for Adam and SGD alike).
"""

from __future__ import annotations

import math
from collections import deque

import torch
from torch import Tensor

from lmlab.inspector.stats import HIST_BINS, MAX_MAP, LayerStats, ParamStats, compact

SATURATION = 0.97  # |tanh| above this passes almost no gradient (1 - t^2 < 0.06), as in lecture 3
GELU_ALIVE = 0.01  # GELU(x) < -0.01 for x in (-2.6, 0): the slope there is still far from 0


def _std(x: Tensor) -> float:
    return x.std().item() if x.numel() > 1 else abs(x.item())


def record_activation(entry: LayerStats, out: Tensor, step: int, alive: deque | None) -> None:
    """`alive`: the recent samples' fired-units masks of a ReLU/GELU layer (a unit is dead when it fired for
    no example in any of them)."""
    x = out.float()
    kind = entry.kind
    finite = bool(torch.isfinite(x).all())
    lo, hi = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}.get(kind, (None, None))
    if lo is None:
        lo, hi = (x.min().item(), x.max().item()) if finite and x.numel() else (0.0, 0.0)
        hi = hi if hi > lo else lo + 1e-6
    hist = torch.histc(x, HIST_BINS, lo, hi) if finite else torch.zeros(HIST_BINS)
    entry.step.append(step)
    entry.mean.append(compact(x.mean().item()))
    entry.std.append(compact(x.std().item()) if x.numel() > 1 else 0.0)
    entry.hist.append([int(c) for c in hist.tolist()])
    entry.hist_range.append([compact(lo), compact(hi)])
    if kind == "tanh":
        entry.saturated.append(compact((x.abs() > SATURATION).float().mean().item()))
    elif kind == "sigmoid":
        entry.saturated.append(compact(((x - 0.5).abs() > SATURATION / 2).float().mean().item()))
    if alive is not None and x.dim() >= 2:
        flat = x.reshape(-1, x.size(-1))  # (N, units)
        # GELU and SiLU pass gradient for negative inputs down to about -3 (outputs below -GELU_ALIVE): such a
        # unit is alive though it never outputs a positive value; ReLU's is 0 for every negative input.
        fired = flat > 0 if kind == "relu" else (flat > 0) | (flat < -GELU_ALIVE)
        alive.append(fired.any(0))  # (units,): fired for some example in the batch
        ever = torch.stack(list(alive)).any(0)
        entry.dead.append(compact(1.0 - ever.float().mean().item()))


def record_attention(entry: LayerStats, attention: Tensor) -> list[list[list[float]]]:
    """Mean entropy per head (nats) into the record; returns the first example's map (nh, T, T), cut."""
    p = attention.float().clamp_min(0)  # (B, nh, T, T)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)  # (B, nh, T): masked zeros add nothing
    entry.attn_entropy.append([compact(v) for v in entropy.mean(dim=(0, 2)).tolist()])
    T = p.size(-1)
    causal = bool((p.triu(1) == 0).all()) if p.size(-2) == T else False
    keys = torch.arange(1, T + 1, dtype=torch.float) if causal else torch.full((p.size(-2),), float(T))  # (T,)
    entry.attn_uniform.append(compact(keys.log().mean().item()))  # a uniform map's entropy over those keys
    example = p[0, :, :MAX_MAP, :MAX_MAP]  # (nh, T, T) of the first example
    return [[[compact(v) for v in row] for row in head] for head in example.tolist()]


def record_gradient(entry: LayerStats, grad: Tensor) -> None:
    g = grad.detach().float()
    entry.grad_mean.append(compact(g.mean().item()))
    entry.grad_std.append(compact(g.std().item()) if g.numel() > 1 else 0.0)


def record_parameter(entry: ParamStats, p: Tensor, step: int) -> None:
    """After backward, before the optimizer step: the weight's size and its gradient's."""
    g, w = p.grad.detach().float(), p.detach().float()
    w_std, g_std = _std(w), _std(g)
    entry.step.append(step)
    entry.data_std.append(compact(w_std))
    entry.grad_mean.append(compact(g.mean().item()))
    entry.grad_std.append(compact(g_std))
    entry.grad_data.append(compact(g_std / w_std) if w_std > 0 else None)


def record_update(entry: ParamStats, before: Tensor, after: Tensor) -> None:
    """After the optimizer step: how far it moved the weight, relative to the weight's size."""
    update = (after.detach() - before).float()
    w_std, u_std = _std(before.float()), _std(update)
    ratio = math.log10(u_std / w_std) if u_std > 0 and w_std > 0 else None
    entry.update_data.append(compact(ratio) if ratio is not None else None)
    entry.moved = bool(entry.moved) or bool(update.abs().max().item() > 0)
