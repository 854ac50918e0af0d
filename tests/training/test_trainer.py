import functools
import json
import math

import pytest
import torch
from inspect_helpers import StopAt

from lmlab.config import TrainConfig
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.run.folder import RunDir, load_run
from lmlab.training.callbacks import Callback
from lmlab.training.schedule import lr_at
from lmlab.training.scoring import mean_nll
from lmlab.training.trainer import Trainer


def _setup(source, model="mlp", **train):
    config = resolve_config({"data": {"source": str(source)}, "model": {"name": model},
                             "train": {"eval_interval": 50, "log_interval": 10, **train}})
    data = prepare_data(config.data)
    net = build_model(config, data.tokenizer, data.splits["train"].block_size)
    return config, data, net


def test_schedule_warms_up_then_decays():
    config = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1) and lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(60, config) == pytest.approx(0.55) and lr_at(110, config) == pytest.approx(0.1)
    step = TrainConfig(lr=1.0, warmup_steps=0, schedule="step", step_decay_every=10, step_decay_factor=0.5,
                       min_lr_ratio=0.0)
    assert [lr_at(s, step) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


def test_mlp_beats_the_bigram_on_validation():
    config, data, mlp = _setup("names", "mlp", max_steps=300, eval_interval=1000)
    Trainer(mlp, data.splits["train"], data.splits["val"], config.train).fit()
    config, _, counted = _setup("names", "ngram")
    Trainer(counted, data.splits["train"], None, config.train).fit()
    assert mean_nll(mlp, data.splits["val"])[0] < mean_nll(counted, data.splits["val"])[0] - 0.1


def test_evaluation_runs_in_eval_mode_without_grad_and_restores_train_mode(tiny_names):
    config, data, net = _setup(tiny_names, "mlp", max_steps=1)
    modes = []
    net.register_forward_hook(lambda m, i, o: modes.append((m.training, torch.is_grad_enabled())))
    trainer = Trainer(net, data.splits["train"], data.splits["val"], config.train)
    trainer.evaluate()
    assert set(modes) == {(False, False)} and net.training


def test_save_load_gives_identical_logits(tmp_path, tiny_names):
    config, data, net = _setup(tiny_names, "mlp", max_steps=20)
    RunDir(tmp_path).write_config(config, net.config.block_size)
    RunDir(tmp_path).save_tokenizer(data.tokenizer)
    Trainer(net, data.splits["train"], data.splits["val"], config.train, run_dir=tmp_path).fit()
    loaded = load_run(tmp_path)
    ids = data.splits["val"].input_ids[:4]
    assert torch.equal(loaded.model(ids).logits, net.eval()(ids).logits)
    assert loaded.step == 20


def test_resume_continues_step_lr_and_optimizer(tmp_path, tiny_names):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    config, data, net = _setup(tiny_names, "mlp", max_steps=60, warmup_steps=10)
    for run_dir in (full_dir, part_dir):
        RunDir(run_dir).write_config(config, net.config.block_size)
        RunDir(run_dir).save_tokenizer(data.tokenizer)
    Trainer(net, data.splits["train"], data.splits["val"], config.train, run_dir=full_dir).fit()

    _, _, first = _setup(tiny_names, "mlp")
    Trainer(first, data.splits["train"], data.splits["val"], config.train, run_dir=part_dir,
            callbacks=[StopAt(30)]).fit()
    _, _, second = _setup(tiny_names, "mlp")
    resumed = Trainer(second, data.splits["train"], data.splits["val"], config.train, run_dir=part_dir)
    resumed.load_checkpoint(part_dir)
    assert resumed.step == 30 and resumed.optimizer.state_dict()["state"]
    resumed.fit()

    def records(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    full_lr = {r["step"]: r["lr"] for r in records(full_dir) if "lr" in r}
    part_lr = {r["step"]: r["lr"] for r in records(part_dir) if "lr" in r}
    assert part_lr == full_lr  # one schedule, continued where it stopped
    for a, b in zip(net.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)  # same batches, same optimizer moments: the same weights


def test_time_budget_stops_early(tiny_names):
    config, data, net = _setup(tiny_names, "mlp", max_steps=10_000_000, budget="0.5s")
    trainer = Trainer(net, data.splits["train"], None, config.train).fit()
    assert 0 < trainer.step < 10_000_000


def test_initial_loss_near_ln_vocab_for_every_gradient_rung(tiny_names):
    for name in ("bigram", "mlp"):
        _config, data, net = _setup(tiny_names, name)
        x, y = data.splits["train"].sample_batch(64, torch.Generator().manual_seed(0))
        assert abs(net(x, labels=y).loss.item() - math.log(data.tokenizer.vocab_size)) < 0.2


def test_a_fresh_run_dir_is_created_from_the_api(tmp_path, tiny_names):
    config, data, net = _setup(tiny_names, "mlp", max_steps=10)
    run_dir = tmp_path / "new" / "run"
    Trainer(net, data.splits["train"], data.splits["val"], config.train, run_dir=run_dir).fit()
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "metrics.jsonl").read_text()


class _Uncompiled(Callback):
    """Asks the trainer to run the given steps without torch.compile; notes the step under way and losses."""

    def __init__(self, steps):
        self.steps, self.current, self.losses = steps, None, []

    def on_step_begin(self, trainer):
        self.current = trainer.step
        if trainer.step in self.steps:
            trainer.run_this_step_uncompiled()

    def on_step_end(self, trainer, record):
        self.losses.append(record["loss"])


def test_a_callback_can_run_one_step_uncompiled(tiny_names, monkeypatch):
    ran_compiled = []  # the step under way, each time a compiled graph runs

    def counting_backend(graph, _example_inputs):  # no code generation: the traced graph itself, noted
        def run(*args):
            ran_compiled.append(asker.current)
            return graph.forward(*args)

        return run

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counting_backend))
    torch._dynamo.reset()
    losses = {}
    try:
        for compile_model in (False, True):
            config, data, net = _setup(tiny_names, "mlp", max_steps=4, grad_accum_steps=2, compile=compile_model)
            asker = _Uncompiled({0, 2})
            Trainer(net, data.splits["train"], None, config.train, callbacks=[asker]).fit()
            losses[compile_model] = asker.losses
            assert bool(ran_compiled) == compile_model
    finally:
        torch._dynamo.reset()
    assert sorted(set(ran_compiled)) == [1, 3]  # steps 0 and 2 ran eagerly, the others compiled
    assert ran_compiled.count(1) == ran_compiled.count(3) > 0  # both micro-batches of each compiled step
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)  # the same numbers, to float tolerance
