"""Autoregressive sampling shared by every model: temperature, top-k, top-p, greedy, end token, KV cache.

The filters behave as transformers' TopKLogitsWarper / TopPLogitsWarper (checked in the tests), so
`generate` means what an HF user expects.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lmlab.models.base import Capabilities, capability


def top_k_filter(logits: Tensor, top_k: int) -> Tensor:
    """Keep the k highest logits of each row (ties at the k-th value are kept), -inf elsewhere."""
    top_k = min(top_k, logits.size(-1))
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus: keep the smallest set of tokens whose probability adds up to at least top_p (never empty)."""
    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= 1 - top_p
    remove_sorted[..., -1] = False  # the most likely token always stays
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


# Tokens one call may generate: each row's ids are held in full (and a recurrent model's steps run one by one).
MAX_NEW_TOKENS = 1_000_000


def check_sampling_args(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not (temperature >= 0 and math.isfinite(temperature)):  # NaN fails every comparison: sampled greedily
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be at most {MAX_NEW_TOKENS:,}, got {max_new_tokens:,}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, do_sample: bool,
                generator: torch.Generator | None) -> Tensor:
    """The next token of each row (B, 1) from its logits (B, V): greedy, or a draw after temperature and filters.

    The draw is torch.multinomial's own algorithm for one sample, an exponential race (the argmax of p / E
    with E ~ Exp(1), the Gumbel-max trick), written out: the same tokens from the same generator, bit for bit
    (tests/models/test_generation.py), without multinomial's input checks, which read the probabilities back to
    the host twice a token. Those checks refused NaN probabilities; here a NaN row gives an arbitrary token.
    """
    if not do_sample or temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)  # (B, V)
    race = torch.empty_like(probs).exponential_(1, generator=generator)  # (B, V)
    return (probs / race).argmax(dim=-1, keepdim=True)  # (B, 1)


def generate(
    model: torch.nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    do_sample: bool = True,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    sliding_window: bool = False,
    streamer: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """Extend `input_ids` (B, T) by up to `max_new_tokens`; returns (B, T + new).

    Rows that have produced `eos_token_id` are padded with it until every row has. `temperature=0` is greedy.
    Models with a fixed context see only the last `block_size` tokens: the window slides instead of failing.
    Models that keep state (`supports_cache`) are fed one token per step while their cache has room; a
    model with `new_cache(capacity)` gets a preallocated cache it fills in place, and one with `decoder()`
    takes those steps through the function it returns (the same logits, with less overhead a token).

    Per token the loop does the model call and the sampling, nothing else: it runs under
    `torch.inference_mode` and writes into one preallocated (B, T + new) tensor. Once a fixed context is
    full, each token runs the whole window again: with learned absolute positions, keys computed at one
    position are not valid at another, so the cache cannot roll. With rotary positions it can
    (`rolling_cache`): `sliding_window=True` keeps the last `block_size` keys and values instead of
    recomputing, which is sliding-window attention, an approximation (see RollingKVBuffer); the tokens are
    the same as the exact path's until the window is full.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    if sliding_window and not (use_cache and capability(model, "rolling_cache")):
        raise ValueError("sliding_window needs use_cache and a model with relative positions (rolling_cache): "
                         "learned absolute positions tie each cached key to its position")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ids = _generate(model, input_ids, max_new_tokens, temperature, top_k, top_p, do_sample,
                            eos_token_id, generator, use_cache, sliding_window, streamer)
    finally:
        model.train(was_training)
    return ids.clone()  # a normal tensor again, usable where autograd runs


def _generate(model, input_ids, max_new_tokens, temperature, top_k, top_p, do_sample, eos_token_id, generator,
              use_cache, sliding_window, streamer) -> Tensor:
    block_size = capability(model, "max_context")  # None: unbounded (recurrent models)
    cache_ok = use_cache and capability(model, "supports_cache")
    preallocate = cache_ok and block_size is not None and hasattr(model, "new_cache")
    step = model.decoder() if preallocate and hasattr(model, "decoder") else None  # its weights looked up once
    B, length = input_ids.shape
    ids = input_ids.new_empty(B, length + max_new_tokens)  # (B, T + new), filled as tokens come
    ids[:, :length] = input_ids
    past = None
    finished = torch.zeros(B, dtype=torch.bool, device=ids.device) if eos_token_id is not None else None
    for _ in range(max_new_tokens):
        if past is not None and step is not None:
            logits = step(ids[:, length - 1], past)  # (B, V)
        else:
            if past is not None:
                out = model(ids[:, length - 1 : length], past_key_values=past, use_cache=True)
            else:
                start = 0 if block_size is None else max(length - block_size, 0)
                context = ids[:, start:length]
                if preallocate:
                    cache = model.new_cache(block_size, rolling=True) if sliding_window else model.new_cache(block_size)
                    out = model(context, past_key_values=cache, use_cache=True)
                else:
                    out = model(context, use_cache=cache_ok) if cache_ok else model(context)
            past = out.past_key_values if cache_ok else None
            logits = out.logits[:, -1, :]  # (B, V)
        if past is not None and block_size is not None and length >= block_size and not sliding_window:
            past = None  # the cache is full: recompute over the sliding window next step
        next_id = sample_next(logits.float(), temperature, top_k, top_p, do_sample, generator)  # (B, 1)
        if finished is not None:
            next_id = next_id.masked_fill(finished[:, None], eos_token_id)
            finished |= next_id.squeeze(1) == eos_token_id
        ids[:, length : length + 1] = next_id
        length += 1
        if streamer is not None:
            streamer(next_id)
        if finished is not None and bool(finished.all()):
            break
    return ids[:, :length]


class GenerationMixin(Capabilities):
    """Gives an nn.Module the HF-style `model.generate(...)`, and the declared Capabilities every language
    model has; all the logic lives in `generate` above."""

    def generate(self, input_ids: Tensor, max_new_tokens: int = 20, **kwargs) -> Tensor:
        return generate(self, input_ids, max_new_tokens, **kwargs)
