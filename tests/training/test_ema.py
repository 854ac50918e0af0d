"""train.ema_decay: the trainer evaluates and saves a moving average of the weights, and resumes it exactly."""

import json

import pytest
import torch

from lmlab.config import TrainConfig
from lmlab.errors import ConfigError
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.run.folder import RunDir, load_run
from lmlab.training.callbacks import Callback
from lmlab.training.scoring import mean_nll
from lmlab.training.trainer import Trainer

DECAY = 0.8


def _setup(source, **train):
    config = resolve_config({"data": {"source": str(source)}, "model": {"name": "mlp"},
                             "train": {"eval_interval": 10, "log_interval": 5, "ema_decay": DECAY, **train}})
    data = prepare_data(config.data)
    return config, data, build_model(config, data.tokenizer, data.splits["train"].block_size)


class _RecordWeights(Callback):
    def __init__(self):
        self.after_step: list[list[torch.Tensor]] = []

    def on_train_begin(self, trainer):
        self.initial = [p.detach().clone() for p in trainer.model.parameters()]

    def on_step_end(self, trainer, record):
        self.after_step.append([p.detach().clone() for p in trainer.model.parameters()])


def test_the_saved_and_final_model_is_the_average_of_the_trained_weights(tmp_path, tiny_names):
    config, data, net = _setup(tiny_names, max_steps=12)
    RunDir(tmp_path).write_config(config, net.config.block_size)
    RunDir(tmp_path).save_tokenizer(data.tokenizer)
    recorder = _RecordWeights()
    trainer = Trainer(net, data.splits["train"], data.splits["val"], config.train, run_dir=tmp_path,
                      callbacks=[recorder]).fit()
    expected = recorder.initial
    for step, weights in enumerate(recorder.after_step, start=1):
        decay = min(DECAY, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    for average, param in zip(expected, net.parameters(), strict=True):
        torch.testing.assert_close(param, average, rtol=1e-5, atol=1e-6)
    raw = recorder.after_step[-1]
    assert any(not torch.equal(p, r) for p, r in zip(net.parameters(), raw, strict=True))
    # The run folder serves the average, and the last validation record measured it.
    loaded = load_run(tmp_path)
    for a, b in zip(loaded.model.parameters(), net.parameters(), strict=True):
        assert torch.equal(a, b)
    val = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if "val_loss" in line][-1]
    assert val["val_loss"] == pytest.approx(mean_nll(net, data.splits["val"])[0], abs=1e-6)
    assert trainer.average.swapped


def test_resume_continues_the_raw_weights_and_the_average_exactly(tmp_path, tiny_names):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    config, data, full = _setup(tiny_names, max_steps=30)
    for run_dir in (full_dir, part_dir):
        RunDir(run_dir).write_config(config, full.config.block_size)
        RunDir(run_dir).save_tokenizer(data.tokenizer)
    Trainer(full, data.splits["train"], data.splits["val"], config.train, run_dir=full_dir).fit()

    _, _, first = _setup(tiny_names)
    stop = type("StopAt", (Callback,), {"on_step_end": lambda self, t, r: t.stop() if t.step == 17 else None})
    Trainer(first, data.splits["train"], data.splits["val"], config.train, run_dir=part_dir,
            callbacks=[stop()]).fit()
    _, _, second = _setup(tiny_names)
    resumed = Trainer(second, data.splits["train"], data.splits["val"], config.train, run_dir=part_dir)
    resumed.load_checkpoint(part_dir)
    assert resumed.step == 17
    resumed.fit()
    for a, b in zip(full.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (full_dir / "model.safetensors").read_bytes() == (part_dir / "model.safetensors").read_bytes()


def test_fit_again_trains_the_raw_weights_on(tiny_names):
    config, data, net = _setup(tiny_names, max_steps=5)
    trainer = Trainer(net, data.splits["train"], data.splits["val"], config.train).fit()
    raw_after_5 = trainer.average.raw_weights()
    trainer.config = TrainConfig(**{**{f: getattr(config.train, f) for f in config.train.__slots__},
                                    "max_steps": 6})
    recorder = _RecordWeights()
    trainer.callbacks.append(recorder)
    trainer.fit()
    for start, raw in zip(recorder.initial, raw_after_5, strict=True):
        assert torch.equal(start, raw)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_ema_decay_outside_0_1_is_refused(value):
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=value)
