"""A run resolved once, before anything trains: the config layers (over a resumed run's own config) become
one RunConfig, and that config, the data prepared for it and the defaults fitted to the data become one
frozen RunPlan. The pipeline, the trainer and config.json read the plan; nothing after it resolves the
config again, and what changes while training (a time budget's schedule, the LR scale) is the trainer's
state, never the plan's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lmlab.errors import CheckpointError
from lmlab.run.config import RunConfig, merge_layers, resolve_config
from lmlab.run.data import RunData, absolute_source, context_length, prepare_data, resolved_data_config
from lmlab.run.fit_defaults import fit_to_data
from lmlab.run.folder import RunDir
from lmlab.tokenizers import Tokenizer
from lmlab.training.memory import check_step_memory


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolved:
    """The config resolved from its layers, and what a resumed run brings of its own."""

    config: RunConfig
    saved_context: int = 0  # a resumed run's model context (an imported GPT-2 keeps a wider one than its data)
    resume: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class RunPlan:
    """Everything a run derives before it trains."""

    config: RunConfig  # every value as the run uses it: the data's mode and tokenizer, the fitted batch
    data: RunData  # the prepared splits and the tokenizer
    context: int  # the model's real context: the longest window the data holds, or a resumed model's own
    resume: bool


def resolve_run(layers: dict[str, Any] | RunConfig, run_dir: RunDir | None = None) -> Resolved:
    """The one resolution of a run's config. With `run_dir` (a resume) the layers go over the run's own
    config.json, and only train.* may change."""
    if run_dir is None:
        return Resolved(config=resolve_config(layers))
    saved, context = run_dir.read_config()
    changes = layers.to_dict() if isinstance(layers, RunConfig) else layers
    if (changes.get("model") or {}).get("name", saved.model_name) != saved.model_name:
        raise CheckpointError(f"{run_dir} is a {saved.model_name} run; --resume continues the run's own data "
                              "and model; change only train.*")
    config = resolve_config(merge_layers(saved.to_dict(), changes))
    same_data = dataclasses.replace(config.data, source=absolute_source(config.data.source)) == \
        dataclasses.replace(saved.data, source=absolute_source(saved.data.source))  # --data given relative
    if not same_data or config.model != saved.model or config.model_name != saved.model_name:
        raise CheckpointError(f"{run_dir} is a {saved.model_name} run; --resume continues the run's own data "
                              "and model; change only train.*")
    return Resolved(config=config, saved_context=context, resume=True)


def plan_run(resolved: Resolved, tokenizer: Tokenizer | None = None, data: RunData | None = None) -> RunPlan:
    """Prepare the data (with the run's own `tokenizer` on resume, or reuse `data`), record the data config
    as used, fit a defaulted batch and context to the vocabulary (a resumed config names every value, so it
    keeps them), and check that a step fits in memory."""
    config = resolved.config
    data = data or prepare_data(config.data, tokenizer)
    config = dataclasses.replace(config, data=resolved_data_config(config.data, data))
    context = max(resolved.saved_context, context_length(data))
    config, data, context = fit_to_data(config, data, context)
    check_step_memory(config.train, context, data.tokenizer.vocab_size)
    return RunPlan(config=config, data=data, context=context, resume=resolved.resume)
