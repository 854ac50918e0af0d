"""Character tokenizer: one id per distinct character of the training text, plus the boundary token at id 0."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lmlab.errors import TokenizerError
from lmlab.tokenizers.base import BOUNDARY, VocabularyTokenizer


class CharTokenizer(VocabularyTokenizer):
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

    def to_dict(self) -> dict:
        return {"lmlab_type": "char", "boundary": BOUNDARY, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        vocab = data["vocab"]
        if not vocab or vocab[0] != data.get("boundary", BOUNDARY):
            raise ValueError("the first vocabulary entry must be the boundary token")
        return cls(vocab[1:])
