"""Evaluate a run: NLL, perplexity and bits per token on a split of its own data."""

from __future__ import annotations

import math
from typing import Any

from lmlab.errors import DataError
from lmlab.models.base import model_device
from lmlab.run.data import prepare_data
from lmlab.run.folder import LoadedRun
from lmlab.training.scoring import mean_nll


def nll_report(split: str, nll: float, tokens: int) -> dict[str, Any]:
    return {
        "split": split,
        "nll": nll,
        "perplexity": math.exp(nll) if nll < 700 else math.inf,
        "bits_per_token": nll / math.log(2),
        "tokens": tokens,
    }


def evaluate_run(run: LoadedRun, split: str = "val", batch_size: int = 256) -> dict[str, Any]:
    """Rebuild the run's split (same source, same split seed, the run's tokenizer) and score it exactly."""
    data = prepare_data(run.config.data, tokenizer=run.tokenizer)
    dataset = data.splits[split]
    if not len(dataset):
        raise DataError(f"the {split} split of this run is empty (data.{split}_fraction = 0?)")
    nll, tokens = mean_nll(run.model, dataset, batch_size=batch_size, device=model_device(run.model))
    return nll_report(split, nll, tokens)
