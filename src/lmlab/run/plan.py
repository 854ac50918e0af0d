"""A run resolved once, before anything trains: the config layers (over a resumed run's own config) become
one RunConfig, and that config, the data prepared for it and the defaults fitted to the data become one
frozen RunPlan. The pipeline, the trainer and config.json read the plan; nothing after it resolves the
config again, and what changes while training (a time budget's schedule, the LR scale) is the trainer's
state, never the plan's.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

from lmlab.config import parse_budget
from lmlab.errors import CheckpointError
from lmlab.run.config import RunConfig, build_model, merge_layers, resolve_config
from lmlab.run.data import RunData, absolute_source, context_length, prepare_data, resolved_data_config
from lmlab.run.fit_defaults import fit_to_data
from lmlab.run.folder import RunDir
from lmlab.tokenizers import Tokenizer
from lmlab.training.budget import WorkPlan, work_plan
from lmlab.training.memory import activation_bytes, check_step_memory
from lmlab.training.performance import flops_per_token
from lmlab.training.step import predicted_tokens

log = logging.getLogger(__name__)

# Batches drawn (from their own generator) to count the tokens a step predicts: lines differ in length
TOKEN_COUNT_BATCHES = 16


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
    work: WorkPlan | None = None  # the work budget turned into steps, if the run had one


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


def plan_run(resolved: Resolved, tokenizer: Tokenizer | None = None, data: RunData | None = None,
             world_size: int = 1) -> RunPlan:
    """Prepare the data (with the run's own `tokenizer` on resume, or reuse `data`), record the data config
    as used, fit a defaulted batch and context to the vocabulary (a resumed config names every value, so it
    keeps them), turn a work budget into steps, and check that a step fits in memory."""
    config = resolved.config
    data = data or prepare_data(config.data, tokenizer)
    config = dataclasses.replace(config, data=resolved_data_config(config.data, data))
    context = max(resolved.saved_context, context_length(data))
    config, data, context = fit_to_data(config, data, context)
    with torch.device("meta"):  # shapes only: what the budget and the memory check measure
        model = build_model(config, data.tokenizer, context, training=True)
    config, work = fit_to_budget(config, data, context, model, world_size)
    check_step_memory(config.train, context, data.tokenizer.vocab_size, activations=activation_bytes(model, context))
    return RunPlan(config=config, data=data, context=context, resume=resolved.resume, work=work)


def tokens_per_step(config: RunConfig, data: RunData, world_size: int = 1) -> float:
    """The tokens a step predicts (padding excluded), counted on TOKEN_COUNT_BATCHES batches drawn from a
    generator of their own: the same number on every machine, and the training draws are untouched."""
    generator = torch.Generator().manual_seed(0)
    train = data.splits["train"]
    counts = [predicted_tokens(train.sample_batch(config.train.batch_size, generator)[1])
              for _ in range(TOKEN_COUNT_BATCHES)]
    return sum(counts) / len(counts) * config.train.grad_accum_steps * world_size


def fit_to_budget(config: RunConfig, data: RunData, context: int, model: torch.nn.Module,
                  world_size: int = 1) -> tuple[RunConfig, WorkPlan | None]:
    """A work budget (flops, tokens, steps) turned into max_steps, once, before the first step: from the
    tokens a step predicts and the model's FLOPs a token. The evaluations and warm-up the user left to the
    defaults are fitted to the steps (evaluation at most a tenth of the work; warm-up at most a tenth of the
    steps). The budget is spent into the config: config.json names the steps, and a resume or a rerun of it
    trains exactly those. Time budgets and runs without a budget are left as they are. `model`: the run's
    model on the meta device."""
    budget = parse_budget(config.train.budget)
    if budget is None or budget.is_time:
        return config, None
    if not any(p.requires_grad for p in model.parameters()):  # counted: one pass, whatever the budget
        return dataclasses.replace(config, train=dataclasses.replace(config.train, budget="")), None
    train = config.train
    val = data.splits.get("val")
    work = work_plan(budget, train, tokens_per_step=tokens_per_step(config, data, world_size),
                     flops_per_token=flops_per_token(model, context),
                     val_tokens=val.num_predictions if val is not None else 0,
                     eval_defaulted={"train.eval_interval", "train.eval_max_tokens"} <= config.defaulted)
    warmup = min(train.warmup_steps, work.steps // 10) if "train.warmup_steps" in config.defaulted \
        else train.warmup_steps
    log.info("%s", work.describe())
    train = dataclasses.replace(train, budget="", max_steps=work.steps, warmup_steps=warmup,
                                eval_interval=work.eval_interval, eval_max_tokens=work.eval_max_tokens)
    return dataclasses.replace(config, train=train), work
