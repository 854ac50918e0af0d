"""Exact mean negative log-likelihood of a model over a dataset, in eval mode with no gradients."""

from __future__ import annotations

import torch

from lmlab.data.datasets import IGNORE_INDEX, TokenDataset, next_token_targets
from lmlab.models.base import causal_lm_loss


@torch.no_grad()
def mean_nll(
    model: torch.nn.Module,
    dataset: TokenDataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """(mean NLL in nats, number of predicted tokens). Sums per-token losses, so batches of unequal
    length weigh each token once."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for input_ids, labels in dataset.iter_batches(batch_size, max_tokens):
        input_ids, labels = input_ids.to(device), labels.to(device)
        total += float(causal_lm_loss(model(input_ids).logits, labels, reduction="sum"))
        count += int((next_token_targets(labels) != IGNORE_INDEX).sum())
    model.train(was_training)
    return (total / count if count else float("nan")), count


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    dataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """(mean of the model's own loss, number of targets) for datasets that are not token datasets: they
    yield (inputs, targets) and define `count_targets(targets)`. Each batch's mean loss is weighted by its
    number of targets, so a short last batch counts once per target, as a per-example mean would."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for inputs, targets in dataset.iter_batches(batch_size, max_tokens):
        n = dataset.count_targets(targets)
        total += float(model(inputs.to(device), labels=targets.to(device)).loss) * n
        count += n
    model.train(was_training)
    return (total / count if count else float("nan")), count
