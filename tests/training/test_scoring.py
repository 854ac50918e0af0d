"""Periodic evaluations on a fixed sample with a standard error; the final one exact."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmlab.data.datasets import StreamDataset
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.scoring import estimate_nll, mean_nll
from lmlab.training.trainer import Trainer


def _names_mlp(tiny_names, **train):
    config = resolve_config({"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
                             "train": {"threads": 1, **train}})
    data = prepare_data(config.data)
    return config, data, build_model(config, data.tokenizer, data.splits["train"].block_size)


def test_without_a_cap_the_estimate_is_the_exact_mean(tiny_names):
    _, data, model = _names_mlp(tiny_names)
    train = data.splits["train"]
    exact, tokens = mean_nll(model, train, batch_size=64)
    estimate, counted, stderr = estimate_nll(model, train, max_tokens=train.num_predictions, batch_size=64)
    assert counted == tokens == train.num_predictions
    assert estimate == pytest.approx(exact, abs=1e-6) and 0 < stderr < 0.1


@pytest.mark.parametrize("kind", ["lines", "stream"])
def test_a_capped_estimate_is_a_fixed_sample_within_its_error(tiny_names, kind):
    _, data, model = _names_mlp(tiny_names)
    dataset = data.splits["train"] if kind == "lines" else StreamDataset(torch.arange(3000) % 5, 8)
    cap = dataset.num_predictions // 5
    first = estimate_nll(model, dataset, max_tokens=cap, batch_size=32)
    assert first == estimate_nll(model, dataset, max_tokens=cap, batch_size=32)  # the same sample each time
    mean, tokens, stderr = first
    assert cap <= tokens < cap + dataset.block_size  # capped: at most one example past the cap
    exact = mean_nll(model, dataset)[0]
    assert abs(mean - exact) < 4 * stderr


def test_periodic_evaluations_are_capped_and_the_last_is_exact(tiny_names, tmp_path):
    config, data, model = _names_mlp(tiny_names, max_steps=20, eval_interval=10, eval_max_tokens=50)
    trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=tmp_path)
    trainer.fit()
    evals = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
    val = data.splits["val"]
    assert [r["step"] for r in evals] == [10, 20]
    assert 50 <= evals[0]["val_tokens"] < 50 + val.block_size and evals[0]["val_stderr"] > 0
    assert evals[1]["val_tokens"] == val.num_predictions
    assert evals[1]["val_loss"] == pytest.approx(mean_nll(trainer.model, val)[0], abs=1e-5)


def test_evaluation_batches_shrink_where_their_logits_would_not_fit():
    from types import SimpleNamespace

    from lmlab.training.scoring import EVAL_LOGITS_BUDGET, LOGIT_COPIES, batch_rows

    def model(vocab):
        return SimpleNamespace(config=SimpleNamespace(vocab_size=vocab))

    windows = SimpleNamespace(block_size=128)
    assert batch_rows(model(30), windows, 1024) == 1024  # a character vocabulary: the batch asked for
    rows = batch_rows(model(8192), windows, 1024)  # a word vocabulary: 0.75 GiB of logits at 64 rows
    assert rows < 1024 and rows * 128 * 8192 * 4 * LOGIT_COPIES <= EVAL_LOGITS_BUDGET
    assert batch_rows(model(10**7), windows, 1024) == 1  # never zero


# ---- bits per byte ------------------------------------------------------------------------------------------


def test_char_run_bits_per_byte_equal_bits_per_char_on_ascii(tiny_names, tmp_path):
    from lmlab.run import train

    config = {"data": {"source": str(tiny_names)}, "model": {"name": "bigram"}, "train": {"max_steps": 10}}
    summary = train(config, out=tmp_path / "char", inspect=False).summary
    for split in ("train", "val", "test"):
        assert summary["bits_per_byte"][split] == pytest.approx(summary["nll"][split] / math.log(2), rel=1e-12)


def test_bpe_run_bits_per_byte_count_the_utf8_bytes_of_the_scored_text(tmp_path):
    from lmlab.evaluate import evaluate_run
    from lmlab.run import load, train
    from lmlab.run.data import prepare_data

    words = ["José", "Zoë", "Łukasz", "Ærøskøbing", "naïve", "Ödön", "Čapek", "Dvořák", "Smith", "Åsa"]
    lines = [f"{a}{b.lower()}" for a in words for b in words]  # 100 lines, many of them non-ASCII
    source = tmp_path / "accents.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {"data": {"source": str(source), "tokenizer": "bpe", "vocab_size": 300}, "model": {"name": "bigram"},
              "train": {"max_steps": 10}}
    summary = train(config, out=tmp_path / "bpe", inspect=False).summary
    run = load(tmp_path / "bpe")
    texts = prepare_data(run.config.data, run.tokenizer).texts
    for split in ("val", "test"):
        report = evaluate_run(run, split)
        # Each example predicts its tokens and the closing boundary, which stands for the line break.
        num_bytes = sum(len(t.encode("utf-8")) + 1 for t in texts[split])
        assert report["bytes"] == num_bytes and num_bytes > sum(len(t) + 1 for t in texts[split])
        expected = report["nll"] * report["tokens"] / (math.log(2) * num_bytes)
        assert report["bits_per_byte"] == pytest.approx(expected, rel=1e-12)
        assert summary["bits_per_byte"][split] == pytest.approx(expected, rel=1e-6)
        assert report["tokens"] < num_bytes  # merges: fewer tokens than bytes, so bits/byte < bits/token


def test_losses_a_few_rows_at_a_time_equal_the_whole_batch(monkeypatch):
    import torch.nn.functional as F

    import lmlab.training.scoring as scoring

    logits = torch.randn(9, 7, 11) * 3
    targets = torch.randint(11, (9, 7))
    targets[2, 3:] = -100
    whole = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none").sum(1).double()
    monkeypatch.setattr(scoring, "LOSS_CHUNK_BYTES", 2 * 7 * 11 * 4)  # two rows at a time
    assert torch.equal(scoring.row_losses(logits, targets), whole)


def test_the_final_val_score_is_computed_once_and_recomputed_after_weights_change(tiny_names, tmp_path, monkeypatch):
    import lmlab.run.pipeline as pipeline
    from lmlab.run import train

    scored = []
    real = pipeline.score_split
    monkeypatch.setattr(pipeline, "score_split", lambda model, ds, **kw: scored.append(ds) or real(model, ds, **kw))
    config = {"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
              "train": {"max_steps": 20, "eval_interval": 10, "threads": 1, "ema_decay": 0.9}}
    run = train(config, out=tmp_path / "once", inspect=False)
    val = run.trainer.val_data
    assert len(scored) == 1 and scored[0] is not val  # test only: val came from the trainer's final evaluation
    last = [json.loads(line) for line in (tmp_path / "once" / "metrics.jsonl").read_text().splitlines()][-1]
    assert run.summary["nll"]["val"] == pytest.approx(last["val_loss"], abs=1e-6)
    assert run.summary["nll"]["val"] == pytest.approx(mean_nll(run.trainer.model, val)[0], abs=1e-5)
    assert "nll_stderr" not in run.summary  # small data: exact
    # weights changed after the final evaluation (as restored best weights do): val is scored again
    with torch.no_grad():
        next(run.trainer.model.parameters()).mul_(1.5)
    scored.clear()
    again = pipeline.split_scores(run.trainer, pipeline.RunData(run.tokenizer, "lines", {"val": val}, {}))
    assert scored == [val] and again.nll["val"] == pytest.approx(mean_nll(run.trainer.model, val)[0], abs=1e-5)
    assert again.nll["val"] != pytest.approx(run.summary["nll"]["val"], abs=1e-4)


def test_a_split_over_the_final_cap_is_a_fixed_sample_with_its_standard_error(tiny_names, tmp_path):
    from lmlab.run import train

    config = {"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
              "train": {"max_steps": 10, "threads": 1, "final_eval_max_tokens": 40}}
    run = train(config, out=tmp_path / "capped", inspect=False)
    val = run.trainer.val_data
    assert val.num_predictions > 40 and set(run.summary["nll_stderr"]) == {"val", "test"}
    stderr, exact = run.summary["nll_stderr"]["val"], mean_nll(run.trainer.model, val)[0]
    assert 0 < stderr < 0.5 and abs(run.summary["nll"]["val"] - exact) < 4 * stderr
    assert run.summary["nll"]["val"] != exact
