"""Tokenizers: one protocol for all (`tok(text).input_ids`, `decode`, `vocab_size`, `save`/`load`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from lmlab.errors import CheckpointError, ConfigError
from lmlab.tokenizers.bpe import BPETokenizer
from lmlab.tokenizers.char import BOUNDARY, CharTokenizer, Encoding
from lmlab.tokenizers.hf import HFTokenizer
from lmlab.tokenizers.word import UNKNOWN, WordTokenizer


class Tokenizer(Protocol):
    vocab_size: int
    boundary_id: int  # marks the start and end of an example (makemore's '.', GPT-2's <|endoftext|>)

    def __call__(self, text: str, add_boundary: bool = False) -> Encoding: ...

    def decode(self, ids, skip_special_tokens: bool = True) -> str: ...

    def save(self, path: str | Path) -> None: ...


TOKENIZERS: dict[str, type] = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer,
                               "hf": HFTokenizer}


def fit_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 0) -> Tokenizer:
    """Train the tokenizer `kind` on `texts`; vocab_size 0 is the tokenizer's default (char: all chars)."""
    if kind not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")
    if kind == "char":
        return CharTokenizer.fit(texts)
    return TOKENIZERS[kind].fit(texts, vocab_size)


def tokenizer_kind(tokenizer: Tokenizer) -> str:
    return next(k for k, cls in TOKENIZERS.items() if isinstance(tokenizer, cls))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer.json written by any lmlab tokenizer, or an HF byte-level BPE tokenizer.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not an lmlab tokenizer file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not an lmlab tokenizer file")
    if isinstance(data.get("model"), dict) and "added_tokens" in data:  # HF's own format
        if data["model"].get("type") != "BPE":
            raise CheckpointError(f"{path}: an HF tokenizer of type {data['model'].get('type')!r}; lmlab reads "
                                  "BPE ones")
        try:
            return BPETokenizer.from_file(path)
        except Exception as err:  # noqa: BLE001 (the Rust side raises a bare Exception)
            raise CheckpointError(f"{path}: unreadable HF tokenizer ({err})") from None
    kind = data.get("lmlab_type")
    if kind is None:
        raise CheckpointError(f"{path} is not an lmlab tokenizer file")
    if kind not in TOKENIZERS or kind == "bpe":
        raise CheckpointError(f"{path}: unknown tokenizer type {kind!r}")
    try:
        return TOKENIZERS[kind].from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupted tokenizer file ({err})") from None


def text_chunks(text: str, size: int = 1 << 20) -> Iterator[str]:
    """Cut `text` into pieces of about `size` characters that encode to the same ids as the whole: each cut
    falls right after a line break followed by a visible character, where every tokenizer here (char, word,
    byte-level BPE) starts a fresh token anyway. A stretch without such a place is cut at `2 * size`."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        limit = min(start + 2 * size, len(text))
        while end < limit:
            newline = text.find("\n", end, limit - 1)
            if newline == -1:
                end = limit
            elif not text[newline + 1].isspace():
                end = newline + 1
                break
            else:
                end = newline + 1
        yield text[start:end]
        start = end


def encode_large(tokenizer: Tokenizer, text: str, chunk_chars: int = 1 << 16) -> Iterator[list[int]]:
    """Encode a long text chunk by chunk (a list of Python ints costs ~36 bytes per token, so never build
    one for the whole corpus); BPE encodes several chunks at once on all cores."""
    batch: list[str] = []
    for chunk in text_chunks(text, chunk_chars):
        if not isinstance(tokenizer, BPETokenizer):
            yield tokenizer(chunk).input_ids
            continue
        batch.append(chunk)
        if len(batch) == 8:
            yield from tokenizer.encode_batch(batch)
            batch = []
    if batch:
        yield from tokenizer.encode_batch(batch)


__all__ = ["BOUNDARY", "TOKENIZERS", "UNKNOWN", "BPETokenizer", "CharTokenizer", "Encoding", "HFTokenizer",
           "Tokenizer", "WordTokenizer", "encode_large", "fit_tokenizer", "load_tokenizer", "text_chunks",
           "tokenizer_kind"]
