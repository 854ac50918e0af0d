"""Character tokenizer: one id per distinct character of the training text, plus the boundary token at id 0."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
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


class CharTokenizer:
    def __init__(self, chars: Sequence[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        self.vocab = [BOUNDARY, *chars]
        self.boundary_id = 0
        self.char_to_id = {c: i for i, c in enumerate(self.vocab) if i != self.boundary_id}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> CharTokenizer:
        """Every distinct character of `texts`, except line breaks in lines mode (the caller strips them)."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(sorted(chars))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_boundary: bool = False) -> list[int]:
        try:
            ids = [self.char_to_id[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in self.char_to_id})
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise TokenizerError(
                f"{len(unknown)} character(s) not in the vocabulary: {shown}"
                f"{' ...' if len(unknown) > 10 else ''}"
            ) from None
        return [self.boundary_id, *ids] if add_boundary else ids

    def __call__(self, text: str, add_boundary: bool = False) -> Encoding:
        return Encoding(self.encode(text, add_boundary))

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        ids = checked_ids(ids, len(self.vocab))
        return "".join(self.vocab[i] for i in ids if not (skip_special_tokens and i == self.boundary_id))

    def to_dict(self) -> dict:
        return {"lmlab_type": "char", "boundary": BOUNDARY, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        vocab = data["vocab"]
        if not vocab or vocab[0] != data.get("boundary", BOUNDARY):
            raise ValueError("the first vocabulary entry must be the boundary token")
        return cls(vocab[1:])

    def save(self, path: str | Path) -> None:
        save_json(self.to_dict(), path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.vocab == other.vocab

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
