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


def test_text_cut_anywhere_gives_the_pieces_of_the_whole():
    import random

    from lmlab.tokenizers import stream_chunks, text_chunks

    rng = random.Random(0)
    words = ["a", "bb", "ccc", "\n", "\n\n", " ", "  ", "x.y", "\t"]
    for _ in range(200):
        text = "".join(rng.choice(words) for _ in range(rng.randint(0, 3000)))
        size = rng.randint(5, 60)
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 50))))
        blocks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert list(stream_chunks(blocks, size)) == list(text_chunks(text, size))


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_fitting_in_pieces_gives_the_vocabulary_of_the_whole_text(monkeypatch, kind):
    import lmlab.tokenizers as tokenizers

    text = "".join(f"line {i}: the {'quick' if i % 3 else 'slow'} brown fox {i * 7 % 13} jumps.\n" for i in range(400))
    whole = tokenizers.TOKENIZERS[kind].fit([text], 300)  # the trainer handed one string, as before
    monkeypatch.setattr(tokenizers, "FIT_PIECE_CHARS", 200)  # a hundred pieces
    pieces = tokenizers.fit_tokenizer(kind, [text], 300)
    assert pieces == whole and pieces.vocab_size == 300
