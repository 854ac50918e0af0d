"""Sampling from a trained run: prompts, several samples at once, streaming, and novelty against the data."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from lmlab.config import check_seed
from lmlab.errors import ConfigError, check_count
from lmlab.models.base import capability, model_device
from lmlab.models.generation import check_sampling_args
from lmlab.models.size import available_memory
from lmlab.run.folder import LoadedRun

MAX_SAMPLES = 100_000  # samples a call draws; each is up to MAX_NEW_TOKENS long


@dataclass(frozen=True, kw_only=True, slots=True)
class SampleOptions:
    num_samples: int = 10
    prompt: str = ""
    max_new_tokens: int = 0  # 0: lines mode stops at the boundary token (limit 4x the context); stream 500
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        check_count(self.num_samples, "-n", MAX_SAMPLES)
        try:
            check_sampling_args(self.max_new_tokens or 1, self.temperature, self.top_k, self.top_p)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.max_new_tokens < 0:
            raise ConfigError(f"--max-new-tokens must be positive, got {self.max_new_tokens}")
        check_seed(self.seed, "--seed")


def sample_texts(
    run: LoadedRun, options: SampleOptions, on_token: Callable[[str], None] | None = None
) -> list[str]:
    """Generate `num_samples` continuations of the prompt. In lines mode each sample is one example
    (ended by the boundary token); `on_token` receives the first sample's text as it is produced."""
    tok = run.tokenizer
    lines_mode = run.config.data.mode == "lines"  # resolved when the run was created
    prompt_ids = tok(options.prompt).input_ids
    if lines_mode or not prompt_ids:
        prompt_ids = [tok.boundary_id, *prompt_ids]
    context = capability(run.model, "max_context") or len(prompt_ids) + 1
    max_new = options.max_new_tokens or (max(4 * context, 64) if lines_mode else 500)
    device = model_device(run.model)
    check_ids_fit(options.num_samples, len(prompt_ids) + max_new)
    input_ids = torch.tensor([prompt_ids] * options.num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(options.seed)

    def streamer(next_ids: torch.Tensor) -> None:
        on_token(tok.decode(next_ids[:1, 0].tolist()))

    out = run.model.generate(
        input_ids, max_new, temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
        do_sample=options.temperature > 0, eos_token_id=tok.boundary_id if lines_mode else None,
        generator=generator, streamer=streamer if on_token is not None else None,
    )
    return [options.prompt + tok.decode(row[len(prompt_ids):].tolist()) for row in out]


# Copies of the token ids a generation holds at once: the growing sequence, and the next one concatenated.
ID_COPIES = 2


def check_ids_fit(rows: int, length: int, available: int | None = None) -> None:
    """ConfigError when `rows` sequences of `length` token ids (int64) cannot fit in memory."""
    needed = rows * length * 8 * ID_COPIES
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise ConfigError(f"{rows:,} samples of {length:,} tokens need {needed / 2**30:,.1f} GiB for their ids, more "
                          f"than the {available / 2**30:,.1f} GiB available; lower --max-new-tokens or -n")


def batch_seed(seed: int, batch: int) -> int:
    """The seed of `iter_samples`' batch number `batch`: the given seed for the first, so a run of up to
    batch_size samples is the same as `sample_texts`'; a golden-ratio stride apart for the others."""
    return (seed + batch * 0x9E3779B97F4A7C15) % 2**63


KV_CACHE_BUDGET = 1 << 30  # bytes of KV cache one sampling batch may hold


def cache_batch_limit(model: torch.nn.Module) -> int | None:
    """The most samples whose KV caches fit in KV_CACHE_BUDGET (None: the model keeps no cache that grows
    with its context): `generate` preallocates 2 x n_layer x (key/value width) x block_size numbers a sample.
    The 4x4x128 GPT at a context of 256 takes 1 MiB a sample; GPT-2 124M at 1,024 takes 72 MiB (14 fit)."""
    config = getattr(model, "config", None)
    sizes = [getattr(config, name, None) for name in ("n_layer", "n_embd", "n_head", "block_size")]
    if not capability(model, "supports_cache") or None in sizes:
        return None
    n_layer, n_embd, n_head, block_size = sizes
    kv_width = n_embd // n_head * (getattr(config, "n_kv_head", None) or n_head)
    element = next(model.parameters()).element_size()
    return max(1, KV_CACHE_BUDGET // (2 * n_layer * kv_width * block_size * element))


def iter_samples(run: LoadedRun, options: SampleOptions, batch_size: int = 256,
                 on_token: Callable[[str], None] | None = None) -> Iterator[str]:
    """`options.num_samples` samples, generated up to `batch_size` at a time (fewer where their KV caches
    would pass KV_CACHE_BUDGET) and yielded as each batch finishes, so a caller can print them at once and
    memory holds one batch whatever the number asked for. Batches run one after the other, each paying every
    step's fixed cost, so the default takes `lmlab sample -n 100` in one pass (64 + 36 before). Batch i is
    seeded with `batch_seed(options.seed, i)`; the whole sequence is reproducible from the seed."""
    if batch_size < 1:
        raise ConfigError(f"the sampling batch size must be at least 1, got {batch_size}")
    batch_size = min(batch_size, cache_batch_limit(run.model) or batch_size)
    for batch, first in enumerate(range(0, options.num_samples, batch_size)):
        count = min(batch_size, options.num_samples - first)
        batch_options = dataclasses.replace(options, num_samples=count, seed=batch_seed(options.seed, batch))
        yield from sample_texts(run, batch_options, on_token=on_token if batch == 0 else None)


def novelty(samples: list[str], splits: dict[str, list[str]]) -> dict[str, int]:
    """How many samples copy a train/val/test example, and how many are new."""
    sets = {name: set(texts) for name, texts in splits.items()}
    counts = {f"in_{name}": 0 for name in sets} | {"new": 0}
    for sample in samples:
        hit = next((name for name, texts in sets.items() if sample in texts), None)
        counts[f"in_{hit}" if hit else "new"] += 1
    return counts
