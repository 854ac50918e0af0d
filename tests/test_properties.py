"""Property-based tests (hypothesis): the char tokenizer round-trips every string over its vocabulary,
generation never leaves the vocabulary, and the loss is finite for random inputs and weights at sane scales."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmlab.errors import TokenizerError
from lmlab.models.bigram import Bigram, BigramConfig
from lmlab.models.mlp import MLP, MLPConfig
from lmlab.models.ngram import NGram, NGramConfig
from lmlab.tokenizers import CharTokenizer

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any characters but surrogates (which no text file can hold); line breaks and emoji included.
chars = st.characters(blacklist_categories=("Cs",))


@st.composite
def vocab_and_text(draw):
    vocab = sorted(set(draw(st.lists(chars, min_size=1, max_size=40))))
    text = draw(st.text(alphabet=st.sampled_from(vocab), max_size=200))
    return vocab, text


@FAST
@given(vocab_and_text())
def test_char_decode_encode_round_trips(case):
    vocab, text = case
    tok = CharTokenizer.fit(vocab)
    ids = tok(text).input_ids
    assert all(1 <= i < tok.vocab_size for i in ids)  # id 0 is the boundary, never a character
    assert tok.decode(ids) == text
    framed = tok(text, add_boundary=True).input_ids
    assert framed[0] == tok.boundary_id and tok.decode(framed) == text


@FAST
@given(vocab_and_text(), chars)
def test_char_outside_the_vocabulary_is_a_clear_error(case, extra):
    vocab, text = case
    tok = CharTokenizer.fit(vocab)
    if extra in vocab:
        return
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        tok(text + extra)


@FAST
@given(vocab_and_text())
def test_tokenizer_survives_save_and_load(tmp_path_factory, case):
    from lmlab.tokenizers import load_tokenizer

    vocab, text = case
    tok = CharTokenizer.fit(vocab)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    loaded = load_tokenizer(path)
    assert loaded == tok and loaded(text).input_ids == tok(text).input_ids


def _random_model(kind: str, vocab_size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "bigram":
        model = Bigram(BigramConfig(vocab_size=vocab_size))
        torch.nn.init.normal_(model.weight, std=3.0)
    elif kind == "mlp":
        model = MLP(MLPConfig(vocab_size=vocab_size, context=3, n_embd=4, n_hidden=8))
        for p in model.parameters():
            torch.nn.init.normal_(p, std=1.0)
    else:
        model = NGram(NGramConfig(vocab_size=vocab_size, n=2, alpha=0.0))
        # Sparse random counts: many rows have unseen continuations (-inf logits), some rows are all zero.
        counts = torch.randint(0, 5, model.counts.shape).float() * (torch.rand(model.counts.shape) < 0.3)
        model.counts.copy_(counts)
    return model


sampling = st.fixed_dictionaries({
    "temperature": st.sampled_from([0.0, 0.3, 1.0, 2.5]),
    "top_k": st.one_of(st.none(), st.integers(1, 12)),
    "top_p": st.one_of(st.none(), st.floats(0.05, 1.0)),
})


@FAST
@given(kind=st.sampled_from(["bigram", "mlp", "ngram"]), vocab_size=st.integers(2, 9),
       seed=st.integers(0, 2**16), prompt_len=st.integers(1, 5), options=sampling,
       eos=st.booleans())
def test_generation_stays_inside_the_vocabulary(kind, vocab_size, seed, prompt_len, options, eos):
    model = _random_model(kind, vocab_size, seed)
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(vocab_size, (3, prompt_len), generator=generator)
    out = model.generate(prompt, 12, do_sample=True, generator=generator, eos_token_id=0 if eos else None,
                         **options)
    assert out.shape[0] == 3 and prompt_len < out.shape[1] <= prompt_len + 12
    assert torch.equal(out[:, :prompt_len], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < vocab_size


@FAST
@given(kind=st.sampled_from(["bigram", "mlp"]), vocab_size=st.integers(2, 30), seed=st.integers(0, 2**16),
       batch=st.integers(1, 4), length=st.integers(2, 12), scale=st.floats(0.01, 10.0))
def test_loss_is_finite_for_random_inputs_and_weights(kind, vocab_size, seed, batch, length, scale):
    torch.manual_seed(seed)
    model = MLP(MLPConfig(vocab_size=vocab_size, context=3, n_embd=6, n_hidden=16)) if kind == "mlp" else \
        Bigram(BigramConfig(vocab_size=vocab_size))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=scale)
    input_ids = torch.randint(vocab_size, (batch, length))
    labels = input_ids.clone()
    labels[torch.rand(labels.shape) < 0.2] = -100  # padding positions, ignored by the loss
    labels[:, 1] = input_ids[:, 1]  # at least one position predicts something
    out = model(input_ids, labels=labels)
    assert math.isfinite(out.loss.item()) and out.loss.item() >= 0
    # The reference: F.cross_entropy on the shifted logits, computed here independently.
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, vocab_size), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
