"""Checks on what a checkpoint holds once loaded: the trainer state, the random-number state, the callbacks'
states, the optimizer state against the model's parameters, and a run's config.json. Each raises a
CheckpointError naming the first entry that lmlab could not have written, so a damaged or foreign file fails as
one line instead of a traceback part-way through a resume.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.errors import CheckpointError
from lmlab.files import parse_json
from lmlab.training.schedule import Schedule

SCHEDULE_KEYS = tuple(f.name for f in dataclasses.fields(Schedule))


def apply_rng_state(state: dict[str, Any], torch_rng, data_generator, python_rng, numpy_rng) -> None:
    torch_rng.set_state(state["torch"])
    data_generator.set_state(state["data"])
    version, internal, gauss_next = state["python"]
    python_rng.setstate((version, tuple(internal), gauss_next))
    name, keys, *rest = state["numpy"]
    numpy_rng.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def check_rng_state(state: Any, where: str = "trainer state") -> None:
    """CheckpointError unless `state` is one `rng_state` could have written: it is tried on throwaway
    generators, which check every part's type, size and range exactly as the real ones would."""
    try:
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not a dict")
        if not isinstance(state.get("torch"), torch.Tensor) or not isinstance(state.get("data"), torch.Tensor):
            raise TypeError("the torch generator states are not tensors")
        apply_rng_state(state, torch.Generator(), torch.Generator(), random.Random(), np.random.RandomState())
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"{where}: the saved random-number state is damaged ({str(err).splitlines()[0]})"
                              ) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_state(state: dict[str, Any], path: Path) -> None:
    """CheckpointError naming the first entry of a trainer state that `Trainer.state_dict` could not have
    written: a file that unpickles fine can still hold a wrong type or shape, which would otherwise fail as a
    traceback part-way through a resume (or many steps later)."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: damaged trainer state ({what})")

    if not _is_int(state["step"]) or state["step"] < 0:
        raise bad(f"step is {state['step']!r}, not a count")
    progress = state["progress"]
    if not isinstance(progress, dict):
        raise bad("the progress is not a table")
    for key in ("step", "tokens_seen", "nonfinite_steps"):
        if not _is_int(progress.get(key)) or progress[key] < 0:
            raise bad(f"{key} is {progress.get(key)!r}, not a count")
    if progress["step"] != state["step"]:
        raise bad(f"step {progress['step']} in the progress, {state['step']} beside it")
    for key, optional in (("train_seconds", False), ("last_val_loss", True), ("lr_scale", False)):
        value = progress.get(key, 1.0)
        if not (_is_number(value) or (optional and value is None)):
            raise bad(f"{key} is {value!r}, not a number")
    if progress.get("last_eval_step") is not None and not _is_int(progress["last_eval_step"]):
        raise bad(f"last_eval_step is {progress['last_eval_step']!r}")
    schedule = progress.get("schedule")
    if schedule is not None and not (isinstance(schedule, dict) and set(schedule) in (set(SCHEDULE_KEYS),
                                                                                      set(SCHEDULE_KEYS[:3]))
                                     and all(_is_int(v) and v >= 0 for v in schedule.values())):
        raise bad(f"the schedule is {schedule!r}, not counts of {', '.join(SCHEDULE_KEYS)}")
    if not isinstance(state.get("data_fingerprint"), (str, type(None))):
        raise bad("data_fingerprint is not a string")
    if state.get("average") is not None and not (isinstance(state["average"], (list, tuple))
                                                 and all(isinstance(t, torch.Tensor) for t in state["average"])):
        raise bad("the raw weights beside the average are not a list of tensors")
    optimizer = state.get("optimizer", {})
    # Muon runs keep two optimizers' states side by side (training/muon.py); each is a torch state dict.
    parts = list(optimizer.values()) if isinstance(optimizer, dict) and optimizer.keys() == {"muon", "adamw"} \
        else [optimizer]
    if not all(_is_state_dict(part) for part in parts):
        raise bad("the optimizer state is not a state dict")
    check_rng_state(state["rng"], f"{path}")
    check_callback_states(state["callbacks"], path)


def check_callback_states(saved: Any, path: Path) -> list[dict[str, Any]]:
    """The callbacks' states: JSON of {name: state} (a list before callbacks were keyed by name), each state
    a dict; the keys lmlab's own callbacks use must have their types."""
    try:
        states = parse_json(saved, path) if isinstance(saved, str) else None
    except CheckpointError:
        states = None
    states = list(states.values()) if isinstance(states, dict) else states
    if not isinstance(states, list) or not all(isinstance(s, dict) for s in states):
        raise CheckpointError(f"{path}: damaged trainer state (the callbacks' states are not JSON of states)")
    for cb_state in states:
        for key, ok in (("best", lambda v: v is None or _is_number(v)), ("wait", _is_int),
                        ("best_step", lambda v: v is None or _is_int(v)),
                        ("kept", lambda v: isinstance(v, list) and all(
                            isinstance(k, list) and len(k) == 2 and _is_number(k[0]) and isinstance(k[1], str)
                            for k in v))):
            if key in cb_state and not ok(cb_state[key]):
                raise CheckpointError(f"{path}: damaged trainer state (a callback's {key} is {cb_state[key]!r:.60})")
    return states


def _is_state_dict(optimizer: Any) -> bool:
    """An empty dict (no optimizer yet) or torch's {"state": {...}, "param_groups": [{"params": [...]}, ...]}."""
    return isinstance(optimizer, dict) and (not optimizer or (
        isinstance(optimizer.get("state"), dict) and isinstance(optimizer.get("param_groups"), list)
        and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in optimizer["param_groups"])))


def check_optimizer_state(optimizer_state: dict[str, Any], params: list[torch.Tensor], path: Path,
                          optimizer: torch.optim.Optimizer | None = None) -> None:
    """CheckpointError unless the saved optimizer state covers exactly `params` (the trainable parameters,
    in order), with each per-parameter tensor (momentum, Adam's moments) of its parameter's shape. Given the
    optimizer it will be loaded into, its groups must have the saved groups' sizes too."""
    if not optimizer_state or optimizer_state.keys() == {"muon", "adamw"}:
        return  # Muon's two optimizers split the parameters their own way; torch checks each on load
    groups = [g["params"] for g in optimizer_state["param_groups"]]
    sizes = [len(g) for g in groups]

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: the saved optimizer state does not fit this model ({what})")

    if sum(sizes) != len(params):
        raise bad(f"it is for {sum(sizes)} parameter tensors, the model has {len(params)}")
    wanted = [len(g["params"]) for g in optimizer.param_groups] if optimizer is not None else sizes
    if sizes != wanted:
        raise bad(f"groups of {sizes} parameters, the optimizer has {wanted}")
    # The trainer's AdamW puts matrices first and vectors second; SGD keeps one group in model order.
    matrices, vectors = [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]
    ordered = [*matrices, *vectors] if sizes == [len(matrices), len(vectors)] else params
    by_index = {index: ordered[n] for n, index in enumerate(i for g in groups for i in g) if _is_int(index)}
    if len(by_index) != len(params):
        raise bad("its parameter indices are not distinct integers")
    for index, entry in optimizer_state["state"].items():
        if index not in by_index or not isinstance(entry, dict):
            raise bad(f"an entry for parameter {index!r}")
        shape = tuple(by_index[index].shape)
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != shape:
                raise bad(f"{name} of parameter {index} has shape {tuple(value.shape)}, the parameter {shape}")
            if not isinstance(value, torch.Tensor) and not _is_number(value) and value is not None:
                raise bad(f"{name} of parameter {index} is {type(value).__name__}")


def check_run_config_dict(values: Any, path: Path) -> dict[str, Any]:
    """`values` (a run's config.json) if it has the shape lmlab writes: a JSON object whose data, model and
    train entries are objects (model.block_size an int); otherwise CheckpointError naming the entry."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: corrupted config (a JSON {type(values).__name__}, not an object)")
    check_not_newer(values.get("lmlab_version"), path)
    for section in ("data", "model", "train"):
        if section in values and not isinstance(values[section], dict):
            raise CheckpointError(f"{path}: corrupted config (\"{section}\" is {json.dumps(values[section]):.40}, "
                                  "not an object)")
    block_size = values.get("model", {}).get("block_size", 0)
    if not _is_int(block_size) or block_size < 0:
        raise CheckpointError(f"{path}: corrupted config (model.block_size is {block_size!r:.40})")
    return values


def check_not_newer(version: Any, path: Path) -> None:
    """CheckpointError when a file was written by an lmlab newer than this one (its fields may mean what this
    version cannot know; reading it and writing it back would rewrite it as an older file). None (written
    before versions were kept) passes."""
    from lmlab import __version__

    if version is None:
        return
    if not isinstance(version, str) or not _release(version):
        raise CheckpointError(f"{path}: corrupted config (lmlab_version is {json.dumps(version):.40})")
    if _release(version) > _release(__version__):
        raise CheckpointError(f"{path}: written by lmlab {version}, newer than this lmlab {__version__}; upgrade "
                              "lmlab to use it")


def _release(version: str) -> tuple[int, ...]:
    """(1, 2, 3) of "1.2.3" (a suffix such as ".dev0" or "rc1" is ignored); () if it does not start so."""
    parts = []
    for part in version.split(".")[:3]:
        digits = part[: len(part) - len(part.lstrip("0123456789"))] if part else ""
        if not digits or len(digits) > 9:
            break
        parts.append(int(digits))
    return tuple(parts)
