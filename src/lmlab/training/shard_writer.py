"""`lmlab data prepare`: tokenize a corpus once into memory-mapped shards (see lmlab.data.shards).

The split is the one stream-mode training makes from the same text (by character position: train first,
then val, then test), so training on the folder or on the source sees the same tokens. Ids are written
chunk by chunk, so the ids never sit in memory as a Python list; the text itself is read whole.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab import __version__
from lmlab.data import load_corpus
from lmlab.data.shards import FORMAT_VERSION, META_FILE, shard_dtype
from lmlab.errors import ConfigError, DataError
from lmlab.files import atomic_write_text
from lmlab.tokenizers import CharTokenizer, Tokenizer, encode_large, fit_tokenizer


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


def split_text(text: str, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """The stream-mode split by character position, the same as train.run.prepare_data makes."""
    n_val, n_test = int(len(text) * val_fraction), int(len(text) * test_fraction)
    n_train = len(text) - n_val - n_test
    return {"train": text[:n_train], "val": text[n_train : n_train + n_val], "test": text[n_train + n_val :]}


def _write_split(tokenizer: Tokenizer, text: str, path: Path, dtype: np.dtype) -> int:
    if isinstance(tokenizer, CharTokenizer):  # val/test characters unseen in training are left out
        text = "".join(c for c in text if c in tokenizer.char_to_id)
    count = 0
    with open(path, "wb") as fh:
        for ids in encode_large(tokenizer, text):
            np.asarray(ids, dtype=dtype).tofile(fh)
            count += len(ids)
    return count


def prepare_shards(options: PrepareOptions) -> dict[str, Any]:
    """Fit the tokenizer on the training part, write every split's ids, and return meta.json's contents
    (with the tokenization throughput in MB of UTF-8 text per second)."""
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    corpus = load_corpus(options.source, options.encoding)
    text = "\n".join(corpus.documents)
    del corpus
    parts = split_text(text, options.val_fraction, options.test_fraction)
    started = time.perf_counter()
    tokenizer = fit_tokenizer(options.tokenizer, [parts["train"]], options.vocab_size)
    fit_seconds = time.perf_counter() - started
    dtype = shard_dtype(tokenizer.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # a half-written folder must not look prepared
    splits, started = {}, time.perf_counter()
    for name, part in parts.items():
        tokens = _write_split(tokenizer, part, out / f"{name}.bin", dtype)
        splits[name] = {"file": f"{name}.bin", "tokens": tokens, "characters": len(part)}
    encode_seconds = time.perf_counter() - started
    if splits["train"]["tokens"] < 2:
        raise DataError(f"{options.source}: the training split holds {splits['train']['tokens']} tokens")
    tokenizer.save(out / "tokenizer.json")
    megabytes = len(text.encode("utf-8")) / 1e6
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
    return meta
