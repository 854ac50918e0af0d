"""Prepared token shards: a folder written once by `lmlab data prepare`, read by training through np.memmap.

Layout: `meta.json` (what was tokenized, how, and how many tokens each split holds), `tokenizer.json`, and
one flat binary file per split (`train.bin`, `val.bin`, `test.bin`) of uint16 ids, or uint32 when the
vocabulary has more than 65,536 entries — the layout nanoGPT's prepare scripts use.

Why memory stays flat as the corpus grows: every batch maps the file afresh and unmaps it when done (as
nanoGPT does), so only the pages of the windows being read are ever resident in this process; the rest stays
on disk or in the kernel's page cache, which is shared and reclaimable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lmlab.data.datasets import overlapping_windows
from lmlab.errors import DataError

META_FILE = "meta.json"
FORMAT_VERSION = 1


def shard_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta["lmlab_shards"] != FORMAT_VERSION:
            raise DataError(f"{path}: shard format {meta['lmlab_shards']}, this lmlab reads {FORMAT_VERSION}")
        for name, split in meta["splits"].items():
            size = (Path(folder) / split["file"]).stat().st_size
            if size != split["tokens"] * np.dtype(meta["dtype"]).itemsize:
                raise DataError(f"{folder}/{split['file']}: {size} bytes, expected {split['tokens']} {name} "
                                f"tokens of {meta['dtype']}; prepare the folder again")
    except FileNotFoundError as err:
        raise DataError(f"{folder}: incomplete prepared data ({Path(err.filename).name} is missing)") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{path}: not a prepared-data description (corrupted meta.json?)") from None
    return meta


class ShardDataset:
    """A TokenDataset over one split's binary file: random windows for training, ordered for evaluation.

    It draws window offsets exactly as StreamDataset does, so the same seed gives the same batches whether
    the tokens come from a prepared folder or from text encoded in memory."""

    def __init__(self, path: str | Path, num_tokens: int, dtype: str | np.dtype, block_size: int):
        self.path = Path(path)
        self.num_tokens = num_tokens
        self.dtype = np.dtype(dtype)
        self.block_size = block_size

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

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        starts = torch.randint(self.num_tokens - self.block_size + 1, (batch_size,), generator=generator)
        offsets = (starts[:, None] + torch.arange(self.block_size)).numpy()  # (B, T)
        windows = torch.from_numpy(self._map()[offsets].astype(np.int64))  # (B, T); a copy, then unmapped
        return windows, windows.clone()

    def iter_batches(self, batch_size: int, max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Windows that overlap by one token, as StreamDataset: every token after the first predicted once."""
        def take(offsets: Tensor) -> Tensor:  # mapped per batch, so the pages read can be dropped
            return torch.from_numpy(self._map()[offsets.numpy()].astype(np.int64))  # (B, T); a copy

        yield from overlapping_windows(take, self.num_tokens, self.block_size, batch_size, max_tokens)


def open_shards(folder: str | Path, block_size: int) -> tuple[dict[str, Any], dict[str, ShardDataset]]:
    """meta.json's contents and one ShardDataset per split of a prepared folder."""
    folder = Path(folder)
    meta = read_meta(folder)
    splits = {name: ShardDataset(folder / s["file"], s["tokens"], meta["dtype"], block_size)
              for name, s in meta["splits"].items()}
    return meta, splits
