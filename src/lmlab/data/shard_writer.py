"""`lmlab data prepare`: tokenize a corpus once into memory-mapped shards (see lmlab.data.shards).

The split is the one stream-mode training makes from the same text (by character position: train first,
then val, then test), and so are the ids (documents encoded one by one and joined by the boundary token,
whose positions go to `{split}.boundaries.npy`), so training on the folder or on the source sees the same
tokens and batches. Ids are written chunk by chunk, so the ids never sit in memory as a Python list; the
text itself is read whole.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab import __version__
from lmlab.config import check_vocab_size
from lmlab.data import load_corpus
from lmlab.data.documents import split_documents
from lmlab.data.shards import FORMAT_VERSION, META_FILE, partial_folder, shard_dtype
from lmlab.errors import ConfigError, DataError
from lmlab.files import atomic_write, atomic_write_text, claim_output_folder, read_json_file, sync_dir
from lmlab.tokenizers import CharTokenizer, Tokenizer, encode_joined, fit_tokenizer


@dataclass(frozen=True, kw_only=True, slots=True)
class PrepareOptions:
    source: str
    out: str
    tokenizer: str = "char"
    vocab_size: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("--val-fraction + --test-fraction must leave something to train on (< 1)")
        check_vocab_size(self.vocab_size, self.tokenizer, "--vocab-size")


def _write_split(tokenizer: Tokenizer, pieces: list[str], path: Path, dtype: np.dtype) -> tuple[int, list[int]]:
    """Write the ids of `pieces` joined by the boundary token; (tokens written, the boundaries' positions)."""
    if isinstance(tokenizer, CharTokenizer):  # val/test characters unseen in training are left out
        pieces = ["".join(c for c in p if c in tokenizer.char_to_id) for p in pieces]
    count, boundaries = 0, []
    path.unlink(missing_ok=True)  # a new file: never through a link planted under this name
    with open(path, "xb") as fh:
        for ids in encode_joined(tokenizer, pieces):
            if ids is None:
                boundaries.append(count)
                ids = [tokenizer.boundary_id]
            np.asarray(ids, dtype=dtype).tofile(fh)
            count += len(ids)
    return count, boundaries


def _save_npy(path: Path, values: np.ndarray) -> None:
    # the temporary file atomic_write created exclusively; np.save on a name would add ".npy" to it
    with open(path, "r+b") as fh:
        np.save(fh, values, allow_pickle=False)


def is_prepared_folder(folder: Path) -> bool:
    """A folder `data prepare` wrote (its meta.json): preparing it again replaces its shards."""
    try:
        meta = read_json_file(Path(folder) / META_FILE, DataError)
    except DataError:
        return False
    return isinstance(meta, dict) and "lmlab_shards" in meta


def prepare_shards(options: PrepareOptions) -> dict[str, Any]:
    """Fit the tokenizer on the training part, write every split's ids, and return meta.json's contents
    (with the tokenization throughput in MB of UTF-8 text per second)."""
    out = claim_output_folder(options.out, "the prepared data", may_replace=is_prepared_folder)
    corpus = load_corpus(options.source, options.encoding)
    parts = split_documents([d for d in corpus.documents if d], options.val_fraction, options.test_fraction)
    megabytes = sum(len(d.encode("utf-8")) for d in corpus.documents) / 1e6
    del corpus
    started = time.perf_counter()
    tokenizer = fit_tokenizer(options.tokenizer, [p for p in parts["train"] if p], options.vocab_size)
    fit_seconds = time.perf_counter() - started
    dtype = shard_dtype(tokenizer.vocab_size)
    final, out = out, _fresh_partial_folder(out)  # written whole under a temporary name, then renamed
    splits, started = {}, time.perf_counter()
    for name, pieces in parts.items():
        tokens, boundaries = _write_split(tokenizer, pieces, out / f"{name}.bin", dtype)
        characters = sum(len(p) for p in pieces) + max(len(pieces) - 1, 0)
        splits[name] = {"file": f"{name}.bin", "tokens": tokens, "characters": characters}
        if boundaries:
            positions = np.asarray(boundaries, dtype=np.int64)
            atomic_write(out / f"{name}.boundaries.npy",
                         lambda tmp, positions=positions: _save_npy(tmp, positions))
            splits[name]["boundaries"] = {"file": f"{name}.boundaries.npy", "count": len(boundaries)}
    encode_seconds = time.perf_counter() - started
    if splits["train"]["tokens"] < 2:
        shutil.rmtree(out)
        raise DataError(f"{options.source}: the training split holds {splits['train']['tokens']} tokens")
    tokenizer.save(out / "tokenizer.json")
    meta = {
        "lmlab_shards": FORMAT_VERSION,
        "lmlab_version": __version__,
        "source": options.source,
        "tokenizer": options.tokenizer,
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype.name,
        "val_fraction": options.val_fraction,
        "test_fraction": options.test_fraction,
        "splits": splits,
        "megabytes": round(megabytes, 3),
        "fit_seconds": round(fit_seconds, 3),
        "encode_seconds": round(encode_seconds, 3),
        "encode_mb_per_s": round(megabytes / max(encode_seconds, 1e-9), 2),
    }
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    _publish(out, final)
    return meta


def _fresh_partial_folder(out: Path) -> Path:
    """The temporary folder for `out`, emptied: what is there is a killed prepare's leftover (the name is
    lmlab's own); a link under that name is removed, never followed."""
    work = partial_folder(out)
    if work.is_symlink():
        work.unlink()
    elif work.exists():
        shutil.rmtree(work)
    out.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir()
    return work


def _publish(work: Path, out: Path) -> None:
    """Rename the complete folder `work` to `out`. An earlier prepared folder there (claim_output_folder let
    it be replaced) is renamed aside first and removed after; an empty one is replaced by the rename itself."""
    old = out.with_name(f".{out.name}.replaced")
    if out.is_dir() and any(out.iterdir()):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    elif out.is_dir():
        out.rmdir()
    os.replace(work, out)
    sync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
