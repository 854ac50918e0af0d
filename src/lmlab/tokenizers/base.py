"""What lmlab's tokenizers share: the boundary token, the `Encoding` a call returns, the id check, the atomic
file write, and `VocabularyTokenizer`, the tail of the tokenizers whose vocabulary is a list of pieces
(an id is a position in it): char and word. Each of those says only how text is cut and how the list is
fitted and stored."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from lmlab.errors import TokenizerError
from lmlab.files import atomic_write_text

BOUNDARY = "<|endoftext|>"


@dataclass(slots=True)
class Encoding:
    """What `tok(text)` returns, as in HF: `.input_ids` is a list of ints."""

    input_ids: list[int]

    def tensor(self) -> torch.Tensor:
        """The ids as a (1, T) long tensor, ready for `model(...)` or `model.generate(...)`."""
        return torch.tensor([self.input_ids], dtype=torch.long)


def checked_ids(ids: Iterable[int] | torch.Tensor, vocab_size: int) -> list[int]:
    """`ids` as a list of ints, or TokenizerError naming the first one outside the vocabulary."""
    ids = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise TokenizerError(f"token id {bad} is outside the vocabulary of {vocab_size}")
    return ids


def save_json(data: dict, path: str | Path) -> None:
    """Write a tokenizer file atomically, so a crash never leaves half a file."""
    atomic_write_text(Path(path), json.dumps(data, ensure_ascii=False, indent=1))


class VocabularyTokenizer:
    """A tokenizer whose `vocab` is a list of pieces, the boundary token at `boundary_id`. A subclass sets
    both and gives `encode`, `to_dict` and `from_dict`."""

    vocab: list[str]
    boundary_id: int = 0

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_boundary: bool = False) -> list[int]:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def __call__(self, text: str, add_boundary: bool = False) -> Encoding:
        return Encoding(self.encode(text, add_boundary))

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        ids = checked_ids(ids, len(self.vocab))
        return "".join(self.vocab[i] for i in ids if not (skip_special_tokens and i == self.boundary_id))

    def save(self, path: str | Path) -> None:
        save_json(self.to_dict(), path)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.vocab == other.vocab

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
