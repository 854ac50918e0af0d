"""Tokenizers: one protocol for all (`tok(text).input_ids`, `decode`, `vocab_size`, `save`/`load`)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lmlab.errors import CheckpointError, ConfigError
from lmlab.files import not_a_file, read_json_file
from lmlab.tokenizers.base import BOUNDARY, Encoding
from lmlab.tokenizers.bpe import BPETokenizer
from lmlab.tokenizers.char import CharTokenizer
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


FIT_PIECE_CHARS = 1 << 20


def fit_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 0) -> Tokenizer:
    """Train the tokenizer `kind` on `texts`; vocab_size 0 is the tokenizer's default (char: all chars).

    The trainers see `texts` cut into pieces of about a MiB (text_chunks) and drawn one at a time: HF's BPE
    trainer given one 50 MB string held ~80 bytes per byte of it, and one in pieces stays near its counts.
    The cuts fall where every tokenizer starts a fresh token anyway, so the counts, and so the vocabulary,
    are those of the whole texts. `texts` may be a generator (a file read piece by piece)."""
    if kind not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")
    pieces = (piece for text in texts for piece in text_chunks(text, FIT_PIECE_CHARS))
    if kind == "char":
        return CharTokenizer.fit(pieces)
    return TOKENIZERS[kind].fit(pieces, vocab_size)


def tokenizer_kind(tokenizer: Tokenizer) -> str:
    return next(k for k, cls in TOKENIZERS.items() if isinstance(tokenizer, cls))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer.json written by any lmlab tokenizer, or an HF byte-level BPE tokenizer.json."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise CheckpointError(f"{path} is {problem}")
    data = read_json_file(path, CheckpointError, "not an lmlab tokenizer file")
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


def _space_cut(text: str, start: int, limit: int) -> int:
    """The first place in [start, limit) just before a single space between two visible characters ("a b"
    -> "a" | " b"), where char, word and byte-level BPE tokens all break (a space joins the word after it);
    `limit` if there is none."""
    pos = text.find(" ", max(start, 1), limit - 1)
    while pos != -1:
        if not text[pos - 1].isspace() and not text[pos + 1].isspace():
            return pos
        pos = text.find(" ", pos + 1, limit - 1)
    return limit


def text_chunks(text: str, size: int = 1 << 20) -> Iterator[str]:
    """Cut `text` into pieces of about `size` characters that encode to the same ids as the whole: each cut
    falls right after a line break followed by a visible character, where every tokenizer here (char, word,
    byte-level BPE) starts a fresh token anyway, or, in a long line, before a space between two words. A
    stretch without either is cut at `2 * size`."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        limit = min(start + 2 * size, len(text))
        while end < limit:
            newline = text.find("\n", end, limit - 1)
            if newline == -1:
                end = _space_cut(text, end, limit)
                break
            elif not text[newline + 1].isspace():
                end = newline + 1
                break
            else:
                end = newline + 1
        yield text[start:end]
        start = end


def stream_chunks(blocks: Iterable[str], size: int = 1 << 20) -> Iterator[str]:
    """text_chunks of the text `blocks` make when joined, from blocks cut anywhere (a file read a block at a
    time), holding at most about three pieces' worth of text: a piece is given out only once the text
    after its start reaches past the farthest place text_chunks looks (2 * size), so each cut falls where
    it falls in the whole text."""
    buffer = ""
    for block in blocks:
        buffer += block
        if len(buffer) <= 3 * size:
            continue
        start = 0
        for piece in text_chunks(buffer, size):
            if start + 2 * size >= len(buffer):  # its cut may depend on text not read yet
                break
            yield piece
            start += len(piece)
        buffer = buffer[start:]
    yield from text_chunks(buffer, size)


def encode_pieces(tokenizer: Tokenizer, texts: list[str],
                  chunk_chars: int = 1 << 16) -> Iterator[tuple[int, list[int]]]:
    """(text number, ids) for each chunk of each text, in order, chunk by chunk (see encode_large). BPE
    encodes up to about eight chunks' worth of characters at once on all cores, across texts, so a corpus
    of short records is not encoded one record at a time. An empty text yields nothing."""
    batch: list[str] = []
    owners: list[int] = []
    size = 0
    for number, text in enumerate(texts):
        for chunk in text_chunks(text, chunk_chars):
            if not isinstance(tokenizer, BPETokenizer):
                yield number, tokenizer(chunk).input_ids
                continue
            batch.append(chunk)
            owners.append(number)
            size += len(chunk)
            if (len(batch) >= 8 and size >= 8 * chunk_chars) or len(batch) == 1024:
                yield from zip(owners, tokenizer.encode_batch(batch), strict=True)
                batch, owners, size = [], [], 0
    if batch:
        yield from zip(owners, tokenizer.encode_batch(batch), strict=True)


def encode_large(tokenizer: Tokenizer, text: str, chunk_chars: int = 1 << 16) -> Iterator[list[int]]:
    """Encode a long text chunk by chunk (a list of Python ints costs ~36 bytes per token, so never build
    one for the whole corpus); BPE encodes several chunks at once on all cores."""
    for _, ids in encode_pieces(tokenizer, [text], chunk_chars):
        yield ids


def encode_joined(tokenizer: Tokenizer, texts: list[str], chunk_chars: int = 1 << 16) -> Iterator[list[int] | None]:
    """The ids of `texts` encoded one by one, chunk by chunk, with None where two texts meet: the caller
    puts the boundary token there and notes its position. A text holding the boundary's own spelling
    ("<|endoftext|>") may encode to the boundary id too, so positions, not ids, say where documents meet."""
    current = 0
    for number, ids in encode_pieces(tokenizer, texts, chunk_chars):
        while current < number:  # one boundary between each two texts, empty ones included
            yield None
            current += 1
        yield ids
    while current < len(texts) - 1:
        yield None
        current += 1


def encode_to_tensor(tokenizer: Tokenizer, text: str, chunk_chars: int = 1 << 16) -> torch.Tensor:
    """The ids of `text` as a 1-D int64 tensor, equal to `torch.tensor(tokenizer(text).input_ids)` but without
    the list of Python ints (8 bytes a token for the list alone, plus an int object for every id above 256):
    chunks are encoded one at a time into compact arrays, then copied once into the result. Peak memory is
    about 10 bytes a token beside the text (8 for a character tokenizer, whose ids fill the result directly).
    Raises what the tokenizer raises (TokenizerError for characters outside a character vocabulary)."""
    if isinstance(tokenizer, CharTokenizer):  # one id per character: the size is known up front
        out = torch.empty(len(text), dtype=torch.long)
        view, pos = out.numpy(), 0
        for ids in encode_large(tokenizer, text, chunk_chars):
            view[pos : pos + len(ids)] = ids
            pos += len(ids)
        return out
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    parts = [np.asarray(ids, dtype=dtype) for ids in encode_large(tokenizer, text, chunk_chars)]
    out = torch.empty(sum(len(p) for p in parts), dtype=torch.long)
    view, pos = out.numpy(), 0
    while parts:
        part = parts.pop(0)
        view[pos : pos + len(part)] = part
        pos += len(part)
    return out


def encode_documents(tokenizer: Tokenizer, texts: list[str],
                     chunk_chars: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, boundaries): `texts` encoded one by one and joined by the tokenizer's boundary token, as one
    int64 tensor, and the positions of those joining tokens. One text gives encode_to_tensor's ids and no
    boundaries."""
    if len(texts) <= 1:
        ids = encode_to_tensor(tokenizer, texts[0], chunk_chars) if texts else torch.zeros(0, dtype=torch.long)
        return ids, torch.zeros(0, dtype=torch.long)
    compact = array("H" if tokenizer.vocab_size <= 1 << 16 else "i")  # 2 or 4 bytes a token while encoding
    boundaries = []
    for ids in encode_joined(tokenizer, texts, chunk_chars):
        if ids is None:
            boundaries.append(len(compact))
            compact.append(tokenizer.boundary_id)
        else:
            compact.extend(ids)
    ids = torch.from_numpy(np.frombuffer(compact, dtype=compact.typecode).astype(np.int64))
    return ids, torch.tensor(boundaries, dtype=torch.long)


__all__ = ["BOUNDARY", "TOKENIZERS", "UNKNOWN", "BPETokenizer", "CharTokenizer", "Encoding", "HFTokenizer",
           "Tokenizer", "WordTokenizer", "encode_documents", "encode_joined", "encode_large",
           "encode_pieces", "encode_to_tensor", "fit_tokenizer", "load_tokenizer", "stream_chunks",
           "text_chunks", "tokenizer_kind"]

