"""Prepared token shards: a folder written once by `lmlab data prepare`, read by training through np.memmap.

Layout: `meta.json` (what was tokenized, how, and how many tokens each split holds), `tokenizer.json`, and
one flat binary file per split (`train.bin`, `val.bin`, `test.bin`) of uint16 ids, or uint32 when the
vocabulary has more than 65,536 entries — the layout nanoGPT's prepare scripts use. A split of several
documents also has `{split}.boundaries.npy`, the int64 positions of the boundary tokens that join them
(meta.json: `"boundaries": {"file": ..., "count": ...}`), so its windows can stay inside one document as
in-memory stream data's do; a folder without it (one document, or prepared by an older lmlab) is one stream.

Why memory stays flat as the corpus grows: every batch maps the file afresh and unmaps it when done (as
nanoGPT does), so only the pages of the windows being read are ever resident in this process; the rest stays
on disk or in the kernel's page cache, which is shared and reclaimable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lmlab.data.datasets import document_batches, overlapping_windows, window_batch
from lmlab.data.documents import DocumentWindows
from lmlab.errors import DataError
from lmlab.files import not_a_file, read_json_file

META_FILE = "meta.json"
FORMAT_VERSION = 1


def shard_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# `data prepare` writes into FOLDER/../.FOLDER.preparing and renames it to FOLDER when every file is whole.
PARTIAL_SUFFIX = ".preparing"


def partial_folder(out: Path) -> Path:
    """Where `data prepare` writes `out` until it is complete."""
    return out.with_name(f".{out.name}{PARTIAL_SUFFIX}")


def is_prepared(path: str | Path) -> bool:
    """A folder `data prepare` finished (its meta.json); DataError naming a half-written one (a prepare that
    was killed: its temporary folder, or shards without meta.json from an lmlab that wrote in place), which
    would else be read as a folder of text files."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return True
    if path.is_dir() and (path.name.endswith(PARTIAL_SUFFIX) or (path / "train.bin").is_file()):
        raise DataError(f"{path}: a half-written prepared-data folder (lmlab data prepare did not finish); run "
                        "lmlab data prepare again")
    return False


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    problem = not_a_file(path)
    if problem:
        raise DataError(f"{folder}: incomplete prepared data ({META_FILE} is {problem})")
    try:
        meta = read_json_file(path, DataError, "not a prepared-data description (corrupted meta.json?)")
        if meta["lmlab_shards"] != FORMAT_VERSION:
            raise DataError(f"{path}: shard format {meta['lmlab_shards']}, this lmlab reads {FORMAT_VERSION}")
        if meta["dtype"] not in ("uint16", "uint32") or not _count(meta.get("vocab_size", 1)):
            raise ValueError("dtype or vocab_size")
        for name, split in meta["splits"].items():
            if not _count(split["tokens"]):
                raise ValueError("tokens")
            size = (Path(folder) / _inside(folder, split["file"])).stat().st_size
            if size != split["tokens"] * np.dtype(meta["dtype"]).itemsize:
                raise DataError(f"{folder}/{split['file']}: {size} bytes, expected {split['tokens']} {name} "
                                f"tokens of {meta['dtype']}; prepare the folder again")
    except FileNotFoundError as err:
        raise DataError(f"{folder}: incomplete prepared data ({Path(err.filename).name} is missing)") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{path}: not a prepared-data description (corrupted meta.json?)") from None
    return meta


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _inside(folder: str | Path, name: Any) -> str:
    """A shard's file name from meta.json, refused unless it names a file inside the folder: meta.json is
    data, and `../../etc/passwd` or `/dev/zero` must never be opened on its say-so."""
    parts = Path(name).parts if isinstance(name, str) else ()
    if not parts or Path(name).is_absolute() or ".." in parts or "\\" in name or ":" in parts[0]:
        raise DataError(f"{Path(folder) / META_FILE}: shard file {name!r} is not a file name inside {folder}")
    return name


def max_token_id(path: str | Path, num_tokens: int, dtype: str | np.dtype, chunk: int = 1 << 24) -> int:
    """The largest id in a shard file, read a chunk at a time (memory stays at one chunk); -1 if empty."""
    data = np.memmap(path, dtype=np.dtype(dtype), mode="r", shape=(num_tokens,)) if num_tokens else []
    top = -1
    for start in range(0, num_tokens, chunk):
        top = max(top, int(data[start : start + chunk].max()))
    del data
    return top


class ShardDataset:
    """A TokenDataset over one split's binary file: random windows for training, ordered for evaluation.

    It draws window offsets exactly as StreamDataset does, so the same seed gives the same batches whether
    the tokens come from a prepared folder or from text encoded in memory."""

    def __init__(self, path: str | Path, num_tokens: int, dtype: str | np.dtype, block_size: int,
                 boundaries: np.ndarray | None = None):
        self.path = Path(path)
        self.num_tokens = num_tokens
        self.dtype = np.dtype(dtype)
        self.block_size = block_size
        has_documents = boundaries is not None and len(boundaries) > 0
        self.documents = (DocumentWindows(torch.from_numpy(np.asarray(boundaries, dtype=np.int64)), num_tokens,
                                          block_size) if has_documents else None)

    @property
    def fingerprint(self) -> str:
        """A hash of the token count and the first and last 64 KiB: cheap for a file of any size."""
        import hashlib

        digest = hashlib.sha256(str(self.num_tokens).encode())
        with open(self.path, "rb") as fh:
            digest.update(fh.read(1 << 16))
            fh.seek(max(self.num_tokens * self.dtype.itemsize - (1 << 16), 0))
            digest.update(fh.read(1 << 16))
        return digest.hexdigest()[:16]

    def _map(self) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))

    def __len__(self) -> int:
        return self.num_tokens

    @property
    def num_predictions(self) -> int:
        return max(self.num_tokens - 1, 0)

    def _take(self, offsets: Tensor) -> Tensor:  # mapped per batch, so the pages read can be dropped
        return torch.from_numpy(self._map()[offsets.numpy()].astype(np.int64))  # (B, T); a copy

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if self.documents is not None:
            first, length = self.documents.sample(batch_size, generator)
            return window_batch(self._take, first, length, self.num_tokens)
        starts = torch.randint(self.num_tokens - self.block_size + 1, (batch_size,), generator=generator)
        offsets = (starts[:, None] + torch.arange(self.block_size)).numpy()  # (B, T)
        windows = torch.from_numpy(self._map()[offsets].astype(np.int64))  # (B, T); a copy, then unmapped
        return windows, windows.clone()

    def iter_batches(self, batch_size: int, max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Windows that overlap by one token, as StreamDataset: every token after the first predicted once."""
        if self.documents is not None:
            yield from document_batches(self._take, self.documents, self.num_tokens, batch_size, max_tokens)
            return
        yield from overlapping_windows(self._take, self.num_tokens, self.block_size, batch_size, max_tokens)


def read_boundaries(folder: str | Path, split: dict[str, Any]) -> np.ndarray | None:
    """A split's boundary positions (int64), checked as meta.json's other fields are: a file inside the
    folder, a 1-D integer array of the count meta.json gives, strictly increasing, inside the split; None
    for a split without one."""
    if "boundaries" not in split:
        return None
    path = Path(folder) / META_FILE
    try:
        entry = split["boundaries"]
        name, count = _inside(folder, entry["file"]), entry["count"]
        if not _count(count):
            raise ValueError("count")
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: not a prepared-data description (corrupted meta.json?)") from None
    where = Path(folder) / name
    try:
        positions = np.load(where, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{folder}: incomplete prepared data ({name} is missing)") from None
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{where}: not a boundary-position array ({err}); prepare the folder again") from None
    valid = positions.ndim == 1 and positions.dtype.kind in "iu" and len(positions) == count
    if valid and count:
        valid = bool((np.diff(positions) > 0).all()) and positions[0] >= 0 and positions[-1] < split["tokens"]
    if not valid:
        raise DataError(f"{where}: expected {count} increasing integer positions below {split['tokens']} "
                        "(the boundaries between documents); prepare the folder again")
    return positions.astype(np.int64)


def open_shards(folder: str | Path, block_size: int, vocab_size: int | None = None,
                cross_documents: bool = False) -> tuple[dict[str, Any], dict[str, ShardDataset]]:
    """meta.json's contents and one ShardDataset per split of a prepared folder. Every id is checked to lie
    below the vocabulary (meta.json's vocab_size, and `vocab_size` when given: the tokenizer's), so a damaged
    shard is refused here rather than failing as an IndexError inside the model mid-training. A split's
    windows stay inside its documents unless `cross_documents` (data.cross_documents)."""
    folder = Path(folder)
    meta = read_meta(folder)
    splits = {}
    for name, split in meta["splits"].items():
        boundaries = read_boundaries(folder, split)
        splits[name] = ShardDataset(folder / split["file"], split["tokens"], meta["dtype"], block_size,
                                    None if cross_documents else boundaries)
    limits = [v for v in (meta.get("vocab_size"), vocab_size) if v]
    if limits:
        for name, split in splits.items():
            top = max_token_id(split.path, split.num_tokens, split.dtype)
            if top >= min(limits):
                raise DataError(f"{split.path}: token id {top:,} is outside the vocabulary of {min(limits):,} "
                                f"({name} split); prepare the folder again")
    return meta, splits
