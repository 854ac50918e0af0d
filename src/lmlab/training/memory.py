"""How much memory a training step needs, checked against what the machine has before anything is allocated.

A training step draws all `grad_accum_steps` micro-batches first (inputs and labels, int64), then runs them
one at a time; each forward/backward holds the micro-batch's logits (B x T x V floats) a few times over
(logits, their softmax in cross-entropy, and the gradient) and the activations the model saves for its
backward pass, measured by `activation_bytes` on the meta device (shapes only, nothing allocated). An
evaluation batch (4 x the training batch, no gradients) holds its logits twice. The estimate is a floor, so a
refusal is certain to be right, and an absurd `train.batch_size=1e6` is caught with one line instead of an
out-of-memory kill minutes later.
"""

from __future__ import annotations

import torch

from lmlab.config import TrainConfig
from lmlab.errors import ConfigError
from lmlab.models.size import available_memory

LOGIT_COPIES = 3  # logits, softmax/log-softmax inside cross-entropy, and their gradient


EVAL_BATCHES = 4  # an evaluation batch is this many training batches (trainer.evaluate)


def activation_bytes(model: torch.nn.Module, block_size: int) -> int:
    """The bytes one example of `block_size` tokens makes `model` save for its backward pass: the saved
    tensors of a training forward of two examples less those of one (what does not grow with the batch, the
    weights a product keeps, cancels). `model` lives on the meta device, so nothing is computed or allocated;
    0 if a layer cannot run there."""
    def saved(batch: int) -> int:
        total = 0

        def count(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        ids = torch.zeros(batch, block_size, dtype=torch.long, device="meta")
        with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
            model(ids, labels=ids)
        return total

    model.train()
    try:
        return max(saved(2) - saved(1), 0)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # an op without a meta kernel: the floor
        return 0


def step_memory(config: TrainConfig, block_size: int, vocab_size: int, float_bytes: int = 4,
                activations: int = 0) -> int:
    """A lower bound on the bytes one optimizer step needs on the device (see the module's docstring);
    `activations`: activation_bytes of the model."""
    batches = config.batch_size * config.grad_accum_steps * block_size * 8 * 2  # inputs and labels, int64
    logits = config.batch_size * block_size * vocab_size * float_bytes * LOGIT_COPIES
    evaluation = EVAL_BATCHES * config.batch_size * block_size * vocab_size * float_bytes * 2
    return batches + max(logits + config.batch_size * activations, evaluation)


def check_step_memory(config: TrainConfig, block_size: int, vocab_size: int, available: int | None = None,
                      activations: int = 0) -> None:
    """ConfigError when a step (or an evaluation batch) cannot fit in the machine's memory, naming the setting
    to lower."""
    available = available_memory() if available is None else available
    needed = step_memory(config, block_size, vocab_size, activations=activations)
    if available is not None and needed > available:
        raise ConfigError(
            f"train.batch_size={config.batch_size:,} x train.grad_accum_steps={config.grad_accum_steps:,} with a "
            f"context of {block_size:,} and {vocab_size:,} tokens needs at least {needed / 2**30:,.1f} GiB per step, "
            f"more than the {available / 2**30:,.1f} GiB available; lower train.batch_size"
        )
