"""What every model speaks: `model(input_ids, labels=None)` -> ModelOutput(.logits, .loss), and `generate`.

Shape legend: B batch, T time (sequence length), V vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.data.datasets import IGNORE_INDEX, next_token_targets


@dataclass
class ModelOutput:
    logits: Tensor  # (B, T, V): position t scores the token at t+1
    loss: Tensor | None = None  # mean NLL in nats over labels that are not IGNORE_INDEX
    past_key_values: Any = None  # a model's incremental state (KV cache, RNN hidden state) when use_cache


def causal_lm_loss(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """HF convention: labels align with input_ids, so logits at t are scored against labels at t+1.

    F.cross_entropy fuses log-softmax and NLL: it subtracts the max logit before exponentiating, so large
    logits cannot overflow, and its backward is the analytic softmax - onehot.
    """
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = next_token_targets(labels)  # (B, T-1)
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


class Capabilities:
    """What callers ask of a model, declared rather than guessed: every lmlab language model has these (the
    defaults below, or its own), and the trainer and inspector read them from any model, with these
    defaults for one that does not declare them (a forecaster, an image net, a user's own)."""

    counted: bool = False  # fitted in one counting pass (fit_counts(input_ids, labels)), not by an optimizer
    supports_cache: bool = False  # generate() may feed one token a step, passing past_key_values back
    max_context: int | None = None  # the most recent tokens a prediction can depend on; None: all of them
    rolling_cache: bool = False  # relative positions: generate(sliding_window=True) may keep a rolling KV cache
    # forward(position_ids=...) takes packed rows (several examples a row, positions restarting at 0 at each
    # one's first token) and keeps each example's tokens to themselves: lines-mode batches may be packed
    packs_examples: bool = False


def capability(model: Any, name: str) -> Any:
    """`model`'s declared capability `name` (see Capabilities), or the default for a model that has none."""
    return getattr(model, name, getattr(Capabilities, name))


class LanguageModel(Protocol):
    """Every lmlab language model: `config.block_size` is the context it was built for (the run's context
    length; data.block_size in stream mode), and the Capabilities say how to train and sample it."""

    config: Any
    counted: bool
    supports_cache: bool
    max_context: int | None

    def __call__(self, input_ids: Tensor, labels: Tensor | None = None, **kwargs: Any) -> ModelOutput: ...

    def generate(self, input_ids: Tensor, max_new_tokens: int, **kwargs: Any) -> Tensor: ...


def left_pad_windows(input_ids: Tensor, context: int, pad_id: int) -> Tensor:
    """(B, T) -> (B, T, context): for each position, the `context` tokens ending there, padded on the left
    with the boundary token, as makemore's "..." start context."""
    padded = F.pad(input_ids, (context - 1, 0), value=pad_id)  # (B, T + context - 1)
    return padded.unfold(1, context, 1)  # (B, T, context)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_device(model: torch.nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
