"""Checkpoints: weights in safetensors, optimizer/trainer state through torch.save and loaded with
weights_only=True (no pickle of arbitrary objects), every file written to a temporary name and renamed, so a
kill mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from lmlab.errors import CheckpointError

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename over `path` (atomic on POSIX within one folder)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_weights(model: torch.nn.Module, path: Path, step: int) -> None:
    # save_model (not save_file) copes with tied weights such as a GPT's shared embedding and head.
    atomic_write(path, lambda tmp: safetensors.torch.save_model(model, str(tmp), metadata={"step": str(step)}))


def save_weight_dict(state: dict[str, torch.Tensor], path: Path, step: int) -> None:
    """A full state dict gathered from shards (FSDP). Tied weights (one tensor under two names) are stored
    once, as safetensors requires; loading with strict=False fills both names from it."""
    seen: set[int] = set()
    kept = {}
    for name, tensor in state.items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            kept[name] = tensor.contiguous()
    state = kept
    atomic_write(path, lambda tmp: safetensors.torch.save_file(state, str(tmp), metadata={"step": str(step)}))


def read_weight_dict(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no checkpoint ({path.name} is missing)")
    try:
        with safetensors.safe_open(str(path), framework="pt") as fh:
            step = int((fh.metadata() or {}).get("step", 0))
        return safetensors.torch.load_file(str(path)), step
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupted checkpoint ({err})") from None


def load_weights(model: torch.nn.Module, path: Path) -> int:
    """Load weights into `model`; returns the step they were saved at."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no checkpoint ({path.name} is missing)")
    try:
        with safetensors.safe_open(str(path), framework="pt") as fh:
            step = int((fh.metadata() or {}).get("step", 0))
        missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False)
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupted checkpoint ({err})") from None
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit this model ({str(err).splitlines()[0]})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the weights do not fit this model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    return step


def rng_state(data_generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "data": data_generator.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any], data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_generator.set_state(state["data"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no trainer state ({path.name} is missing); cannot resume")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # a truncated zip or a foreign file: any failure means the same thing here
        raise CheckpointError(f"{path}: unreadable or corrupted trainer state ({type(err).__name__})") from None


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: not an lmlab run ({path.name} is missing)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: corrupted {what}") from None
