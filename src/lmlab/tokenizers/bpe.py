"""Byte-level BPE (GPT-2 style), trained on the training text with HF `tokenizers`.

Every string is encodable (bytes first map to 256 base symbols), so there is no unknown token, and decode
gives the text back exactly. The saved file is HF's own `tokenizer.json`, loadable as is with
`tokenizers.Tokenizer.from_file` (or `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`). HF's
format rejects unknown top-level keys, so lmlab stores nothing extra in it: `load_tokenizer` recognises the
format itself (a BPE model) and takes the boundary token from its special tokens, which also lets it load
GPT-2's own tokenizer.json. Id 0 is the boundary token `<|endoftext|>` in files lmlab trains.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from lmlab.errors import TokenizerError
from lmlab.files import atomic_write
from lmlab.tokenizers.base import BOUNDARY, Encoding, checked_ids

DEFAULT_VOCAB_SIZE = 1024
MIN_VOCAB_SIZE = 257  # 256 byte symbols and the boundary token


class BPETokenizer:
    def __init__(self, hf_tokenizer, boundary: str = BOUNDARY):
        self.hf = hf_tokenizer
        boundary_id = hf_tokenizer.token_to_id(boundary)
        if boundary_id is None:
            raise ValueError(f"the tokenizer has no boundary token {boundary!r}")
        self.boundary_id = boundary_id
        self.boundary = boundary

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 0) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        vocab_size = vocab_size or DEFAULT_VOCAB_SIZE
        if vocab_size < MIN_VOCAB_SIZE:
            raise TokenizerError(f"a byte-level BPE vocabulary needs at least {MIN_VOCAB_SIZE} entries "
                                 f"(256 bytes + boundary), got {vocab_size}")
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOUNDARY], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str, add_boundary: bool = False) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False).ids
        return [self.boundary_id, *ids] if add_boundary else ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once, on all cores (HF's Rust threads)."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def __call__(self, text: str, add_boundary: bool = False) -> Encoding:
        return Encoding(self.encode(text, add_boundary))

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        ids = checked_ids(ids, self.vocab_size)
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def save(self, path: str | Path) -> None:
        atomic_write(Path(path), lambda tmp: self.hf.save(str(tmp)))

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(str(path))
        specials = [t["content"] for t in json.loads(Path(path).read_text(encoding="utf-8"))["added_tokens"]
                    if t.get("special")]
        if not specials:
            raise ValueError("the tokenizer has no special token to use as the boundary")
        return cls(hf, BOUNDARY if BOUNDARY in specials else specials[0])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and self.hf.to_str() == other.hf.to_str()

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
