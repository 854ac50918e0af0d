"""How big a model is before it is built, and whether it fits the machine: the one estimator that training,
evaluation, sampling and import consult before allocating a model.

Two checks, in order. Hard limits on every size field of any model config (the same names across rungs:
`n_layer`, `n_embd`, `n_hidden`, `block_size`, ...) refuse values no lmlab model can mean, cheaply and before
anything is built. Then the model is built on PyTorch's meta device (shapes without memory, for every rung
alike), its parameters counted, and the bytes it needs for the purpose (weights alone to sample or evaluate;
weights, gradients, optimizer moments and weight copies to train) compared with the memory available.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from lmlab.config import MAX_VOCAB_SIZE
from lmlab.errors import ConfigError

# The largest value any rung's size field may take: beyond these no model here is meant (GPT-2 XL has 48
# layers of width 1600, a context of 1024 and 50,257 tokens), and some would take minutes to build.
SIZE_LIMITS = {
    "vocab_size": MAX_VOCAB_SIZE,
    "block_size": 1 << 20,
    "n_layer": 1024,
    "n_head": 1024,
    "n_kv_head": 1024,
    "n_embd": 1 << 16,
    "n_hidden": 1 << 20,
    "mlp_hidden": 1 << 20,
    "kernel_size": 1 << 10,
}

# Float32 copies of the parameters a training step keeps: weights, gradients, two AdamW moments; one more
# for a weight average and one for the best weights early stopping holds.
TRAIN_COPIES = 4


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: MemAvailable on Linux, else physical memory; None if
    unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_size_limits(config: Any, where: str = "model") -> None:
    """ConfigError naming the first size field of `config` (a model config dataclass) past its hard limit."""
    for field in dataclasses.fields(config):
        limit = SIZE_LIMITS.get(field.name)
        value = getattr(config, field.name)
        if limit is not None and isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise ConfigError(f"{where}.{field.name}={value:,} is larger than any lmlab model can use "
                              f"(limit {limit:,})")


def parameter_count(model_cls: type, config: Any) -> int:
    """Parameters and buffers (numbers) of `model_cls(config)`, counted on the meta device: no memory."""
    with torch.device("meta"):
        model = model_cls(config)
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def model_bytes(model_cls: type, config: Any, *, training: bool, extra_copies: int = 0, float_bytes: int = 4) -> int:
    """Bytes the model's numbers take: once to use it, TRAIN_COPIES (+ `extra_copies`) times to train it."""
    copies = TRAIN_COPIES + extra_copies if training else 1
    return parameter_count(model_cls, config) * float_bytes * copies


def check_model_fits(model_cls: type, config: Any, *, training: bool, extra_copies: int = 0,
                     extra_bytes: int = 0, available: int | None = None, what: str = "the model") -> int:
    """Hard limits, then memory: ConfigError when `model_cls(config)` (and `extra_bytes` more: a step's
    logits) cannot fit in the machine's memory. Returns the bytes estimated."""
    check_size_limits(config)
    needed = model_bytes(model_cls, config, training=training, extra_copies=extra_copies) + extra_bytes
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        purpose = "to train (weights, gradients, optimizer state)" if training else "to load"
        raise ConfigError(f"{what} needs about {needed / 2**30:,.1f} GiB {purpose}, more than the "
                          f"{available / 2**30:,.1f} GiB of memory available; choose a smaller model")
    return needed
