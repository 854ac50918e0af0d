"""What one optimizer step is made of, apart from the loop that repeats it: the device, the optimizer for a
model and config, the tokens a batch predicts, and gradient accumulation over micro-batches."""

from __future__ import annotations

import contextlib

import torch

from lmlab.config import TrainConfig
from lmlab.data.datasets import IGNORE_INDEX, PackedBatch, next_token_targets
from lmlab.errors import LmlabError
from lmlab.training.muon import build_muon


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LmlabError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def build_optimizer(model: torch.nn.Module, config: TrainConfig, fused: bool = False) -> torch.optim.Optimizer | None:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "muon":
        return build_muon(model, lr=config.lr, muon_lr=config.muon_lr, weight_decay=config.weight_decay,
                          betas=(config.beta1, config.beta2), fused=fused)
    # Decay matrices only: decaying biases, norm gains and 1-D parameters only fights the normalisation.
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # torch picks its multi-tensor (foreach) kernels by default on CUDA only; on a CPU the per-tensor loop
    # costs a small model's step more than its arithmetic (benchmarks/RESULTS.md)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused or None,
                             foreach=None if fused else True)


def predicted_tokens(labels: torch.Tensor) -> int:
    """Targets a language-model batch scores: labels are shifted inside the model, -100 is ignored."""
    return int((next_token_targets(labels) != IGNORE_INDEX).sum())


def batch_to(batch: tuple, device: torch.device) -> tuple:
    """A batch's tensors on `device`, the batch's kind (padded pair or PackedBatch) kept."""
    moved = [t.to(device, non_blocking=True) for t in batch]
    return PackedBatch(*moved) if isinstance(batch, PackedBatch) else tuple(moved)


def accumulate_gradients(model: torch.nn.Module, batches, *, total_tokens: float, world_size: int = 1,
                         autocast=None, no_sync=None, counts: list[int] | None = None) -> torch.Tensor:
    """Backward through each (input_ids, labels) micro-batch, or PackedBatch (whose positions the model
    takes); returns the detached loss of this rank's part.

    Each micro-batch's mean loss is weighted by its share of `total_tokens` (the step's predicted tokens,
    over all ranks), so the summed gradient equals that of one batch holding them all, even when micro-
    batches predict different numbers of tokens (padded lines). DDP averages over ranks, so each rank's
    part is multiplied by `world_size` to keep the sum. `counts` are the micro-batches' predicted tokens
    where the caller has them (counted on the host, before the batches moved to the device)."""
    step_loss = torch.zeros(())
    for i, batch in enumerate(batches):
        input_ids, labels = batch[0], batch[1]
        packed = {"position_ids": batch.position_ids} if isinstance(batch, PackedBatch) else {}
        share = (counts[i] if counts is not None else predicted_tokens(labels)) / total_tokens
        with no_sync(i == len(batches) - 1) if no_sync else contextlib.nullcontext():
            with autocast or contextlib.nullcontext():
                loss = model(input_ids, labels=labels, **packed).loss * share
            (loss * world_size).backward()
        step_loss = step_loss.to(loss.device) + loss.detach()
    return step_loss
