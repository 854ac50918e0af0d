"""Checkpoints: weights in safetensors, optimizer/trainer state through torch.save and loaded with
weights_only=True (no pickle of arbitrary objects), every file written to a temporary name and renamed, so a
kill mid-write leaves the previous checkpoint whole. The checks that a loaded trainer state could have
been written by lmlab live in checkpoint_checks.py.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from lmlab.errors import CheckpointError, LmlabError
from lmlab.files import (
    DiskFull,
    atomic_write,
    is_out_of_space,
    not_a_file,
    read_json_file,
    sync_dir,
    temporary_path,
    write_synced,
)
from lmlab.training.checkpoint.checks import (
    apply_rng_state,
    check_optimizer_state,
    check_rng_state,
    check_run_config_dict,
    check_state,
)
from lmlab.training.checkpoint.parts import FORMAT, upgrade

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"


# What every trainer state holds: today's layout (named parts, see checkpointer.py) or the flat one before it.
STATE_KEYS = frozenset({"step", "progress", "rng", "callbacks"})
FLAT_STATE_KEYS = frozenset({"step", "tokens_seen", "nonfinite_steps", "train_seconds", "last_val_loss", "optimizer",
                             "rng", "callbacks"})


class NonFiniteModel(LmlabError):
    """The model holds NaN or inf; saving it would replace the last good checkpoint."""


def _save_model(model: torch.nn.Module, path: Path, step: int) -> None:
    _save_weight_dict(model.state_dict(), path, step)


def save_weights(model: torch.nn.Module | dict[str, torch.Tensor], path: Path, step: int) -> None:
    """A weights file of its own (early stopping's best, ModelCheckpoint's), written as a checkpoint is;
    `model` may be a full state dict (gathered from FSDP's shards)."""
    try:
        atomic_write(path, lambda tmp: _save_model_or_dict(model, tmp, step))
    except (OSError, RuntimeError, DiskFull) as err:  # a full disk: said with the room a checkpoint needs
        _raise_if_out_of_space(path.parent, model, {"step": step}, err)
        raise


def nonfinite_tensors(model: torch.nn.Module | dict[str, torch.Tensor]) -> list[str]:
    """Names of parameters and floating-point buffers holding NaN or inf."""
    named = list(model.items()) if isinstance(model, dict) else [*model.named_parameters(), *model.named_buffers()]
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def save_checkpoint(run_dir: Path, model: torch.nn.Module | dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write weights and trainer state as one unit: both go to temporary files first, then the weights are
    renamed into place and then the state. A kill between the two renames leaves the finished state in its
    temporary file, where `load_checkpoint` finds it and completes the commit; any earlier kill leaves the
    previous checkpoint whole. A model with NaN or inf in it is never saved over a good checkpoint.
    `model` may be a full state dict (FSDP gathers one from the shards) instead of a module."""
    require_run_folder(run_dir)
    bad = nonfinite_tensors(model)
    if bad:
        raise NonFiniteModel(
            f"the weights hold NaN or inf at step {state['step']} ({', '.join(bad[:3])}); not saved, the last "
            "good checkpoint is kept"
        )
    weights, trainer_state = run_dir / MODEL_FILE, run_dir / STATE_FILE
    pending = []
    try:
        for path, write in ((trainer_state, lambda tmp: torch.save(state, tmp)),
                            (weights, lambda tmp: _save_model_or_dict(model, tmp, state["step"]))):
            pending.append(temporary_path(path))
            write_synced(temporary_path(path), write)
    except BaseException as err:
        for tmp in pending:
            tmp.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError, safetensors.SafetensorError)):  # torch.save: RuntimeError
            _raise_if_out_of_space(run_dir, model, state, err)
        raise
    os.replace(temporary_path(weights), weights)
    os.replace(temporary_path(trainer_state), trainer_state)
    sync_dir(run_dir)


def require_run_folder(run_dir: Path) -> None:
    """CheckpointError when the run folder was removed while training: writing would make a new folder holding
    half a run (a checkpoint without its config). Checked before every write into a run that is training."""
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: the run folder was removed while training; stopped, nothing written")


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _raise_if_out_of_space(run_dir: Path, model: Any, state: dict[str, Any], err: BaseException) -> None:
    """CheckpointError saying how much room a checkpoint needs, when the disk is what failed it."""
    weights = model if isinstance(model, dict) else dict(model.state_dict())
    needed = _tensor_bytes(weights) + _tensor_bytes(state)
    free = shutil.disk_usage(run_dir).free
    if is_out_of_space(err) or free < needed:
        raise CheckpointError(f"{run_dir}: no space left for the checkpoint (it needs about {needed / 1e6:.1f} MB, "
                              f"{free / 1e6:.1f} MB are free); any earlier checkpoint is kept") from None


def load_checkpoint(run_dir: Path, model: torch.nn.Module | dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load the weights into `model` and return the trainer state saved with them, checking they belong
    together (and completing a commit that a kill interrupted between its two renames) and that the
    optimizer state fits the model (and `optimizer`'s groups, when given). Given a dict (FSDP), the full
    weights are put in it for the caller to scatter to the shards."""
    if isinstance(model, dict):
        weights, weights_step = read_weight_dict(run_dir / MODEL_FILE, model)
        model.update(weights)
    else:
        weights_step = load_weights(model, run_dir / MODEL_FILE)
    trainer_state, pending = run_dir / STATE_FILE, temporary_path(run_dir / STATE_FILE)
    state = load_state(trainer_state) if trainer_state.is_file() or not pending.is_file() else None
    if (state is None or state.get("step") != weights_step) and pending.is_file():
        try:
            candidate = load_state(pending)
        except CheckpointError:
            candidate = None
        if candidate is not None and candidate.get("step") == weights_step:
            os.replace(pending, trainer_state)
            state = candidate
    if state is None or state.get("step") != weights_step:
        raise CheckpointError(
            f"{run_dir}: weights (step {weights_step}) and trainer state "
            f"(step {state.get('step') if state else '?'}) do not belong together"
        )
    if not isinstance(model, dict):  # FSDP's optimizer state is keyed by name and checked by torch
        params = [p for p in model.parameters() if p.requires_grad]
        check_optimizer_state(state.get("optimizer", {}), params, trainer_state, optimizer)
        raw = state.get("average")
        if raw is not None and [tuple(t.shape) for t in raw] != [tuple(p.shape) for p in params]:
            raise CheckpointError(f"{trainer_state}: damaged trainer state (the raw weights kept beside the "
                                  "average do not fit this model)")
    return state


def _save_model_or_dict(model: torch.nn.Module | dict[str, torch.Tensor], path: Path, step: int) -> None:
    if isinstance(model, dict):
        _save_weight_dict(model, path, step)
    else:
        _save_model(model, path, step)


def _save_weight_dict(state: dict[str, torch.Tensor], path: Path, step: int) -> None:
    """A model's state dict, or a full one gathered from shards (FSDP). Tied weights (one tensor under several
    names, such as a GPT's shared embedding and head) are stored once, under the alphabetically first name,
    which is the one safetensors' load_model looks for. The metadata is the step alone: safetensors writes its
    metadata map in an order that changes from process to process, and one key keeps the file's bytes a
    function of the weights and the step (two runs, or a run and its resumed twin, write identical files)."""
    seen: set[tuple[int, int, tuple[int, ...], tuple[int, ...]]] = set()
    kept = {}
    for name in sorted(state):
        tensor = state[name]
        # state_dict() detaches each entry, so tied names are different objects over the same memory
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if tensor.numel() and where in seen:
            continue
        seen.add(where)
        kept[name] = tensor.contiguous()
    safetensors.torch.save_file(kept, str(path), metadata={"step": str(step)})


# The names safetensors' header gives the dtypes lmlab saves (its own table is private).
SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                      torch.bool: "BOOL"}


def _require_weights_file(path: Path) -> None:
    problem = not_a_file(path)
    if problem:
        raise CheckpointError(f"{path.parent}: no checkpoint ({path.name} is {problem})")


def _refuse_other_dtypes(fh: Any, expected: dict[str, torch.Tensor], path: Path) -> None:
    """Loading casts silently (int8 or float64 weights would load as float32 and mean something else), so a
    tensor stored in a dtype other than the one the model holds, which is what lmlab saved, is refused."""
    for name in fh.keys():  # noqa: SIM118 (safetensors 0.8: safe_open is not iterable itself)
        want = expected.get(name)
        if want is None:
            continue
        stored = fh.get_slice(name).get_dtype()
        if stored != SAFETENSORS_DTYPES.get(want.dtype, str(want.dtype)):
            raise CheckpointError(f"{path}: tensor {name} is stored as {stored}, this model holds "
                                  f"{SAFETENSORS_DTYPES.get(want.dtype, want.dtype)}; lmlab did not write it so")


def read_weight_dict(path: Path, expected: dict[str, torch.Tensor] | None = None
                     ) -> tuple[dict[str, torch.Tensor], int]:
    _require_weights_file(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as fh:
            step = int((fh.metadata() or {}).get("step", 0))
            _refuse_other_dtypes(fh, expected or {}, path)
        weights = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupted checkpoint ({err})") from None
    _refuse_nonfinite(weights, path)
    return weights, step


def load_weights(model: torch.nn.Module, path: Path) -> int:
    """Load weights into `model`; returns the step they were saved at."""
    _require_weights_file(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as fh:
            step = int((fh.metadata() or {}).get("step", 0))
            _refuse_other_dtypes(fh, model.state_dict(), path)
        missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False)
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupted checkpoint ({err})") from None
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit this model ({_first_mismatch(err)})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the weights do not fit this model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    _refuse_nonfinite(model, path)
    return step


def _first_mismatch(err: RuntimeError) -> str:
    """The first line of load_state_dict's error that names a tensor (its first line only says where)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines[1:] if "size mismatch" in line or "Missing" in line or "Unexpected" in line]
    return (named or lines or [type(err).__name__])[0]


def _refuse_nonfinite(model: torch.nn.Module | dict[str, torch.Tensor], path: Path) -> None:
    """lmlab never saves NaN or inf (save_checkpoint refuses), so a file holding them was damaged or written
    elsewhere; evaluating it prints `nll nan` and sampling from it fails deep inside torch."""
    bad = nonfinite_tensors(model)
    if bad:
        raise CheckpointError(f"{path}: the weights hold NaN or inf ({', '.join(bad[:3])}); the file is damaged, "
                              "use another checkpoint or train again")


def data_fingerprint(dataset: Any) -> str | None:
    """A short hash of a dataset's token ids, so a resume on different data is caught rather than silently
    continuing from a data position that no longer means anything."""
    if getattr(dataset, "fingerprint", None):  # prepared shards: too large to hash whole at each checkpoint
        return dataset.fingerprint
    ids = getattr(dataset, "ids", None)
    if ids is None:
        ids = getattr(dataset, "input_ids", None)
    if not isinstance(ids, torch.Tensor):
        return None
    return hashlib.sha256(ids.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def rng_state(data_generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "data": data_generator.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any], data_generator: torch.Generator) -> None:
    check_rng_state(state)
    apply_rng_state(state, torch.default_generator, data_generator, random, np.random)


def torch_load_safely(path: Path, mmap: bool = False) -> Any:
    """torch.load with weights_only=True (plain data and tensors, no pickled objects), the one way lmlab reads
    a .pt file. A raw pickle is refused by it; torch warns about the file in two lines first, silenced here so
    the caller's one-line refusal is all a user sees."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)


def load_state(path: Path) -> dict[str, Any]:
    problem = not_a_file(path)
    if problem:
        raise CheckpointError(f"{path.parent}: no trainer state ({path.name} is {problem}); cannot resume")
    try:
        state = torch_load_safely(path)
    except Exception as err:  # noqa: BLE001 -- a truncated zip or a foreign file: any failure means the same thing here
        raise CheckpointError(f"{path}: unreadable or corrupted trainer state ({type(err).__name__})") from None
    if not isinstance(state, dict) or not (state.keys() >= STATE_KEYS or state.keys() >= FLAT_STATE_KEYS):
        raise CheckpointError(f"{path}: not an lmlab trainer state (keys missing)")
    written = state.get("format", 1)
    if not isinstance(written, int) or isinstance(written, bool) or written > FORMAT:
        raise CheckpointError(f"{path}: trainer state format {written!r:.20} is newer than this lmlab's "
                              f"(format {FORMAT}); upgrade lmlab to resume it")
    state = upgrade(state)
    check_state(state, path)
    return state


def read_json(path: Path, what: str, kind: type = dict) -> Any:
    """A JSON value of `kind` (an object unless told) from a run directory (summary, config, findings), or
    CheckpointError saying what is wrong; a run's config ("config") must also have the shape
    `check_run_config_dict` asks for."""
    problem = not_a_file(path)
    if problem:
        raise CheckpointError(f"{path.parent}: not an lmlab run ({path.name} is {problem})")
    values = read_json_file(path, CheckpointError, f"corrupted {what}")
    if what == "config":
        return check_run_config_dict(values, path)
    if not isinstance(values, kind):
        wanted = "an object" if kind is dict else f"a {kind.__name__}"
        raise CheckpointError(f"{path}: corrupted {what} (a JSON {type(values).__name__}, not {wanted})")
    return values
