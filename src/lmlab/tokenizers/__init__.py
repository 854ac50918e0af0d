"""Tokenizers: one protocol for all (`tok(text).input_ids`, `decode`, `vocab_size`, `save`/`load`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from lmlab.errors import CheckpointError
from lmlab.tokenizers.char import BOUNDARY, CharTokenizer, Encoding
from lmlab.tokenizers.hf import HFTokenizer


class Tokenizer(Protocol):
    vocab_size: int
    boundary_id: int  # marks the start and end of an example (makemore's '.', GPT-2's <|endoftext|>)

    def __call__(self, text: str, add_boundary: bool = False) -> Encoding: ...

    def decode(self, ids, skip_special_tokens: bool = True) -> str: ...

    def save(self, path: str | Path) -> None: ...


TOKENIZERS: dict[str, type] = {"char": CharTokenizer, "hf": HFTokenizer}


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer.json written by any lmlab tokenizer."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        kind = data["lmlab_type"]
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path} is not an lmlab tokenizer file") from None
    if kind not in TOKENIZERS:
        raise CheckpointError(f"{path}: unknown tokenizer type {kind!r}")
    return TOKENIZERS[kind].from_dict(data)


__all__ = ["BOUNDARY", "TOKENIZERS", "CharTokenizer", "Encoding", "HFTokenizer", "Tokenizer", "load_tokenizer"]
