"""Every lmlab tokenizer as an HF `tokenizers` Tokenizer (what transformers' fast tokenizers wrap), and back.

To HF: char and word become a WordLevel model whose pre-tokenizer cuts text into the same pieces lmlab
does (one character; or lmlab's word pattern), so the ids are equal for every text; byte-level BPE is
already an HF tokenizer. A lines-mode run saw every example start with the boundary token, so its
exported tokenizer adds it in front (a post-processor, as BOS): `tok("em")` gives what training saw.

Back: a tokenizer.json written this way becomes the lmlab tokenizer it came from (so a round trip keeps
the run's tokenizer kind and equality), a BPE one a BPETokenizer, anything else an HFTokenizer.
"""

from __future__ import annotations

import json

from lmlab.tokenizers.base import BOUNDARY
from lmlab.tokenizers.bpe import BPETokenizer
from lmlab.tokenizers.char import CharTokenizer
from lmlab.tokenizers.hf import HFTokenizer
from lmlab.tokenizers.word import PIECES, UNKNOWN, WordTokenizer


def hf_backend(tokenizer, add_boundary: bool = False):
    """A new `tokenizers.Tokenizer` giving `tokenizer`'s ids; with `add_boundary`, encoding with special
    tokens (transformers' default) puts the boundary token first."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import processors

    if isinstance(tokenizer, CharTokenizer):
        # "[\s\S]" is any single character, newlines included (stream-mode vocabularies hold "\n").
        backend = _word_level(tokenizer.vocab, r"[\s\S]", unk=None)
    elif isinstance(tokenizer, WordTokenizer):
        backend = _word_level(tokenizer.vocab, PIECES.pattern, unk=UNKNOWN)
    elif isinstance(tokenizer, BPETokenizer):
        backend = Backend.from_str(tokenizer.hf.to_str())
    elif isinstance(tokenizer, HFTokenizer):
        backend = Backend.from_str(tokenizer.backend.to_str())
    else:
        raise TypeError(f"{type(tokenizer).__name__} has no HF tokenizers equivalent")
    boundary = backend.id_to_token(tokenizer.boundary_id)
    if add_boundary:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{boundary} $A", pair=f"{boundary} $A {boundary} $B:1",
            special_tokens=[(boundary, tokenizer.boundary_id)])
    else:
        backend.post_processor = None
    return backend


def _word_level(vocab: list[str], pattern: str, unk: str | None):
    """Every piece `pattern` matches is looked up whole; text between matches would be a piece too, but
    both patterns used here match every character. Without `unk`, an unseen piece is an encoding error
    (as in lmlab) rather than silently some other token."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    model = models.WordLevel({token: i for i, token in enumerate(vocab)}, unk_token=unk or BOUNDARY)
    backend = Backend(model)
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join the pieces back with nothing between them
    # The unknown token stays an ordinary vocabulary entry: it stands for real text, and decode shows it
    # as "<unk>" (as lmlab's does) instead of dropping it with the special tokens.
    backend.add_special_tokens([AddedToken(BOUNDARY, special=True, normalized=False)])
    if unk is None:  # WordLevel needs an unk name; one absent from the vocabulary makes unseen text an error
        data = json.loads(backend.to_str())
        data["model"]["unk_token"] = "<|unseen|>"
        backend = Backend.from_str(json.dumps(data))
    return backend


def from_hf_backend(backend, vocab_size: int | None = None):
    """The lmlab tokenizer a tokenizer.json stands for: Char/Word when `hf_backend` wrote it, BPETokenizer
    for a byte-level BPE covering the model's vocabulary exactly, else an HFTokenizer."""
    from tokenizers import Tokenizer as Backend

    data = json.loads(backend.to_str())
    data["post_processor"] = None  # lmlab adds the boundary itself (add_boundary=True)
    backend = Backend.from_str(json.dumps(data))
    vocab = backend.get_vocab()
    ordered = sorted(vocab, key=vocab.get)
    contiguous = [vocab[t] for t in ordered] == list(range(len(ordered)))
    kind = data["model"]["type"]
    if kind == "WordLevel" and contiguous and ordered[:1] == [BOUNDARY]:
        if all(len(t) == 1 for t in ordered[1:]):
            return CharTokenizer(ordered[1:])
        if ordered[1:2] == [UNKNOWN]:
            return WordTokenizer(ordered[2:])
    if kind == "BPE" and (vocab_size is None or vocab_size == backend.get_vocab_size()):
        specials = [t.content for t in backend.get_added_tokens_decoder().values() if t.special]
        if specials:
            return BPETokenizer(backend, BOUNDARY if BOUNDARY in specials else specials[0])
    return HFTokenizer(backend, vocab_size=vocab_size)
