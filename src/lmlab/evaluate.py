"""Evaluate a run: NLL, perplexity, bits per token and bits per byte on a split of its own data."""

from __future__ import annotations

import math
from typing import Any

from lmlab.errors import DataError
from lmlab.models.base import model_device
from lmlab.run.data import prepare_data
from lmlab.run.folder import LoadedRun
from lmlab.training.scoring import bits_per_byte, mean_nll, scored_bytes, token_bytes


def nll_report(split: str, nll: float, tokens: int, num_bytes: int = 0) -> dict[str, Any]:
    return {
        "split": split,
        "nll": nll,
        "perplexity": math.exp(nll) if nll < 700 else math.inf,
        "bits_per_token": nll / math.log(2),
        "bits_per_byte": bits_per_byte(nll, tokens, num_bytes),
        "tokens": tokens,
        "bytes": num_bytes,
    }


def evaluate_run(run: LoadedRun, split: str = "val", batch_size: int = 256) -> dict[str, Any]:
    """Rebuild the run's split (same source, same split seed, the run's tokenizer) and score it exactly."""
    data = prepare_data(run.config.data, tokenizer=run.tokenizer)
    run.run_dir.require_same_data(data.splits["train"], run.config.data.source)
    dataset = data.splits[split]
    if not len(dataset):
        raise DataError(f"the {split} split of this run is empty (data.{split}_fraction = 0?)")
    nll, tokens = mean_nll(run.model, dataset, batch_size=batch_size, device=model_device(run.model))
    return nll_report(split, nll, tokens, scored_bytes(dataset, token_bytes(run.tokenizer), batch_size=batch_size))
