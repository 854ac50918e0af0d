import pytest

from lmlab.errors import TokenizerError
from lmlab.tokenizers import CharTokenizer, load_tokenizer


def test_round_trip_and_boundary(tmp_path):
    tok = CharTokenizer.fit(["emma", "olivia"])
    assert tok.vocab_size == 1 + len(set("emmaolivia"))
    ids = tok("emma").input_ids
    assert tok.decode(ids) == "emma"
    assert tok("emma", add_boundary=True).input_ids == [tok.boundary_id, *ids]
    assert tok.decode([tok.boundary_id, *ids]) == "emma"
    assert tok.decode([tok.boundary_id], skip_special_tokens=False) == "<|endoftext|>"
    assert tok("emma").tensor().shape == (1, 4)
    tok.save(tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path / "tokenizer.json") == tok


def test_unknown_characters_are_named():
    tok = CharTokenizer.fit(["abc"])
    with pytest.raises(TokenizerError, match=r"'x', 'z'"):
        tok("axbz")


def test_out_of_range_id():
    with pytest.raises(TokenizerError):
        CharTokenizer.fit(["ab"]).decode([99])
