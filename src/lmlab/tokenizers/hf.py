"""Any HF `tokenizers` tokenizer (GPT-2's byte-level BPE, for instance) behind lmlab's tokenizer protocol.

Used for models imported from the transformers format. Its file is lmlab's usual tokenizer.json: the HF
tokenizer's own JSON inside, plus the boundary id lmlab frames examples with.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from lmlab.errors import TokenizerError
from lmlab.tokenizers.base import BOUNDARY, Encoding, checked_ids, save_json


class HFTokenizer:
    def __init__(self, backend, boundary_id: int | None = None, vocab_size: int | None = None):
        self.backend = backend  # a tokenizers.Tokenizer
        if boundary_id is None:
            boundary_id = backend.token_to_id(BOUNDARY)
        if boundary_id is None:  # no <|endoftext|>: the first special token, as HF's eos usually is
            special = [t.content for t in backend.get_added_tokens_decoder().values() if t.special]
            boundary_id = backend.token_to_id(special[0]) if special else 0
        self.boundary_id = boundary_id
        # A model's embedding table may be padded past the tokenizer's last id (50257 -> 50304).
        self.vocab_size = max(vocab_size or 0, backend.get_vocab_size(with_added_tokens=True))

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 0) -> HFTokenizer:
        raise TokenizerError("an 'hf' tokenizer comes with an imported model (lmlab import) and is not trained; "
                             "choose data.tokenizer char, word or bpe")

    def __call__(self, text: str, add_boundary: bool = False) -> Encoding:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return Encoding([self.boundary_id, *ids] if add_boundary else ids)

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        ids = checked_ids(ids, self.vocab_size)
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def to_dict(self) -> dict:
        return {"lmlab_type": "hf", "boundary_id": self.boundary_id, "vocab_size": self.vocab_size,
                "tokenizer": json.loads(self.backend.to_str())}

    @classmethod
    def from_dict(cls, data: dict) -> HFTokenizer:
        from tokenizers import Tokenizer as Backend

        return cls(Backend.from_str(json.dumps(data["tokenizer"])), data["boundary_id"], data["vocab_size"])

    def save(self, path: str | Path) -> None:
        save_json(self.to_dict(), path)

    def __eq__(self, other: object) -> bool:
        """Same ids for every text: the same tokenizer JSON, boundary and vocabulary size (so a resumed
        fine-tune of an imported model sees that the tokenizer it reloads is the run's own)."""
        return (isinstance(other, HFTokenizer) and self.boundary_id == other.boundary_id
                and self.vocab_size == other.vocab_size and self.backend.to_str() == other.backend.to_str())

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size})"
