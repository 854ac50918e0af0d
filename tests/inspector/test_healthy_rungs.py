"""Healthy runs of lmlab's own rungs raise no warning: the rules that fire on planted faults stay quiet on
models trained as they should be (issue 34). Small models, 200 steps on 200 names: each ends below
its data's counted bigram, so not even the never-silent rule has anything to say."""

from __future__ import annotations

import pytest

import lmlab
from lmlab.inspector import format_finding

HEALTHY = {
    "mlp": {"model": {"name": "mlp", "n_hidden": 32}},
    "mlp+batchnorm": {"model": {"name": "mlp", "n_hidden": 32, "norm": "batch", "n_layer": 2}},
    "lstm": {"model": {"name": "lstm", "n_embd": 16, "n_hidden": 32}},
    "gru": {"model": {"name": "gru", "n_embd": 16, "n_hidden": 32}},
    "wavenet": {"model": {"name": "wavenet"}},
    "gpt+dropout": {"model": {"name": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.1}},
    "llama+muon": {"model": {"name": "llama", "n_layer": 2, "n_head": 2, "n_embd": 32},
                   "train": {"optimizer": "muon"}},
}


@pytest.mark.slow  # seven short trainings: run with -m slow
@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_rungs_raise_nothing(tiny_names, tmp_path, name):
    config = HEALTHY[name]
    train = {"max_steps": 200, "warmup_steps": 10, "eval_interval": 100, "device": "cpu", "early_stopping": 0,
             **config.get("train", {})}
    run = lmlab.train({"data": {"source": str(tiny_names)}, "model": config["model"], "train": train},
                      out=tmp_path / "run", inspect=True)
    problems = [f for f in run.findings if f.is_problem]
    assert problems == [], [format_finding(f) for f in problems]
