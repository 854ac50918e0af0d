"""Word and byte-level BPE tokenizers: round trips, unknown words, HF loading of the saved file."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.config import DataConfig
from lmlab.errors import CheckpointError, ConfigError, TokenizerError
from lmlab.tokenizers import (
    BPETokenizer,
    WordTokenizer,
    encode_large,
    fit_tokenizer,
    load_tokenizer,
    text_chunks,
)
from lmlab.tokenizers.word import split_words

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "def f(x):\n    return x  +  1  # café, naïve\n") * 3


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_word_split_covers_every_character(text):
    assert "".join(split_words(text)) == text


def test_word_round_trip_and_ids():
    tok = WordTokenizer.fit([TEXT])
    assert tok.decode(tok(TEXT).input_ids) == TEXT
    assert tok.boundary_id == 0 and tok.vocab[1] == "<unk>"
    ids = tok("speak, speak", add_boundary=True).input_ids
    assert ids[0] == 0 and ids[1] == ids[4] and tok.vocab[ids[2]] == ","
    assert tok.decode([0, *ids], skip_special_tokens=False).startswith("<|endoftext|><|endoftext|>speak")


def test_word_unknown_and_cap():
    tok = WordTokenizer.fit(["the the the cat cat dog"], vocab_size=5)  # ' ' x5, 'the' x3, 'cat' x2
    assert tok.vocab == ["<|endoftext|>", "<unk>", " ", "the", "cat"]
    ids = tok("the dog and the cat").input_ids
    assert ids.count(tok.unk_id) == 2
    assert tok.decode(ids) == "the <unk> <unk> the cat"  # what decode loses: the unknown words' spelling
    with pytest.raises(TokenizerError):
        tok.decode([99])
    with pytest.raises(TokenizerError):
        WordTokenizer.fit(["x"], vocab_size=2)


def test_word_save_load(tmp_path):
    tok = WordTokenizer.fit([TEXT], vocab_size=20)
    tok.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again == tok and again.vocab_size == 20


def test_bpe_round_trip_vocab_size_and_hf_loading(tmp_path):
    from tokenizers import Tokenizer

    tok = BPETokenizer.fit([TEXT], vocab_size=300)
    assert tok.vocab_size == 300 and tok.boundary_id == 0
    unseen = "Ünïcödé ✓ never seen\ttabs 🙂"  # byte level: nothing is unknown
    for text in (TEXT, unseen):
        assert tok.decode(tok(text).input_ids) == text
    assert len(tok(TEXT).input_ids) < 0.6 * len(TEXT.encode())  # 43 merges already shorten it
    tok.save(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))  # HF loads the file as is
    assert hf.encode(TEXT).ids == tok(TEXT).input_ids
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(again, BPETokenizer) and again(unseen).input_ids == tok(unseen).input_ids
    assert again.decode([0, *tok("hi").input_ids], skip_special_tokens=False) == "<|endoftext|>hi"


def test_bpe_matches_transformers_fast_tokenizer(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = BPETokenizer.fit([TEXT], vocab_size=280)
    tok.save(tmp_path / "tokenizer.json")
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert fast(TEXT).input_ids == tok(TEXT).input_ids


def test_bpe_vocab_too_small_and_bad_files(tmp_path):
    with pytest.raises(TokenizerError):
        BPETokenizer.fit([TEXT], vocab_size=100)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"type": "WordPiece"}, "added_tokens": []}))
    with pytest.raises(CheckpointError):
        load_tokenizer(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(CheckpointError):
        load_tokenizer(bad)


def test_chunked_encoding_matches_whole_text():
    text = TEXT * 20
    assert "".join(text_chunks(text, 97)) == text
    for kind in ("char", "word", "bpe"):
        tok = fit_tokenizer(kind, [text], 0 if kind == "char" else 300)
        chunked = [i for ids in encode_large(tok, text, chunk_chars=97) for i in ids]
        assert chunked == tok(text).input_ids, kind


def test_config_vocab_size_checks():
    assert DataConfig(tokenizer="bpe", vocab_size=512).vocab_size == 512
    with pytest.raises(ConfigError, match="vocab_size"):
        DataConfig(tokenizer="char", vocab_size=100)
    with pytest.raises(ConfigError):
        fit_tokenizer("sentencepiece", [TEXT])


def test_prepare_data_with_word_and_bpe(tmp_path):
    from lmlab.run.data import prepare_data

    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 10, encoding="utf-8")
    for kind, size in (("word", 30), ("bpe", 300)):
        data = prepare_data(DataConfig(source=str(path), mode="stream", tokenizer=kind, vocab_size=size,
                                       block_size=16))
        assert data.tokenizer.vocab_size == size
        assert data.splits["val"].num_predictions > 0
        assert int(data.splits["train"].ids.max()) < size
