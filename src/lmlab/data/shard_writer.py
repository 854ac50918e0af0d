"""`lmlab data prepare`: tokenize a corpus once into memory-mapped shards (see lmlab.data.shards).

The split is the one stream-mode training makes from the same text (by character position: train first,
then val, then test), and so are the ids (documents encoded one by one and joined by the boundary token,
whose positions go to `{split}.boundaries.npy`), so training on the folder or on the source sees the same
tokens and batches. Ids are written chunk by chunk, so the ids never sit in memory as a Python list.

One text file, the way a large corpus usually comes, is never read whole: it is read three times a block at
a time (to count its characters, so the split falls where it always has; to fit the tokenizer from pieces of
about a MiB; to encode each split into its shard), so memory is a constant (a few blocks, the tokenizer's
counts) whatever the file's size. Other sources (folders, records, embedded sets) are read whole, as
training reads them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab import __version__
from lmlab.config import check_vocab_size
from lmlab.data import load_corpus
from lmlab.data.documents import split_documents
from lmlab.data.shards import FORMAT_VERSION, META_FILE, partial_folder, shard_dtype
from lmlab.data.sources import iter_text_file, single_text_file
from lmlab.errors import ConfigError, DataError
from lmlab.files import atomic_write, atomic_write_text, claim_output_folder, read_json_file, sync_dir
from lmlab.tokenizers import CharTokenizer, Tokenizer, encode_joined, encode_pieces, fit_tokenizer, stream_chunks

PIECE_CHARS = 1 << 20  # the text a streamed file is fitted and encoded in: about a MiB at a time
BLOCK_BYTES = 1 << 22  # and the bytes it is read in


@dataclass(frozen=True, kw_only=True, slots=True)
class PrepareOptions:
    source: str
    out: str
    tokenizer: str = "char"
    vocab_size: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    encoding: str = "utf-8"
    show_progress: bool = False  # a bar with MB/s on stderr while fitting and encoding (the command line's)

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("--val-fraction + --test-fraction must leave something to train on (< 1)")
        check_vocab_size(self.vocab_size, self.tokenizer, "--vocab-size")


def _known(tokenizer: Tokenizer, piece: str) -> str:
    """`piece` without the characters a character vocabulary lacks (val/test characters unseen in training
    are left out, as training on the source leaves them out); word and BPE encode anything."""
    if isinstance(tokenizer, CharTokenizer):
        return "".join(c for c in piece if c in tokenizer.char_to_id)
    return piece


def _write_ids(tokenizer: Tokenizer, chunks: Iterable[list[int] | None], path: Path,
               dtype: np.dtype) -> tuple[int, list[int]]:
    """Write the ids of `chunks`, a boundary token for each None; (tokens written, the boundaries' positions)."""
    count, boundaries = 0, []
    path.unlink(missing_ok=True)  # a new file: never through a link planted under this name
    with open(path, "xb") as fh:
        for ids in chunks:
            if ids is None:
                boundaries.append(count)
                ids = [tokenizer.boundary_id]
            np.asarray(ids, dtype=dtype).tofile(fh)
            count += len(ids)
    return count, boundaries


class _Bar:
    """A progress bar in MB of text (tqdm shows its rate, MB/s) when asked, else nothing."""

    def __init__(self, show: bool, desc: str, total_bytes: int | None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, disable=None if show else True,
                        dynamic_ncols=True, leave=False)

    def count(self, pieces: Iterable[str]) -> Iterator[str]:
        for piece in pieces:
            yield piece
            self.bar.update(len(piece) if piece.isascii() else len(piece.encode("utf-8")))

    def close(self) -> None:
        self.bar.close()


class _StreamedFile:
    """One text file read a block at a time: its size, the character ranges of the splits, and the text of a
    range as pieces of about PIECE_CHARS cut where every tokenizer starts a fresh token (stream_chunks)."""

    def __init__(self, path: Path, options: PrepareOptions):
        self.path, self.encoding = path, options.encoding
        total, size = 0, 0
        for block in iter_text_file(path, self.encoding, BLOCK_BYTES):
            total += len(block)
            size += len(block) if block.isascii() else len(block.encode("utf-8"))
        self.bytes = size
        # by character position, as split_documents cuts one document
        n_val, n_test = int(total * options.val_fraction), int(total * options.test_fraction)
        n_train = total - n_val - n_test
        self.ranges = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, total)}

    def pieces(self, split: str) -> Iterator[str]:
        first, last = self.ranges[split]
        position = 0
        for piece in stream_chunks(iter_text_file(self.path, self.encoding, BLOCK_BYTES), PIECE_CHARS):
            end = position + len(piece)
            if end > first and position < last:
                yield piece[max(first - position, 0) : last - position]
            if end >= last:
                return
            position = end


def _streamed_ids(tokenizer: Tokenizer, pieces: Iterable[str]) -> Iterator[list[int]]:
    """The ids of one document given as pieces, each cut where a token starts anyway: the ids of the whole."""
    for piece in pieces:
        for _, ids in encode_pieces(tokenizer, [_known(tokenizer, piece)]):
            yield ids


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
    single = single_text_file(options.source)
    if single is not None:
        return _prepare_streamed(options, out, _StreamedFile(single, options))
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
        known = [_known(tokenizer, p) for p in pieces]
        tokens, boundaries = _write_ids(tokenizer, encode_joined(tokenizer, known), out / f"{name}.bin", dtype)
        characters = sum(len(p) for p in pieces) + max(len(pieces) - 1, 0)
        splits[name] = {"file": f"{name}.bin", "tokens": tokens, "characters": characters}
        if boundaries:
            positions = np.asarray(boundaries, dtype=np.int64)
            atomic_write(out / f"{name}.boundaries.npy",
                         lambda tmp, positions=positions: _save_npy(tmp, positions))
            splits[name]["boundaries"] = {"file": f"{name}.boundaries.npy", "count": len(boundaries)}
    return _finish(options, tokenizer, out, final, splits, megabytes=megabytes, fit_seconds=fit_seconds,
                   encode_seconds=time.perf_counter() - started)


def _prepare_streamed(options: PrepareOptions, out: Path, source: _StreamedFile) -> dict[str, Any]:
    """prepare_shards for one text file, read a block at a time (one document: no boundaries)."""
    started = time.perf_counter()
    bar = _Bar(options.show_progress, "fit tokenizer", None)
    tokenizer = fit_tokenizer(options.tokenizer, bar.count(source.pieces("train")), options.vocab_size)
    bar.close()
    fit_seconds = time.perf_counter() - started
    dtype = shard_dtype(tokenizer.vocab_size)
    final, out = out, _fresh_partial_folder(out)
    splits, started = {}, time.perf_counter()
    bar = _Bar(options.show_progress, "encode", source.bytes)
    for name, (first, last) in source.ranges.items():
        tokens, _ = _write_ids(tokenizer, _streamed_ids(tokenizer, bar.count(source.pieces(name))),
                               out / f"{name}.bin", dtype)
        splits[name] = {"file": f"{name}.bin", "tokens": tokens, "characters": last - first}
    bar.close()
    return _finish(options, tokenizer, out, final, splits, megabytes=source.bytes / 1e6, fit_seconds=fit_seconds,
                   encode_seconds=time.perf_counter() - started)


def _finish(options: PrepareOptions, tokenizer: Tokenizer, out: Path, final: Path, splits: dict[str, Any], *,
            megabytes: float, fit_seconds: float, encode_seconds: float) -> dict[str, Any]:
    """Refuse a training split of under two tokens, else write the tokenizer and meta.json and publish the
    folder under its name; meta.json's contents."""
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
        "dtype": shard_dtype(tokenizer.vocab_size).name,
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
