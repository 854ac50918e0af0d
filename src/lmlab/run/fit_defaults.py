"""Defaults that fit the data: the batch and context a model's training defaults name were tuned on char
vocabularies (27 to ~100 symbols), where the output layer is a small part of a step. On a BPE or word
vocabulary of thousands the output layer (vocab x width per token) and the embedding dominate, and the same
batch x context costs many times more a step (benchmarks/RESULTS.md, "Defaults for BPE data", has the step
times).

When the user left them to the defaults, `fit_to_data` scales train.batch_size (then, in stream mode and
only once the batch is at its floor, data.block_size) down by how much more a token costs than with a char
vocabulary, so a step costs about what the defaults cost on char data. The chosen values go into the run's
config, so config.json, resume and load reproduce the run; a value the user set always wins. Vocabularies
up to CHAR_VOCAB and CUDA devices (where a wide output layer is cheap) keep the registry's defaults exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch

from lmlab.run.config import RunConfig, build_model
from lmlab.run.data import RunData, context_length, with_block_size
from lmlab.training.step import resolve_device

log = logging.getLogger(__name__)

CHAR_VOCAB = 512  # vocabularies up to this (char data; bytes) keep the defaults exactly
REFERENCE_VOCAB = 256  # the char-sized vocabulary whose cost per token the defaults were chosen for
MIN_BATCH = 8  # fewer sequences a step make the gradient too noisy for the defaults' learning rate
MIN_BLOCK = 32  # shorter windows would starve a BPE model of context; cut the batch first


def vocab_cost_ratio(model: torch.nn.Module, vocab_size: int) -> float:
    """How many times a token costs more with `vocab_size` than with REFERENCE_VOCAB.

    A token's cost is taken as proportional to the trainable parameters (the "6 x parameters FLOPs per
    token" rule, embedding included, which errs towards a smaller batch). The parameters whose first
    dimension is the vocabulary (embedding tables, output layers and their biases, the bigram's table) scale
    with it; the rest does not. benchmarks/RESULTS.md compares the rule with measured costs per token."""
    trainable = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied weights count once
    total = sum(p.numel() for p in trainable)
    scaling = sum(p.numel() for p in trainable if p.dim() and p.shape[0] == vocab_size)
    at_reference = total - scaling * (1 - REFERENCE_VOCAB / vocab_size)
    return total / at_reference if at_reference > 0 else 1.0


def _power_of_two(x: float) -> int:
    """The power of two nearest to x on a log scale (at least 1)."""
    return 2 ** max(round(math.log2(max(x, 1.0))), 0)


def choose_step(batch_size: int, block_size: int, ratio: float, cut_context: bool) -> tuple[int, int]:
    """(batch, context) whose tokens per step are about batch_size x block_size / ratio: powers of two, the
    batch cut first down to MIN_BATCH, then (if `cut_context`) the context down to MIN_BLOCK; never above the
    defaults. Rounding the batch to the nearest power of two leaves the context whole above the floor."""
    batch = min(batch_size, max(_power_of_two(batch_size / ratio), MIN_BATCH))
    block = min(block_size, max(_power_of_two(batch_size * block_size / ratio / batch), MIN_BLOCK))
    return batch, block if cut_context else block_size


def fit_to_data(config: RunConfig, data: RunData, context: int) -> tuple[RunConfig, RunData, int]:
    """(config, data, context) for a new run, with the defaulted batch and, in stream mode, context scaled to
    the vocabulary (the data then cut into the chosen windows). Unchanged when the user set them, for
    vocabularies up to CHAR_VOCAB, on CUDA and for counted models. The model is measured on the meta device
    (shapes, no memory, no initialisation): the run builds its one real model from the result."""
    with torch.device("meta"):
        model = build_model(config, data.tokenizer, context, training=True)
    vocab_size = data.tokenizer.vocab_size
    # The context is the second lever, pulled only by a batch at its floor: a batch the user set stands for
    # the step they chose, so the context is left as it is too.
    fit_block = "data.block_size" in config.defaulted and data.mode == "stream"
    trained = any(p.requires_grad for p in model.parameters())
    if "train.batch_size" not in config.defaulted or vocab_size <= CHAR_VOCAB or not trained or \
            resolve_device(config.train.device).type == "cuda":
        return config, data, context
    ratio = vocab_cost_ratio(model, vocab_size)
    old_batch, old_block = config.train.batch_size, config.data.block_size
    batch, block = choose_step(old_batch, old_block, ratio, cut_context=fit_block)
    if (batch, block) == (old_batch, old_block):
        return config, data, context
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=batch),
                                 data=dataclasses.replace(config.data, block_size=block))
    if block != old_block:
        data = with_block_size(data, block)
        context = context_length(data)
    # Lines mode: the context is the longest line, whatever data.block_size says.
    defaults = f"{old_batch} x {old_block if data.mode == 'stream' else context}"
    fixes = [f"train.batch_size={old_batch}"] + ([f"data.block_size={old_block}"] if block != old_block else [])
    log.info("batch %d x context %d for a vocabulary of %s (a token costs ~%.1fx what it does with a char "
             "vocabulary; the defaults are %s): --set %s fixes it", batch, context, f"{vocab_size:,}", ratio,
             defaults, " --set ".join(fixes))
    return config, data, context
