"""The last good checkpoint survives: a crash inside a write, a kill between the two renames of a commit, a
model gone NaN; non-finite steps are skipped, counted and, several in a row, stop training."""

from __future__ import annotations

import json
import math
import os

import pytest
import safetensors.torch
import torch

from lmlab.config import DataConfig, TrainConfig
from lmlab.errors import CheckpointError
from lmlab.models.mlp import MLP, MLPConfig
from lmlab.run.data import prepare_data
from lmlab.training.callbacks import Callback
from lmlab.training.checkpoint import format as ckpt
from lmlab.training.trainer import MAX_NONFINITE_IN_A_ROW, Trainer, TrainingDiverged


def make_trainer(tiny_names, run_dir, callbacks=(), mode="lines", **train):
    data = prepare_data(DataConfig(source=str(tiny_names), mode=mode, block_size=12))
    torch.manual_seed(0)
    model = MLP(MLPConfig(vocab_size=data.tokenizer.vocab_size, block_size=data.splits["train"].block_size,
                          n_hidden=16, dropout=0.2))
    config = TrainConfig(**{"max_steps": 20, "eval_interval": 10, "log_interval": 2, "batch_size": 8,
                            "warmup_steps": 0, "seed": 3, "device": "cpu", **train})
    run_dir.mkdir(exist_ok=True)
    return Trainer(model, data.splits["train"], data.splits["val"], config, run_dir=run_dir, callbacks=callbacks)


def saved_weights(run_dir):
    return safetensors.torch.load_file(run_dir / ckpt.MODEL_FILE)


def test_same_seed_same_metrics_and_a_different_seed_differs(tiny_names, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_trainer(tiny_names, tmp_path / name, seed=seed).fit()
    metrics = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert metrics == (tmp_path / "b" / "metrics.jsonl").read_text()
    assert metrics != (tmp_path / "c" / "metrics.jsonl").read_text()
    assert "seconds" not in metrics and "per_s" not in metrics  # timings would differ from run to run
    assert sum('"val_loss"' in line for line in metrics.splitlines()) == 2  # steps 10 and 20, no duplicate


class InterruptAt(Callback):
    """What Ctrl-C does, at a chosen step."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, record):
        if trainer.step == self.step:
            trainer.interrupt()


@pytest.mark.parametrize("mode", ["lines", "stream"])
def test_in_process_resume_is_exact(mode, tiny_names, tmp_path):
    straight = make_trainer(tiny_names, tmp_path / "a", mode=mode).fit()
    first = make_trainer(tiny_names, tmp_path / "b", mode=mode, callbacks=[InterruptAt(13)]).fit()
    assert first.step == 13
    second = make_trainer(tiny_names, tmp_path / "b", mode=mode)
    second.load_checkpoint(tmp_path / "b")
    second.fit()
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("target", ["weights", "state"])
def test_a_crash_inside_a_write_leaves_the_old_checkpoint(target, tiny_names, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_names, tmp_path / "run").fit()
    before = saved_weights(tmp_path / "run")
    trainer.model.head.bias.data += 1.0
    trainer.step += 1

    def torn_write(*args, **kwargs):
        path = args[1]
        with open(path, "wb") as fh:
            fh.write(b"half a file")  # what a kill mid-write leaves behind
        raise OSError("disk full")

    if target == "weights":
        monkeypatch.setattr(safetensors.torch, "save_file", torn_write)
    else:
        monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []
    after = saved_weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)
    fresh = make_trainer(tiny_names, tmp_path / "run")
    fresh.load_checkpoint(tmp_path / "run")
    assert fresh.step == 20


def test_a_kill_between_the_two_renames_rolls_forward(tiny_names, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_names, tmp_path / "run").fit()
    trainer.model.head.bias.data += 1.0
    trainer.step = 21
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the weights were renamed, before the state was
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert torch.load(tmp_path / "run" / ckpt.STATE_FILE, weights_only=True)["step"] == 20  # torn pair
    fresh = make_trainer(tiny_names, tmp_path / "run")
    fresh.load_checkpoint(tmp_path / "run")
    assert fresh.step == 21
    assert torch.equal(fresh.model.head.bias, trainer.model.head.bias)
    assert torch.load(tmp_path / "run" / ckpt.STATE_FILE, weights_only=True)["step"] == 21  # committed


def test_mismatched_weights_and_state_are_refused(tiny_names, tmp_path):
    make_trainer(tiny_names, tmp_path / "a", max_steps=10).fit()
    make_trainer(tiny_names, tmp_path / "b", max_steps=20).fit()
    os.replace(tmp_path / "a" / ckpt.STATE_FILE, tmp_path / "b" / ckpt.STATE_FILE)
    with pytest.raises(CheckpointError, match="do not belong together"):
        make_trainer(tiny_names, tmp_path / "b").load_checkpoint(tmp_path / "b")


def test_a_nan_model_is_not_saved_over_a_good_one(tiny_names, tmp_path):
    trainer = make_trainer(tiny_names, tmp_path / "run").fit()
    before = saved_weights(tmp_path / "run")
    trainer.model.embedding.weight.data[0, 0] = float("nan")
    trainer.step += 1
    with pytest.raises(ckpt.NonFiniteModel, match="embedding.weight"):
        trainer.save_checkpoint()
    after = saved_weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)


class PoisonGrads(Callback):
    """Plants a NaN in one gradient on chosen calls of on_after_backward (counted from 0)."""

    def __init__(self, calls):
        self.calls, self.seen = set(calls), 0

    def on_after_backward(self, trainer):
        if self.seen in self.calls:
            trainer.model.head.weight.grad[0, 0] = float("nan")
        self.seen += 1


def test_nonfinite_gradients_skip_the_step_and_are_counted(tiny_names, tmp_path):
    trainer = make_trainer(tiny_names, tmp_path / "run", callbacks=[PoisonGrads({3, 7, 8})]).fit()
    assert trainer.step == 20 and trainer.nonfinite_steps == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # a skipped step logs nothing and does not advance the count


def test_nonfinite_steps_in_a_row_stop_training_and_keep_the_checkpoint(tiny_names, tmp_path):
    # Poison every call from the 13th on: steps 1-12 run, the checkpoint at step 10 is the last good one.
    trainer = make_trainer(tiny_names, tmp_path / "run", callbacks=[PoisonGrads(range(12, 1000))])
    with pytest.raises(TrainingDiverged, match=f"{MAX_NONFINITE_IN_A_ROW} steps in a row"):
        trainer.fit()
    assert trainer.step == 12 and trainer.nonfinite_steps == MAX_NONFINITE_IN_A_ROW
    fresh = make_trainer(tiny_names, tmp_path / "run")
    fresh.load_checkpoint(tmp_path / "run")
    assert fresh.step == 10
    assert all(math.isfinite(v) for t in saved_weights(tmp_path / "run").values() for v in t.flatten().tolist())


class NaNLoss(torch.nn.Module):
    """Wraps a model so its loss is NaN on chosen calls (a data or numerics problem, not the gradients)."""

    def __init__(self, model, calls):
        super().__init__()
        self.model, self.calls, self.seen = model, set(calls), 0

    def forward(self, input_ids, labels=None):
        out = self.model(input_ids, labels=labels)
        if labels is not None and self.model.training:
            if self.seen in self.calls:
                out.loss = out.loss * float("nan")
            self.seen += 1
        return out


def test_a_nonfinite_loss_skips_the_step(tiny_names, tmp_path):
    trainer = make_trainer(tiny_names, tmp_path / "run")
    trainer.model = trainer.train_model = NaNLoss(trainer.model, {0, 5})
    trainer.fit()
    assert trainer.step == 20 and trainer.nonfinite_steps == 2


def test_tied_weights_are_saved_once_with_the_step_as_the_only_metadata(tmp_path):
    from lmlab.models import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    ckpt.save_weights(model, tmp_path / "a.safetensors", 3)
    with safetensors.safe_open(str(tmp_path / "a.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"step": "3"}  # one key: safetensors' order of several changes per process
        stored = set(fh.keys())
    assert len(model.state_dict()) > len(stored)  # the shared embedding and head are stored once
    fresh = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    assert ckpt.load_weights(fresh, tmp_path / "a.safetensors") == 3
    assert all(torch.equal(t, fresh.state_dict()[n]) for n, t in model.state_dict().items())
    ckpt.save_weights(fresh, tmp_path / "b.safetensors", 3)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
