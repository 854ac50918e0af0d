"""The first two rungs against the reference figure and against each other."""

import math

import numpy as np
import pytest

from lmlab.data import load_corpus
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.scoring import mean_nll
from lmlab.training.trainer import Trainer


def _fit(source, model, data=None, train=None, model_values=None):
    config = resolve_config({"data": {"source": str(source), **(data or {})},
                             "model": {"name": model, **(model_values or {})}, "train": train or {}})
    prepared = prepare_data(config.data)
    net = build_model(config, prepared.tokenizer, prepared.splits["train"].block_size)
    Trainer(net, prepared.splits["train"], None, config.train).fit()
    return net, prepared


def test_counted_bigram_matches_numpy_counts():
    # The embedded names; the notes' figure on makemore's names.txt is checked by benchmarks/bench_notes_bigram.py.
    words = load_corpus("names").documents[0].strip().split("\n")
    chars = sorted(set("".join(words)))
    index = {c: i + 1 for i, c in enumerate(chars)}
    counts = np.zeros((len(chars) + 1, len(chars) + 1))
    for word in words:
        seq = [0, *(index[c] for c in word), 0]
        np.add.at(counts, (seq[:-1], seq[1:]), 1)
    probs = (counts + 1) / (counts + 1).sum(1, keepdims=True)
    expected = -np.mean([math.log(probs[a, b]) for w in words
                         for a, b in zip([0, *(index[c] for c in w)], [*(index[c] for c in w), 0], strict=True)])
    model, data = _fit("names", "ngram", {"val_fraction": 0, "test_fraction": 0}, model_values={"alpha": 1})
    assert mean_nll(model, data.splits["train"])[0] == pytest.approx(expected, abs=1e-6)


def test_trigram_beats_bigram_on_train(tiny_names):
    bigram, data = _fit(tiny_names, "ngram", {"val_fraction": 0, "test_fraction": 0}, model_values={"alpha": 0})
    trigram, _ = _fit(tiny_names, "ngram", {"val_fraction": 0, "test_fraction": 0},
                      model_values={"alpha": 0, "n": 3})
    assert mean_nll(trigram, data.splits["train"])[0] < mean_nll(bigram, data.splits["train"])[0]


def test_neural_bigram_converges_to_counted():
    counted, data = _fit("names", "ngram", model_values={"alpha": 0})
    neural, _ = _fit("names", "bigram")
    target = mean_nll(counted, data.splits["train"])[0]
    assert 0 <= mean_nll(neural, data.splits["train"])[0] - target < 0.002  # the counts are the optimum


def test_bincount_and_scatter_add_count_alike():
    import torch

    from lmlab.data.datasets import StreamDataset
    from lmlab.models.ngram import NGram, NGramConfig

    ids = torch.randint(0, 6, (2000,), generator=torch.Generator().manual_seed(0))
    data = StreamDataset(ids, 9)
    by_rows, whole = NGram(NGramConfig(vocab_size=6, n=3)), NGram(NGramConfig(vocab_size=6, n=3))
    for x, y in data.iter_batches(1):  # 8 pairs a batch, a 216-entry table: scatter-add
        by_rows.fit_counts(x, y)
    for x, y in data.iter_batches(10_000):  # one batch: bincount
        whole.fit_counts(x, y)
    assert torch.equal(by_rows.counts, whole.counts) and whole.counts.sum() == data.num_predictions
