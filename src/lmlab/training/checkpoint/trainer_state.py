"""A Trainer's checkpoint: the stateful parts its trainer state is assembled from (checkpointer.py), and
saving and restoring them with the weights (checkpoint.py) in the run folder, on one process or under FSDP."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from lmlab.run.folder import RunDir
from lmlab.training.checkpoint import format as ckpt
from lmlab.training.checkpoint.parts import PROGRESS_KEYS, CallbackStates, Checkpointer, StateOf
from lmlab.training.schedule import Schedule

if TYPE_CHECKING:
    from lmlab.training.trainer import Trainer



def _progress(trainer: Trainer) -> dict[str, Any]:
    """The progress attributes, and the schedule where a time budget re-fitted it (else None: the config's)."""
    fitted = trainer.schedule != Schedule.of(trainer.config)
    return {**{k: getattr(trainer, k) for k in PROGRESS_KEYS},
            "schedule": dataclasses.asdict(trainer.schedule) if fitted else None}


def _load_progress(trainer: Trainer, state: dict[str, Any]) -> None:
    for k in PROGRESS_KEYS:
        if k in state:
            setattr(trainer, k, state[k])
    # A schedule a time budget fixed goes on where it was; a resume that asks for more steps than it planned
    # starts from its own config. Checkpoints from before the wsd schedule kept three of its counts (a cosine
    # plan): the decay's two take their config values.
    saved = state.get("schedule")
    config = trainer.config
    if saved is not None and saved["max_steps"] <= config.max_steps:
        trainer.schedule = Schedule(**{**dataclasses.asdict(Schedule.of(config)), **saved})


def _rng(trainer: Trainer) -> dict[str, Any]:
    """This process's random states; on several ranks, rank 0's, as one process reads them, and every
    rank's under "ranks" (each draws its own dropout masks). Every rank must call this (it gathers)."""
    own = ckpt.rng_state(trainer.data_generator)
    if trainer.parallel.world_size == 1:
        return own
    return {**own, "ranks": trainer.parallel.gather_objects(own)}


def _load_rng(trainer: Trainer, state: dict[str, Any]) -> None:
    """Each rank takes its own saved state; a run resumed on another number of processes takes rank 0's,
    its torch generator offset by rank as a fresh run's is (the dropout masks then differ from an unbroken
    run's: the batches do anyway, being cut into other slices)."""
    parallel = trainer.parallel
    ranks = state.get("ranks")
    if isinstance(ranks, list) and len(ranks) == parallel.world_size:
        ckpt.set_rng_state(ranks[parallel.rank], trainer.data_generator)
        return
    ckpt.set_rng_state({k: v for k, v in state.items() if k != "ranks"}, trainer.data_generator)
    if parallel.world_size > 1:
        torch.manual_seed(int(torch.randint(1 << 62, (1,))) + parallel.rank)


def parts(trainer: Trainer) -> Checkpointer:
    """The parts a checkpoint's trainer state is made of."""
    checkpointer = Checkpointer()
    checkpointer.register("progress", StateOf(lambda: _progress(trainer), lambda state: _load_progress(trainer, state)))
    checkpointer.register("rng", StateOf(lambda: _rng(trainer), lambda state: _load_rng(trainer, state)))
    if trainer.optimizer is not None:
        checkpointer.register("optimizer", trainer.optimizer)
    if trainer.average is not None:  # the raw weights: the model file holds the average
        checkpointer.register("average", StateOf(trainer.average.raw_weights, trainer.average.restore))
    checkpointer.register("callbacks", CallbackStates(trainer.callbacks))
    return checkpointer


def state_dict(trainer: Trainer) -> dict[str, Any]:
    return trainer.checkpointer.state_dict(trainer.step, data_fingerprint=ckpt.data_fingerprint(trainer.train_data))


def save(trainer: Trainer) -> None:
    """Rank 0 writes; every rank first helps gather what lives on several: every rank's random states and,
    under FSDP, the full weights (the average, where there is one), raw weights and optimizer state."""
    parallel = trainer.parallel
    state = state_dict(trainer)
    if trainer.parallel.sharded:
        with trainer.averaged_weights():  # the file holds the averaged weights that sample/eval/export use
            model_state, optim_state = parallel.full_state(trainer.model, trainer.optimizer)
        if parallel.is_main:
            ckpt.save_checkpoint(trainer.run_dir.path, model_state, {**state, "optimizer": optim_state})
    elif parallel.is_main:
        with trainer.averaged_weights():
            ckpt.save_checkpoint(trainer.run_dir.path, trainer.model, state)
    parallel.barrier()  # nobody reads or resumes from a checkpoint still being written


def load(trainer: Trainer, run_dir: RunDir) -> None:
    sharded = trainer.parallel.sharded
    weights: dict[str, torch.Tensor] = {}  # FSDP: full weights, scattered to the shards below
    state = ckpt.load_checkpoint(run_dir.path, weights if sharded else trainer.model,
                                 None if sharded else trainer.optimizer)
    if state.get("data_fingerprint") not in (None, ckpt.data_fingerprint(trainer.train_data)):
        raise ckpt.CheckpointError(
            f"{run_dir}: the training data differ from the data this checkpoint was trained on; resume on "
            "the same data, or start a new run"
        )
    if sharded:  # the weights first, as on one process: the average's parts restore around them
        trainer.parallel.load_full_state(trainer.model, trainer.optimizer, weights, state["optimizer"])
    try:
        trainer.checkpointer.load_state_dict(state, skip=("optimizer",) if sharded or not state.get("optimizer")
                                             else ())
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
        raise ckpt.CheckpointError(f"{run_dir}: the trainer state does not fit this run "
                                   f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                                   ) from None
    if trainer.average is not None and state.get("average") is None:
        trainer.average.restore(None)  # the loaded weights become both the average and the raw weights
    if trainer.average is None and state.get("average") is not None:
        # Averaged before, not now: train on from the raw weights.
        with torch.no_grad():
            for param, raw in zip((p for p in trainer.model.parameters() if p.requires_grad),
                                  state["average"], strict=True):
                param.copy_(raw)
    if trainer.parallel.is_main:  # drop records written after this checkpoint
        run_dir.truncate_metrics(trainer.step)
