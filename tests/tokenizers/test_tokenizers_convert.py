"""Every lmlab tokenizer as an HF tokenizer (checked with transformers' AutoTokenizer) and back, and equality
of the HF-backed tokenizers (what a resumed fine-tune of an imported model compares)."""

from __future__ import annotations

import pytest

from lmlab.errors import TokenizerError
from lmlab.export.hf_convert import hf_tokenizer_files, tokenizer_from_hf
from lmlab.tokenizers import BPETokenizer, CharTokenizer, HFTokenizer, WordTokenizer, fit_tokenizer, load_tokenizer
from lmlab.tokenizers.convert import from_hf_backend, hf_backend

transformers = pytest.importorskip("transformers")

TRAIN = ("Hello world, héllo wörld!\nÇa va? 你好 世界 😀 ok\n\tTabs  and   spaces.\nnaïve café — “quotes”\n"
         "def f(x):\n    return x + 1\n") * 3
# Spaces, runs of spaces, tabs, newlines (and blank lines), accents, CJK, emoji, punctuation.
TEXT = "Hello  wörld, ça va?\n你好😀 world\t!\n\n  return café — x"


def known(tokenizer, text: str) -> str:
    """The text with characters a char tokenizer lacks left out (lmlab refuses them)."""
    if isinstance(tokenizer, CharTokenizer):
        return "".join(c for c in text if c in tokenizer.char_to_id)
    return text


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_exported_tokenizer_gives_lmlab_ids_in_autotokenizer(tmp_path, kind):
    tok = fit_tokenizer(kind, [TRAIN], 0 if kind != "bpe" else 320)
    text = known(tok, TEXT)
    assert len(text) > 40 and "😀" in text and "\n\n" in text
    for lines_mode in (False, True):
        folder = tmp_path / f"lines{lines_mode}"
        folder.mkdir()
        for name, content in hf_tokenizer_files(tok, 64, lines_mode).items():
            (folder / name).write_text(content, encoding="utf-8")
        hf = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        # Lines-mode runs were trained with the boundary first: the HF tokenizer adds it as BOS.
        assert hf(text).input_ids == tok(text, add_boundary=lines_mode).input_ids
        assert hf(text, add_special_tokens=False).input_ids == tok(text).input_ids
        assert hf.decode(hf(text).input_ids, skip_special_tokens=True) == tok.decode(tok(text).input_ids)
        assert hf.eos_token == hf.bos_token == hf.pad_token == "<|endoftext|>" and hf.padding_side == "left"
        # Back to lmlab: the same kind of tokenizer, equal to the original.
        back = tokenizer_from_hf(folder / "tokenizer.json", tok.vocab_size)
        assert type(back) is type(tok) and back == tok


def test_word_export_keeps_the_unknown_token_visible(tmp_path):
    tok = WordTokenizer.fit([TRAIN])
    for name, content in hf_tokenizer_files(tok, 64).items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    ids = hf("Hello zebra").input_ids
    assert ids == tok("Hello zebra").input_ids and tok.unk_id in ids
    assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids) == "Hello <unk>"


def test_char_export_refuses_unseen_characters_as_lmlab_does():
    tok = CharTokenizer.fit(["abc"])
    with pytest.raises(TokenizerError):
        tok("abz")
    backend = hf_backend(tok)
    assert backend.encode("cab").ids == tok("cab").input_ids
    with pytest.raises(Exception, match="UNK"):  # never silently the boundary token (which ends a sample)
        backend.encode("abz")


def test_hf_tokenizer_equality_and_round_trip(tmp_path):
    bpe = BPETokenizer.fit([TRAIN], 300)
    a = HFTokenizer(hf_backend(bpe), vocab_size=320)  # an embedding table padded past the tokenizer
    b = HFTokenizer(hf_backend(bpe), vocab_size=320)
    assert a == b and a != HFTokenizer(hf_backend(bpe), vocab_size=330)
    assert a != HFTokenizer(hf_backend(BPETokenizer.fit([TRAIN], 290)), vocab_size=320)
    a.save(tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path / "tokenizer.json") == a  # what `lmlab train --resume` compares
    with pytest.raises(TokenizerError, match="not trained"):
        fit_tokenizer("hf", [TRAIN])


def test_padded_vocabulary_imports_as_hf_tokenizer_and_exact_one_as_bpe():
    bpe = BPETokenizer.fit([TRAIN], 300)
    assert isinstance(from_hf_backend(hf_backend(bpe), bpe.vocab_size), BPETokenizer)
    padded = from_hf_backend(hf_backend(bpe), bpe.vocab_size + 8)
    assert isinstance(padded, HFTokenizer) and padded.vocab_size == bpe.vocab_size + 8
    assert padded(TEXT).input_ids == bpe(TEXT).input_ids
