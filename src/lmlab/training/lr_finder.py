"""The learning-rate range test (Smith 2015, as fastai runs it): train a copy of the model for up to
`num_iter` steps while the rate grows exponentially from `start_lr` to `end_lr`, stop once the smoothed
loss passes `diverge` x its best, and suggest a rate from the loss-vs-LR curve. The real model and its
optimizer are never touched: the sweep runs on a deep copy with its own optimizer and batch generator.

The curve that is judged is the raw loss smoothed by a centred moving average: the bias-corrected EMA that
decides when to stop lags about 1/(1 - beta) = 50 steps, several decades of rate on a 100-step sweep, which
put the old suggestions on the flat part (2e-4 for an MLP that trains well at 3e-3).

Suggestion rules, all judged before the smoothed minimum: "minimum" (the rate at the lowest loss, divided by
10), "steep" (the steepest descent of the loss against log(rate)), and "valley" (the default: the two
combined, their geometric mean, with the steepest point kept between minimum/100 and minimum/3 so one noisy
slope cannot pull it onto the flat start or onto the edge of divergence).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmlab.config import TrainConfig
from lmlab.data.datasets import TokenDataset
from lmlab.files import atomic_write
from lmlab.training.step import build_optimizer, resolve_device

RULES = ("valley", "minimum", "steep")


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed (centred moving average of raw_losses)
    raw_losses: list[float] = field(default_factory=list)
    suggestion: float | None = None
    rule: str = "valley"
    marks: dict[str, float] = field(default_factory=dict)  # the rates the suggestion was built from

    def plot(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.lrs, self.raw_losses, color="lightgray", lw=0.8, label="loss")
        ax.plot(self.lrs, self.losses, color="tab:blue", label="smoothed")
        styles = {"minimum": ("tab:green", "lowest loss"), "steep": ("tab:orange", "steepest descent")}
        for name, lr in self.marks.items():
            color, label = styles.get(name, ("gray", name))
            ax.axvline(lr, color=color, ls=":", lw=1, label=f"{label}: {lr:.2e}")
        if self.suggestion:
            at = min(range(len(self.lrs)), key=lambda i: abs(math.log(self.lrs[i] / self.suggestion)))
            ax.plot([self.suggestion], [self.losses[at]], "ro", ms=8,
                    label=f"suggested ({self.rule}): {self.suggestion:.2e}")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:  # the divergence at the end would squash the part that matters
            low, high = min(finite), self.losses[0]
            ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.3 * (high - low + 1e-9))
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title="learning-rate range test")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight"))
        plt.close(fig)
        return Path(path)


def smooth(values: list[float], half_window: int | None = None) -> list[float]:
    """Centred moving average (shorter at the ends): no lag, unlike an EMA."""
    n = len(values)
    h = max(1, n // 25) if half_window is None else half_window
    return [sum(values[max(0, i - h) : i + h + 1]) / len(values[max(0, i - h) : i + h + 1]) for i in range(n)]


def _marks(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """The lowest point, and the steepest descent (per unit of log rate) before it, skipping the first 10 %."""
    n = len(losses)
    low = min(range(n), key=losses.__getitem__)
    start = min(n // 10, max(low - 1, 0))
    slopes = {i: (losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
              for i in range(max(start, 1), min(low, n - 1))}
    marks = {"minimum": lrs[low]}
    if slopes:
        steepest = min(slopes, key=slopes.__getitem__)
        if slopes[steepest] < 0:
            marks["steep"] = lrs[steepest]
    return marks


def suggest(lrs: list[float], losses: list[float], rule: str = "valley") -> float | None:
    """A rate from an already smoothed loss-vs-rate curve (see the module docstring for the rules)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if len(losses) < 3:
        return None
    marks = _marks(lrs, losses)
    lowest = marks["minimum"]
    if rule == "minimum":
        return lowest / 10
    steep = marks.get("steep")
    if rule == "steep":
        return steep if steep is not None else lowest / 10
    if steep is None:
        return lowest / 10
    steep = min(max(steep, lowest / 100), lowest / 3)
    return math.sqrt(steep * lowest / 10)


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
    result.losses = smooth(result.raw_losses)
    result.suggestion = suggest(result.lrs, result.losses, rule)
    if len(result.losses) >= 3:
        result.marks = _marks(result.lrs, result.losses)
    return result
