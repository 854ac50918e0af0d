"""The learning-rate range test (Smith 2015, as fastai runs it): train a copy of the model for up to
`num_iter` steps while the rate grows exponentially from `start_lr` to `end_lr`, stop once the smoothed
loss passes `diverge` x its best, and suggest a rate from the loss-vs-LR curve. The real model and its
optimizer are never touched: the sweep runs on a deep copy with its own optimizer and batch generator.

Suggestion rules: "valley" (fastai's default: the middle of the longest stretch over which the loss keeps
falling), "minimum" (the rate at the lowest loss, divided by 10), "steep" (the steepest descent).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmlab.config import TrainConfig
from lmlab.data.datasets import TokenDataset
from lmlab.training.trainer import build_optimizer, resolve_device

RULES = ("valley", "minimum", "steep")


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed (bias-corrected EMA)
    raw_losses: list[float] = field(default_factory=list)
    suggestion: float | None = None
    rule: str = "valley"

    def plot(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses)
        if self.suggestion:
            at = min(range(len(self.lrs)), key=lambda i: abs(math.log(self.lrs[i] / self.suggestion)))
            ax.plot([self.lrs[at]], [self.losses[at]], "ro", label=f"{self.rule}: {self.suggestion:.2e}")
            ax.legend()
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="learning-rate range test")
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        return Path(path)


def suggest(lrs: list[float], losses: list[float], rule: str = "valley") -> float | None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    n = len(losses)
    if n < 3:
        return None
    if rule == "minimum":
        return lrs[min(range(n), key=losses.__getitem__)] / 10
    if rule == "steep":
        slopes = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(n - 1)]
        return lrs[min(range(n - 1), key=slopes.__getitem__)]
    # valley: the longest decreasing subsequence of the loss ends where the loss bottoms out; the valley is
    # the stretch of that many points before its end (plateaus before the descent are not part of it), and
    # a point half-way into it is still well before the minimum's instability.
    length = [1] * n
    for i in range(1, n):
        length[i] = 1 + max((length[j] for j in range(i) if losses[j] > losses[i]), default=0)
    end = max(range(n), key=lambda i: (length[i], -i))
    start = end - length[end] + 1
    return lrs[start + (end - start) // 2]


def lr_find(model: torch.nn.Module, train_data: TokenDataset, config: TrainConfig, *, start_lr: float = 1e-7,
            end_lr: float = 10.0, num_iter: int = 100, beta: float = 0.98, diverge: float = 4.0,
            rule: str = "valley") -> LRFindResult:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    device = resolve_device(config.device)
    probe = copy.deepcopy(model).to(device).train()
    optimizer = build_optimizer(probe, config)
    generator = torch.Generator().manual_seed(config.seed)
    result = LRFindResult(rule=rule)
    if optimizer is None:
        return result
    avg, best = 0.0, math.inf
    for i in range(num_iter):
        lr = start_lr * (end_lr / start_lr) ** (i / max(num_iter - 1, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        input_ids, labels = train_data.sample_batch(config.batch_size, generator)
        loss = probe(input_ids.to(device), labels=labels.to(device)).loss
        value = loss.item()
        if not math.isfinite(value):
            break
        avg = beta * avg + (1 - beta) * value
        smoothed = avg / (1 - beta ** (i + 1))
        result.lrs.append(lr)
        result.raw_losses.append(value)
        result.losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > diverge * best:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(probe.parameters(), config.grad_clip)
        optimizer.step()
    result.suggestion = suggest(result.lrs, result.losses, rule)
    return result
