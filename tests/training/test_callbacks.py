"""Keras/Lightning-style callbacks: early stopping, best-k checkpoints, LR on plateau, LR schedule, NaN."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from inspect_helpers import TokenwiseLM, tiny_data, tiny_mlp
from torch import nn

from lmlab.config import TrainConfig
from lmlab.training.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from lmlab.training.checkpoint.format import load_weights
from lmlab.training.distributed import Parallel
from lmlab.training.trainer import Trainer


class FakeTrainer(SimpleNamespace):
    def __init__(self, run_dir=None):
        super().__init__(model=nn.Linear(3, 2), step=0, stopped=False, saved=0, lr_scale=1.0, run_dir=run_dir,
                         schedule=SimpleNamespace(warmup_steps=0))

    def stop(self):
        self.stopped = True

    def save_checkpoint(self):
        self.saved += 1

    # the Trainer's own, on one process (what FSDP changes is tested in test_distributed.py)
    def full_weights(self):
        return Parallel().full_weights(self.model)

    def load_full_weights(self, weights):
        Parallel().load_full_weights(self.model, weights)


def _feed(callback, trainer, values, after=None):
    for value in values:
        trainer.step += 1
        with torch.no_grad():
            trainer.model.weight.fill_(value)  # the weights remember which evaluation they belong to
        callback.on_eval_end(trainer, {"step": trainer.step, "val_loss": value})
        if after:
            after(trainer)


def test_early_stopping_patience_min_delta_and_best_weights():
    trainer = FakeTrainer()
    stopper = EarlyStopping(patience=2, min_delta=0.01, restore_best_weights=True)
    _feed(stopper, trainer, [3.0, 2.0, 1.995, 2.5])  # 1.995 is within min_delta: no improvement
    assert trainer.stopped and stopper.stopped_step == 4 and stopper.best == 2.0 and stopper.best_step == 2
    stopper.on_train_end(trainer)
    assert torch.all(trainer.model.weight == 2.0) and trainer.saved == 1  # restored, and saved as the run's model
    again = EarlyStopping(patience=2)
    again.load_state_dict(stopper.state_dict())
    assert again.best == 2.0 and again.wait == 2


def test_evaluations_inside_the_warm_up_use_no_patience():
    """The loss is flat while the rate is still rising: that is the warm-up, not a plateau (a BPE stream run was
    stopped at step 84 of its 100-step warm-up)."""
    trainer = FakeTrainer()
    trainer.schedule.warmup_steps = 3
    stopper = EarlyStopping(patience=1)
    _feed(stopper, trainer, [3.0, 3.1, 3.2])  # steps 1-3: inside the warm-up, no patience used
    assert not trainer.stopped and stopper.wait == 0
    _feed(stopper, trainer, [3.3])  # step 4: after it, the first non-improvement ends the run
    assert trainer.stopped and stopper.stopped_step == 4


def test_model_checkpoint_keeps_the_best_k_and_the_last(tmp_path):
    trainer = FakeTrainer(run_dir=tmp_path)
    keeper = ModelCheckpoint(save_top_k=2, save_last=True)
    _feed(keeper, trainer, [3.0, 1.0, 2.0, 0.5, 4.0])
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["last.safetensors", "step0000002-val_loss1.0000.safetensors",
                     "step0000004-val_loss0.5000.safetensors"]
    model = nn.Linear(3, 2)
    assert load_weights(model, Path(keeper.best_model_path)) == 4 and torch.all(model.weight == 0.5)
    assert load_weights(model, tmp_path / "checkpoints" / "last.safetensors") == 5


def test_reduce_lr_on_plateau_scales_the_scheduled_rate():
    trainer = FakeTrainer()
    plateau = ReduceLROnPlateau(patience=2)
    _feed(plateau, trainer, [3.0, 3.0, 3.0])
    assert trainer.lr_scale == pytest.approx(0.1)
    _feed(plateau, trainer, [3.0, 3.0])
    assert trainer.lr_scale == pytest.approx(0.01)
    _feed(plateau, trainer, [1.0, 1.0])  # improved, then only one check without: unchanged
    assert trainer.lr_scale == pytest.approx(0.01)


def _config(**kw):
    values = {"max_steps": 12, "warmup_steps": 0, "schedule": "constant", "eval_interval": 2, "log_interval": 1,
              "device": "cpu", "batch_size": 16, "lr": 1e-2}
    return TrainConfig(**{**values, **kw})


def test_callbacks_in_a_real_run(tiny_names, tmp_path):
    data = tiny_data(tiny_names)
    stopper = EarlyStopping(patience=1, min_delta=10.0)  # nothing improves by 10 nats: stop at the 2nd eval
    plateau = ReduceLROnPlateau(patience=1, min_delta=10.0)
    trainer = Trainer(tiny_mlp(data), data.splits["train"], data.splits["val"], _config(), run_dir=tmp_path,
                      callbacks=[plateau, stopper])
    trainer.fit()
    assert trainer.step == 4 and stopper.stopped_step == 4
    records = [r for r in map(__import__("json").loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
               if "lr" in r]
    assert [r["lr"] for r in records][:4] == pytest.approx([1e-2, 1e-2, 1e-2, 1e-2])
    assert trainer.lr_scale == pytest.approx(0.1) and trainer.state_dict()["progress"]["lr_scale"] == pytest.approx(0.1)
    resumed = Trainer(tiny_mlp(data), data.splits["train"], data.splits["val"], _config(), run_dir=tmp_path,
                      callbacks=[ReduceLROnPlateau(patience=1), EarlyStopping(patience=1)])
    resumed.load_checkpoint(tmp_path)
    assert resumed.lr_scale == pytest.approx(0.1)
    resumed.fit()
    assert [r["lr"] for r in map(__import__("json").loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if "lr" in r][4] == pytest.approx(1e-3)  # the first resumed step runs at the reduced rate


def test_early_stopping_restores_the_same_best_weights_after_a_resume(tiny_names, tmp_path):
    # Nothing improves by 10 nats: best at the first evaluation (step 2), stop at step 6, restore step 2's.
    data = tiny_data(tiny_names)

    class CopyAtStep4(LearningRateScheduler):  # a kill after step 4's checkpoint: its folder, as it was
        def __init__(self):
            super().__init__(lambda step, lr: lr)

        def on_checkpoint(self, trainer):
            if trainer.step == 4:
                shutil.copytree(tmp_path / "whole", tmp_path / "killed")

    def run(folder, *extra, resume=False):
        torch.manual_seed(0)
        stopper = EarlyStopping(patience=2, min_delta=10.0, restore_best_weights=True)
        trainer = Trainer(tiny_mlp(data), data.splits["train"], data.splits["val"], _config(), run_dir=folder,
                          callbacks=[stopper, *extra])
        if resume:
            trainer.load_checkpoint(folder)
        return trainer.fit(), stopper

    whole, stopper = run(tmp_path / "whole", CopyAtStep4())
    assert whole.step == 6 and stopper.best_step == 2
    assert [p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()] == ["best-step0000002.safetensors"]
    resumed, again = run(tmp_path / "killed", resume=True)
    assert again.best_weights is None and resumed.step == 6 and again.stopped_step == 6
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    written = [(tmp_path / folder / "model.safetensors").read_bytes() for folder in ("whole", "killed")]
    assert written[0] == written[1]


def test_learning_rate_scheduler_and_terminate_on_nan(tiny_names):
    data = tiny_data(tiny_names)
    seen = []
    halve = LearningRateScheduler(lambda step, lr: lr * 0.5 ** step)
    trainer = Trainer(tiny_mlp(data), data.splits["train"], None, _config(max_steps=4), callbacks=[halve])
    trainer.callbacks.append(type("Spy", (), {**{h: lambda *a: None for h in (
        "on_train_begin", "on_step_begin", "on_after_backward", "on_eval_end", "on_train_end")},
        "on_step_end": lambda self, t, r: seen.append(r["lr"]), "state_dict": lambda self: {}})())
    trainer.fit()
    assert seen == pytest.approx([1e-2, 5e-3, 2.5e-3, 1.25e-3])

    class Explode(nn.Module):
        def forward(self, x):
            return x * float("inf")

    model = TokenwiseLM(data.tokenizer.vocab_size, 16, Explode())
    trainer = Trainer(model, data.splits["train"], None, _config(max_steps=50), callbacks=[TerminateOnNaN()])
    trainer.fit()  # would raise TrainingDiverged after five skipped steps without the callback
    assert trainer.nonfinite_steps == 2 and trainer.step == 0


def test_callbacks_named_by_the_config_are_in_config_json_and_a_resume_keeps_them(tiny_names, tmp_path):
    import json

    from inspect_helpers import StopAt

    import lmlab

    values = {"data": {"source": str(tiny_names)}, "model": {"name": "mlp", "n_hidden": 16},
              "train": {"max_steps": 4, "eval_interval": 1, "threads": 1, "save_top_k": 1,
                        "reduce_lr_on_plateau": 2}}
    lmlab.train(values, out=tmp_path / "run", inspect=False, callbacks=[StopAt(2)])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["save_top_k"] == 1 and saved["reduce_lr_on_plateau"] == 2
    resumed = lmlab.train({}, out=tmp_path / "run", resume=True, inspect=False)  # no callbacks passed again
    kinds = {type(c) for c in resumed.trainer.callbacks}
    assert {ModelCheckpoint, ReduceLROnPlateau} <= kinds and resumed.step == 4
    assert any(p.name.startswith("step0000004-") for p in (tmp_path / "run" / "checkpoints").iterdir())


def test_early_stopping_best_file_on_a_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    import collections

    import safetensors
    import safetensors.torch

    from lmlab.errors import CheckpointError

    def full_disk(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(No space left on device)")

    trainer = FakeTrainer(run_dir=tmp_path)
    trainer.parallel = SimpleNamespace(is_main=True)
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: collections.namedtuple("u", "total used free")(1, 1, 0))
    with pytest.raises(CheckpointError, match="no space left"):
        _feed(EarlyStopping(patience=2, restore_best_weights=True), trainer, [3.0])
    assert not [p for p in (tmp_path / "checkpoints").iterdir()]  # no half file, no temporary left


def test_an_interrupt_is_not_the_end_of_training(tiny_names, tmp_path):
    """Ctrl-C or SIGTERM: the callbacks hear on_interrupt, not on_train_end, so early stopping keeps the
    step's own weights in its checkpoint (restoring the best would make the resumed run differ)."""
    heard = []

    class Listen(Callback):
        def on_step_end(self, trainer, record):
            if trainer.step == 3:
                trainer.interrupt()

        def on_train_end(self, trainer):
            heard.append("end")

        def on_interrupt(self, trainer):
            heard.append("interrupt")

    data = tiny_data(tiny_names)
    model = tiny_mlp(data)
    trainer = Trainer(model, data.splits["train"], data.splits["val"],
                      TrainConfig(max_steps=10, eval_interval=1, device="cpu"), run_dir=tmp_path,
                      callbacks=[Listen()]).fit()
    assert trainer.step == 3 and trainer.interrupted and heard == ["interrupt"]
    trainer.interrupt()  # after the loop: training has ended, nothing to interrupt
    heard.clear()
    trainer.fit()  # on from step 3, to the end
    assert trainer.step == 10 and not trainer.interrupted and heard == ["end"]
