"""Word tokenizer: words, single punctuation marks and whitespace as tokens, the most frequent ones of the
training text up to a vocabulary cap; everything else maps to the unknown token.

Splitting: a run of letters/digits/underscores is a word, every other visible character is a token of its
own, a run of spaces or tabs is one token and each line break is one token. Whitespace is kept as tokens,
so `decode(encode(text)) == text` whenever every piece is in the vocabulary.

What decode loses: each piece outside the vocabulary (a rare word, an unusual run of spaces) comes back as
the literal text `<unk>`, so its spelling and length are gone; everything around it is restored exactly.
Ids: 0 is the boundary token, 1 the unknown token, then pieces by falling frequency (ties: first seen).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from lmlab.errors import TokenizerError
from lmlab.tokenizers.base import BOUNDARY, VocabularyTokenizer

UNKNOWN = "<unk>"
DEFAULT_VOCAB_SIZE = 8192
PIECES = re.compile(r"\w+|[^\w\s]|[^\S\n]+|\n")


def split_words(text: str) -> list[str]:
    """The pieces of `text`; joining them gives `text` back (the pattern covers every character)."""
    return PIECES.findall(text)


class WordTokenizer(VocabularyTokenizer):
    def __init__(self, pieces: Iterable[str]):
        self.vocab = [BOUNDARY, UNKNOWN, *pieces]
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocabulary pieces must be distinct and must not repeat the special tokens")
        self.boundary_id, self.unk_id = 0, 1
        self.piece_to_id = {p: i for i, p in enumerate(self.vocab) if i > 1}

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 0) -> WordTokenizer:
        """The `vocab_size - 2` most frequent pieces of `texts` (0: up to DEFAULT_VOCAB_SIZE in all)."""
        vocab_size = vocab_size or DEFAULT_VOCAB_SIZE
        if vocab_size < 3:
            raise TokenizerError(f"a word vocabulary needs at least 3 entries, got {vocab_size}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(split_words(text))
        for special in (BOUNDARY, UNKNOWN):
            counts.pop(special, None)
        # most_common keeps first-seen order among equal counts (Counter preserves insertion order).
        return cls(piece for piece, _ in counts.most_common(vocab_size - 2))

    def encode(self, text: str, add_boundary: bool = False) -> list[int]:
        get, unk = self.piece_to_id.get, self.unk_id
        ids = [get(piece, unk) for piece in split_words(text)]
        return [self.boundary_id, *ids] if add_boundary else ids

    # decode (VocabularyTokenizer) joins the pieces; the unknown token comes back as `<unk>`: it stands for text.

    def to_dict(self) -> dict:
        return {"lmlab_type": "word", "boundary": BOUNDARY, "unknown": UNKNOWN, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict) -> WordTokenizer:
        vocab = data["vocab"]
        if vocab[:2] != [data.get("boundary", BOUNDARY), data.get("unknown", UNKNOWN)]:
            raise ValueError("the vocabulary must start with the boundary and unknown tokens")
        return cls(vocab[2:])
