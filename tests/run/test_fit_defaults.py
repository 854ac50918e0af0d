"""Defaults that fit the data (issue 14): a batch and context left to the defaults shrink with the cost of a
token on a large vocabulary, are written to config.json, and give way to the user's values; char runs keep
the registry's defaults exactly."""

import dataclasses
import json
import logging
import random

import pytest
import torch
from inspect_helpers import StopAt
from safetensors.torch import load_file

import lmlab
from lmlab.ladder import rung_config
from lmlab.models import GPT, GPTConfig
from lmlab.run import fit_defaults
from lmlab.run.config import FITTED_KEYS, resolve_config
from lmlab.run.data import context_length, prepare_data
from lmlab.run.fit_defaults import choose_step, fit_to_data, vocab_cost_ratio

TINY_GPT = {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}
QUICK = {"max_steps": 2, "eval_interval": 2, "log_interval": 1, "threads": 1,
         "eval_max_tokens": 256}


@pytest.fixture
def many_words(tmp_path):
    """Running text over ~1,500 made-up words: a word vocabulary well past a char one's."""
    rng = random.Random(0)
    syllables = ["ka", "mi", "lo", "ra", "en", "to", "sa", "li", "na", "ve", "du", "po"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(3)) for _ in range(3000)})
    text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(400))
    path = tmp_path / "words.txt"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _values(source, tokenizer="word", train=None, data=None):
    return {"data": {"source": str(source), "mode": "stream", "tokenizer": tokenizer, **(data or {})},
            "model": TINY_GPT, "train": {**QUICK, **(train or {})}}


def _fitted(values):
    config = resolve_config(values)
    data = prepare_data(config.data)
    return fit_to_data(config, data, context_length(data))


def test_cost_ratio_is_the_parameter_ratio_against_a_model_built_at_the_reference_vocabulary():
    def gpt(vocab, **switches):
        return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16, **switches))

    def count(model):
        return sum(p.numel() for p in model.parameters())

    for vocab, switches in [(1000, {}), (8192, {}), (4096, {"tie_embeddings": False})]:
        ratio = vocab_cost_ratio(gpt(vocab, **switches), vocab)
        assert ratio == pytest.approx(count(gpt(vocab, **switches)) / count(gpt(256, **switches)))
    assert vocab_cost_ratio(gpt(4096, tie_embeddings=False), 4096) > vocab_cost_ratio(gpt(4096), 4096)


def test_choose_step_cuts_the_batch_to_its_floor_then_the_context():
    assert choose_step(128, 128, 1.0, True) == (128, 128)
    assert choose_step(128, 128, 1.2, True) == (128, 128)  # the nearest power of two, not the one below
    assert choose_step(128, 128, 3.26, True) == (32, 128)  # the GPT at 8,192 tokens
    assert choose_step(128, 128, 5.9, True) == (16, 128)  # rounded down: the context stays whole
    assert choose_step(128, 128, 30.0, True) == (8, 64)  # the batch at its floor, then the context
    assert choose_step(128, 128, 1000.0, True) == (8, 32)  # both floors
    assert choose_step(128, 128, 30.0, False) == (8, 128)  # lines mode, or a context the user set
    assert choose_step(4, 16, 30.0, True) == (4, 16)  # never above the defaults
    for ratio in (1.5, 2.9, 3.1, 5.5, 6.1, 11.0, 15.9):  # above the batch's floor the context is never cut
        assert choose_step(128, 128, ratio, True)[1] == 128


def test_large_vocabulary_gets_a_smaller_batch_written_to_config_json(tmp_path, many_words, caplog):
    with caplog.at_level(logging.INFO, logger="lmlab.run.fit_defaults"):
        run = lmlab.train(_values(many_words), out=tmp_path / "run", inspect=False)
    vocab = run.tokenizer.vocab_size
    assert vocab > fit_defaults.CHAR_VOCAB
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["batch_size"] < 128 and saved["train"]["batch_size"] == run.config.train.batch_size
    assert saved["data"]["block_size"] == run.config.data.block_size
    assert f"for a vocabulary of {vocab:,}" in caplog.text and "train.batch_size=128 fixes it" in caplog.text
    windows = 2 * saved["train"]["batch_size"]  # two steps; a window of T tokens predicts T - 1
    assert run.trainer.tokens_seen == windows * (saved["data"]["block_size"] - 1)


def test_resume_keeps_the_chosen_batch_and_reproduces_the_run(tmp_path, many_words):
    values = _values(many_words, train={"max_steps": 4, "eval_interval": 1})
    straight = lmlab.train(values, out=tmp_path / "a", inspect=False)
    lmlab.train(values, out=tmp_path / "b", inspect=False, callbacks=[StopAt(2)])
    resumed = lmlab.train({}, out=tmp_path / "b", resume=True, inspect=False)
    assert resumed.step == 4 and resumed.config.train.batch_size == straight.config.train.batch_size < 128
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    weights = [load_file(tmp_path / run / "model.safetensors") for run in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_explicit_batch_and_context_win(many_words):
    config, *_ = _fitted(_values(many_words, train={"batch_size": 128}))
    assert config.train.batch_size == 128 and config.data.block_size == 128  # the step the user chose
    config, *_ = _fitted(_values(many_words, data={"block_size": 128}))
    assert config.data.block_size == 128 and config.train.batch_size < 128


def test_a_steep_ratio_cuts_the_context_and_recuts_the_data(many_words, monkeypatch):
    # A ratio of 30 needs a vocabulary past 7,680 under a near-empty body; choose_step's arithmetic is tested
    # above, this is the plumbing: the data cut into the chosen windows, the model built for them.
    monkeypatch.setattr(fit_defaults, "vocab_cost_ratio", lambda model, vocab: 30.0)
    config, data, context = _fitted(_values(many_words))
    assert (config.train.batch_size, config.data.block_size) == (8, 64)
    assert context == 64
    assert all(split.block_size == 64 for split in data.splits.values())
    ids, _ = data.splits["train"].sample_batch(config.train.batch_size, torch.Generator().manual_seed(0))
    assert ids.shape == (8, 64)


def test_char_vocabulary_cuda_and_a_hand_built_config_keep_the_defaults(many_words, tiny_names, monkeypatch):
    char = resolve_config({"data": {"source": str(tiny_names)}, "model": TINY_GPT, "train": QUICK})
    data = prepare_data(char.data)
    assert fit_to_data(char, data, context_length(data))[0] == char
    words = resolve_config(_values(many_words))
    data = prepare_data(words.data)
    hand_built = dataclasses.replace(words, defaulted=frozenset())
    assert fit_to_data(hand_built, data, context_length(data))[0] == hand_built
    monkeypatch.setattr(fit_defaults, "resolve_device", lambda name: torch.device("cuda"))
    assert fit_to_data(words, data, context_length(data))[0] == words


def test_the_ladder_resolves_the_same_defaulted_keys(many_words):
    plain = resolve_config(rung_config(str(many_words), "gpt", budget="1e9flops"))
    assert plain.defaulted == set(FITTED_KEYS)
    pinned = resolve_config(rung_config(str(many_words), "gpt", budget="1e9flops",
                                        overrides={"train": {"batch_size": 64}, "data": {"block_size": 64}}))
    assert pinned.defaulted == set(FITTED_KEYS) - {"train.batch_size", "data.block_size"}
