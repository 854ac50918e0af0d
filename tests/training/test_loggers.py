"""TensorBoard and W&B loggers (training/loggers/), read back with each tool's own reader and compared with
metrics.jsonl and the inspector's statistics; resume without duplicated or missing steps."""

from __future__ import annotations

import json
import re
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing import event_accumulator  # the test extra installs tensorboard

from lmlab.config import DataConfig, TrainConfig
from lmlab.errors import ConfigError
from lmlab.training import loggers as lg
from lmlab.training.callbacks import Callback
from lmlab.training.loggers.base import MissingPackage
from lmlab.training.loggers.tensorboard import TENSORBOARD_DIR, write_tensorboard_runs


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _series(records: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in records if key in r]


def _events(folder: Path):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0, event_accumulator.TENSORS: 0})
    return acc.Reload()


def _scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _close(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)  # TensorBoard keeps float32


class Crash(Callback):
    """Stands in for a kill after a checkpoint: the run dies at step `at`, its logs written so far."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, trainer, record) -> None:
        if trainer.step == self.at:
            raise KeyboardInterrupt


@pytest.fixture
def tiny(tiny_names):
    """A one-hidden-layer MLP on 200 names: something for the inspector to look into, in well under a second."""
    from lmlab.models import REGISTRY
    from lmlab.run.data import prepare_data

    data = prepare_data(DataConfig(source=str(tiny_names)))
    spec = REGISTRY["mlp"]

    def make(run_dir: Path, callbacks: list, steps: int = 12, resume: bool = False, **train):
        import torch

        from lmlab.training.trainer import Trainer

        torch.manual_seed(0)
        model = spec.model_cls(spec.config_cls(vocab_size=data.tokenizer.vocab_size, block_size=16, n_hidden=16,
                                               pad_id=data.tokenizer.boundary_id))
        config = TrainConfig(max_steps=steps, batch_size=16, eval_interval=4, log_interval=2, warmup_steps=2,
                             device="cpu", **train)
        trainer = Trainer(model, data.splits["train"], data.splits["val"], config, run_dir=run_dir,
                          callbacks=callbacks)
        if resume:
            trainer.load_checkpoint(run_dir)
        return trainer

    return make


def test_tensorboard_holds_what_metrics_and_the_inspector_hold(tiny, tmp_path):
    from lmlab.inspector import Inspector, find_problems

    inspector = Inspector(every=3)
    config = {"train": {"lr": 1e-3, "log": "tensorboard"}, "model": {"name": "mlp"}}
    logger = lg.TensorBoardLogger(tmp_path, config, findings=find_problems)
    tiny(tmp_path, [inspector, logger]).fit()
    acc = _events(tmp_path / TENSORBOARD_DIR)
    records = _metrics(tmp_path)
    for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("grad_norm", "train/grad_norm"),
                     ("val_loss", "val/loss")):
        _close(_scalars(acc, tag), _series(records, key))
    assert [s for s, _ in _scalars(acc, "train/tokens_per_s")] == [s for s, _ in _series(records, "loss")]
    tags = acc.Tags()
    layers = inspector.stats.layers
    assert layers and all(f"inspect/activations/{name}" in tags["histograms"] for name in layers)
    for name, entry in layers.items():  # sampled at the start of step s, filed under s + 1
        want = [(s + 1, v) for s, v in zip(entry.step, entry.std, strict=True)]
        _close(_scalars(acc, f"inspect/act_std/{name}"), want)
        hist = acc.Histograms(f"inspect/activations/{name}")
        assert [h.step for h in hist] == [s + 1 for s in entry.step]
        assert [h.histogram_value.bucket for h in hist] == [pytest.approx(c) for c in entry.hist]
    for name, entry in inspector.stats.params.items():
        _close(_scalars(acc, f"inspect/update_data_log10/{name}"),
               [(s + 1, v) for s, v in zip(entry.step, entry.update_data, strict=True) if v is not None])
    (text,) = acc.Tensors("findings/text_summary")
    written = text.tensor_proto.string_val[0].decode()
    findings = find_problems(inspector.stats)
    assert all(f.rule in written for f in findings) and (findings or written == "No problems found.")
    assert "config/text_summary" in tags["tensors"]
    hparams = acc.PluginTagToContent("hparams")
    assert b"train.lr" in hparams["_hparams_/session_start_info"]


def test_resume_continues_the_tensorboard_run_without_duplicates(tiny, tmp_path):
    from lmlab.inspector import Inspector

    # The inspector after the logger: each sample goes out one step late, still under its own step.
    logger = lg.TensorBoardLogger(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # checkpoints at 4 and 8, logs up to 10, then dies
        tiny(tmp_path, [logger, Inspector(every=3, probe_causality=False), Crash(10)]).fit()
    logger.writer.flush()
    before = _events(tmp_path / TENSORBOARD_DIR)
    assert [s for s, _ in _scalars(before, "train/loss")] == [2, 4, 6, 8, 10]
    assert [s for s, _ in _scalars(before, "inspect/act_std/head")] == [1, 4, 7]
    inspector = Inspector(every=3, probe_causality=False)
    resumed = tiny(tmp_path, [lg.TensorBoardLogger(tmp_path), inspector], resume=True)
    assert resumed.step == 8
    resumed.fit()
    acc = _events(tmp_path / TENSORBOARD_DIR)
    records = _metrics(tmp_path)
    assert [s for s, _ in _series(records, "loss")] == [2, 4, 6, 8, 10, 12]
    _close(_scalars(acc, "train/loss"), _series(records, "loss"))
    _close(_scalars(acc, "val/loss"), _series(records, "val_loss"))
    head = inspector.stats.layers["head"]
    assert head.step == [9]
    assert _scalars(acc, "inspect/act_std/head")[:3] == _scalars(before, "inspect/act_std/head")
    _close(_scalars(acc, "inspect/act_std/head")[3:], [(10, head.std[0])])


def _wandb_records(run_folder: Path):
    """The records of a W&B offline run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_folder.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += block - pos % block
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _wandb_run(run_folder: Path) -> tuple[str, dict[int, dict], dict]:
    deadline = time.monotonic() + 60  # W&B's service may still be writing the file after finish() returns
    while True:
        records = list(_wandb_records(run_folder))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    run_id, history, summary = "", {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = run_id or record.run.run_id
        elif kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history.setdefault(items["_step"], {}).update(items)
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): i.value_json for i in record.summary.update})
    return run_id, history, summary


def test_wandb_offline_run_holds_the_metrics_and_resumes_the_same_id(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from lmlab.inspector import Inspector, find_problems

    logger = lg.WandbLogger(tmp_path, {"train": {"lr": 1e-3}}, findings=find_problems)
    tiny(tmp_path, [Inspector(every=3), logger], steps=8).fit()
    first = logger.run_id
    resumed = tiny(tmp_path, [Inspector(every=3), lg.WandbLogger(tmp_path, findings=find_problems)], steps=12,
                   resume=True)
    assert resumed.step == 8
    resumed.fit()
    folders = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 2
    (id_a, hist_a, summary_a), (id_b, hist_b, _) = (_wandb_run(f) for f in folders)
    assert id_a == id_b == first
    assert max(hist_a) == 8 and min(hist_b) > 8  # the second session starts after the checkpoint
    history = {**hist_a, **hist_b}
    records = _metrics(tmp_path)
    for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("val_loss", "val/loss")):
        got = [(s, row[tag]) for s, row in sorted(history.items()) if tag in row]
        _close(got, _series(records, key))
    assert any(k.startswith("inspect/act_std/") for k in hist_a[1])  # the inspector's first sample
    assert "findings" in summary_a


def test_ladder_folder_has_one_run_per_rung(tmp_path):
    runs = []
    for name, scale in (("bigram", 1.0), ("gpt", 0.5)):
        run = tmp_path / "ladder" / name
        run.mkdir(parents=True)
        lines = [{"step": s, "loss": scale * 3 / s, "lr": 0.01, "grad_norm": 1.0, "tokens": 10} for s in (1, 2, 3)]
        lines += [{"step": 3, "val_loss": scale * 2.5, "val_tokens": 5}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4, "lo')
        runs.append(run)
    out = write_tensorboard_runs(runs, tmp_path / "tb")
    write_tensorboard_runs(runs, tmp_path / "tb")  # again: replaced, not doubled
    for run in runs:
        acc = _events(out / run.name)
        _close(_scalars(acc, "train/loss"), _series(_metrics_lenient(run), "loss"))
        _close(_scalars(acc, "val/loss"), _series(_metrics_lenient(run), "val_loss"))
    twins = [tmp_path / "a" / "run", tmp_path / "b" / "run"]  # compare a/run b/run: one folder each
    for twin, run in zip(twins, runs, strict=True):
        twin.mkdir(parents=True)
        (twin / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
    out = write_tensorboard_runs(twins, tmp_path / "tb2")
    assert _scalars(_events(out / "b" / "run"), "val/loss") == _scalars(_events(tmp_path / "tb" / "gpt"), "val/loss")


def _metrics_lenient(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.endswith("}")]


def test_config_names_and_factory(tmp_path):
    assert TrainConfig(log="tensorboard, wandb").log == "tensorboard, wandb"
    for bad in ("tensorbord", "wandb,wandb", "tensorboard,"):
        with pytest.raises(ConfigError, match="train.log"):
            TrainConfig(log=bad)
    made = lg.loggers_for(TrainConfig(log="tensorboard"), tmp_path, {"train": {}})
    assert [type(m) for m in made] == [lg.TensorBoardLogger] and lg.loggers_for(TrainConfig(), tmp_path, {}) == []


@pytest.mark.parametrize("name, module, extra", [("tensorboard", "torch.utils.tensorboard", "lmlab[tensorboard]"),
                                                 ("wandb", "wandb", "lmlab[wandb]")])
def test_a_missing_package_names_the_extra(tmp_path, monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    message = f"--log {name} needs the {name} package: pip install '{extra}'"
    with pytest.raises(MissingPackage, match=re.escape(message)):
        lg.loggers_for(TrainConfig(log=name), tmp_path, {})


def test_only_rank_zero_logs(tmp_path):
    logger = lg.TensorBoardLogger(tmp_path)
    other_rank = SimpleNamespace(parallel=SimpleNamespace(is_main=False), step=0, callbacks=[logger])
    logger.on_train_begin(other_rank)
    logger.on_step_end(other_rank, {"step": 1, "loss": 1.0, "lr": 0.1, "tokens_per_s": 5})
    logger.on_train_end(other_rank)
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_train_log_tensorboard_from_the_command_line(cli, tiny_names, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--data", str(tiny_names), "--model", "mlp", "--max-steps", "20", "--inspect-every",
                 "5", "--log", "tensorboard", "--out", str(run), "--set", "train.log_interval=5")
    assert result.returncode == 0, result.stderr
    acc = _events(run / TENSORBOARD_DIR)
    records = _metrics(run)
    _close(_scalars(acc, "train/loss"), _series(records, "loss"))
    _close(_scalars(acc, "val/loss"), _series(records, "val_loss"))
    assert [s for s, _ in _scalars(acc, "inspect/act_std/head")] == [1, 6, 11, 16]
    assert "findings/text_summary" in acc.Tags()["tensors"]


def test_tensorboard_logs_validation_bits_per_byte(tiny_names, tmp_path):
    """A char run on ASCII text predicts one byte a token (the boundary stands for the line break), so its
    bits per byte are its validation NLL in bits; the final point is summary.json's exact figure."""
    import math

    import lmlab

    run = lmlab.train({"data": {"source": str(tiny_names)}, "model": {"name": "mlp"},
                       "train": {"max_steps": 6, "eval_interval": 3, "log": "tensorboard", "threads": 1}},
                      out=tmp_path / "run", inspect=False)
    acc = _events(tmp_path / "run" / TENSORBOARD_DIR)
    _close(_scalars(acc, "val/bits_per_byte"), [(s, v / math.log(2)) for s, v in _scalars(acc, "val/loss")])
    assert _scalars(acc, "val/bits_per_byte")[-1][1] == pytest.approx(run.summary["bits_per_byte"]["val"], rel=1e-5)
