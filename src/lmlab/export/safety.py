"""Checks that keep export and import from destroying work or exhausting memory.

Export: the output folder must be new or empty (or `force`), and is never a run directory, forced or not:
an export's config.json and model.safetensors would replace the run's own.
Import: config.json must be a JSON object with sensible sizes, and the safetensors header (read without
loading a tensor) must hold the shapes the config promises, in a file of the size those shapes need,
before a model of that config is built; the memory the model needs is compared with what the machine has.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from lmlab.errors import CheckpointError
from lmlab.files import OutputRefused, claim_output_folder, is_run_folder, not_a_file, parse_json, read_json_file
from lmlab.training.memory import available_memory

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
INT_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
LIMITS = {"vocab_size": 10_000_000, "n_positions": 1 << 20, "n_embd": 1 << 16, "n_layer": 1024, "n_head": 1024}


def check_export_target(out: Path, run_dir: Path | None, force: bool) -> Path:
    """`out` if an export may write there (files.py's one rule for output folders): new, or empty,
    or (with `force`) holding anything but a run; never the run itself, a run, or a folder inside one."""
    out = Path(out)
    if run_dir is not None and out.exists() and Path(run_dir).exists() and out.samefile(run_dir):
        raise OutputRefused(f"{out} is a run directory (the run being exported); choose another OUT")
    return claim_output_folder(out, "the export", may_replace=lambda folder: force and not is_run_folder(folder),
                               force_hint=", or pass --force to overwrite the export files in it")


# ----------------------------------------------------------------------------------------------------------
# Import


def read_hf_config(hf_dir: Path) -> dict[str, Any]:
    """config.json as a dict, with the GPT-2 sizes ints in range, or CheckpointError in one line."""
    path = hf_dir / "config.json"
    problem = not_a_file(path)
    if problem:
        raise CheckpointError(f"{hf_dir}: not an HF model directory (config.json is {problem})")
    hf = read_json_file(path)
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, not a {type(hf).__name__}")
    for name in INT_FIELDS:
        value = hf.get(name)
        if value is None and name != "vocab_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise CheckpointError(f"{path}: {name} must be an integer, got {value!r}")
        if not 1 <= value <= LIMITS[name]:
            raise CheckpointError(f"{path}: {name}={value:,} is outside 1..{LIMITS[name]:,}")
    for name in ("layer_norm_epsilon", "resid_pdrop"):
        value = hf.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CheckpointError(f"{path}: {name} must be a number, got {value!r}")
    return hf


def safetensors_header(path: Path) -> tuple[dict[str, dict], int]:
    """The tensor entries of a safetensors file's JSON header, and the bytes of data the header claims."""
    try:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: header of {size:,} bytes; not a safetensors file")
            header = parse_json(fh.read(size), path, CheckpointError, "not a safetensors file")
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not a safetensors file ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not an object)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
        for entry in tensors.values():
            entry["shape"] = [int(d) for d in entry["shape"]]
    except (KeyError, TypeError, ValueError, IndexError):
        raise CheckpointError(f"{path}: not a safetensors file (malformed tensor entries)") from None
    if os.path.getsize(path) < 8 + size + end:
        raise CheckpointError(f"{path}: truncated: the header describes {end:,} bytes of tensors, the file "
                              f"holds {os.path.getsize(path) - 8 - size:,}")
    return tensors, end


def gpt_parameters(config) -> int:
    """Parameters of lmlab's GPT (with biases) of this config."""
    V, P, C, L = config.vocab_size, config.block_size, config.n_embd, config.n_layer
    block = 12 * C * C + 13 * C
    head = 0 if config.tie_embeddings else V * C
    return V * C + P * C + L * block + 2 * C + head


def check_hf_weights(path: Path, config) -> None:
    """The weights file holds the embeddings and layers `config` promises, and the model fits in memory.
    Reads only the header: a config claiming 10,000 layers or a context of 10^9 is refused in milliseconds."""
    tensors, data_bytes = safetensors_header(path)
    shapes = {(k[len("transformer."):] if k.startswith("transformer.") else k): v["shape"]
              for k, v in tensors.items()}
    expected = {"wte.weight": [config.vocab_size, config.n_embd], "wpe.weight": [config.block_size, config.n_embd]}
    for name, shape in expected.items():
        if name not in shapes:
            raise CheckpointError(f"{path}: no {name} tensor; not GPT-2 weights")
        if shapes[name] != shape:
            raise CheckpointError(f"{path}: {name} is {tuple(shapes[name])}, but config.json's sizes need "
                                  f"{tuple(shape)} (vocab_size/n_positions x n_embd)")
    layers = {int(k.split(".")[1]) for k in shapes if k.startswith("h.") and k.split(".")[1].isdigit()}
    if layers != set(range(config.n_layer)):
        raise CheckpointError(f"{path}: holds {len(layers)} layer(s), config.json says n_layer={config.n_layer}")
    needed = gpt_parameters(config)
    if data_bytes < needed * 2:  # 2 bytes: the smallest float type a checkpoint stores
        raise CheckpointError(f"{path}: holds {data_bytes:,} bytes of tensors, too few for the {needed:,} "
                              "parameters config.json describes")
    # The loaded file (float32) and the model, with room to spare for the state dict's copies.
    estimate = 3 * 4 * needed
    available = available_memory()
    if available is not None and estimate > available:
        raise CheckpointError(f"{path}: importing {needed:,} parameters needs about {estimate / 2**30:.1f} GiB "
                              f"of memory; {available / 2**30:.1f} GiB is available")
