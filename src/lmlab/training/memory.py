"""How much memory a training step needs, checked against what the machine has before anything is allocated.

A training step draws all `grad_accum_steps` micro-batches first (inputs and labels, int64), then runs them
one at a time; each forward/backward holds the micro-batch's logits (B x T x V floats) a few times over
(logits, their softmax in cross-entropy, and the gradient). The model's own activations are left out: the
estimate is a floor, so a refusal is certain to be right, and an absurd `train.batch_size=1e6` is caught
with one line instead of an out-of-memory kill minutes later.
"""

from __future__ import annotations

from lmlab.config import TrainConfig
from lmlab.errors import ConfigError
from lmlab.models.size import available_memory

LOGIT_COPIES = 3  # logits, softmax/log-softmax inside cross-entropy, and their gradient


def step_memory(config: TrainConfig, block_size: int, vocab_size: int, float_bytes: int = 4) -> int:
    """A lower bound on the bytes one optimizer step needs on the device (see the module's docstring)."""
    batches = config.batch_size * config.grad_accum_steps * block_size * 8 * 2  # inputs and labels, int64
    logits = config.batch_size * block_size * vocab_size * float_bytes * LOGIT_COPIES
    return batches + logits


def check_step_memory(config: TrainConfig, block_size: int, vocab_size: int, available: int | None = None) -> None:
    """ConfigError when a step cannot fit in the machine's memory, naming the setting to lower."""
    available = available_memory() if available is None else available
    needed = step_memory(config, block_size, vocab_size)
    if available is not None and needed > available:
        raise ConfigError(
            f"train.batch_size={config.batch_size:,} x train.grad_accum_steps={config.grad_accum_steps:,} with a "
            f"context of {block_size:,} and {vocab_size:,} tokens needs at least {needed / 2**30:,.1f} GiB per step, "
            f"more than the {available / 2**30:,.1f} GiB available; lower train.batch_size"
        )
