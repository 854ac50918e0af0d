"""Faults, round 2 (issue 13): bad numbers, damaged run files, unsafe prepared data, late NUL bytes, stream-mode
memory and streamed sampling. Each bad input gives one line on stderr and exit status 2, and leaves the run
it was pointed at unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import lmlab
from lmlab.cli import main
from lmlab.config import DataConfig, TrainConfig, build_config
from lmlab.data.shard_writer import PrepareOptions, prepare_shards
from lmlab.data.shards import open_shards
from lmlab.data.sources import read_text_file
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.run.data import prepare_data
from lmlab.training.checkpoint.checks import check_run_config_dict
from lmlab.training.memory import check_step_memory, step_memory

NAMES = sorted({a + b + c for a in ("ka", "mi", "lo") for b in ("ra", "en", "to") for c in ("", "sa", "li")})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny MLP run with a summary, trained in-process."""
    root = tmp_path_factory.mktemp("trained")
    data_file = root / "names.txt"
    data_file.write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    run_dir = root / "run"
    lmlab.train({"data": {"source": str(data_file)}, "model": {"name": "mlp", "n_hidden": 16},
                 "train": {"max_steps": 4, "eval_interval": 2, "device": "cpu"}}, out=run_dir, inspect=False)
    return run_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run and of its data."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    shutil.copy(trained.parent / "names.txt", tmp_path / "names.txt")
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["source"] = str(tmp_path / "names.txt")
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return run_dir


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    logging.root.handlers.clear()
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    finally:
        logging.root.handlers.clear()
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys, command: str, *argv: str) -> str:
    code, _, err = run_main(capsys, "-q", command, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"lmlab {command}: error: "), lines[0]
    return lines[0]


# -- (a) bad numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "message"), [
    ("train.lr=nan", "train.lr must be a finite number, got 'nan'"),
    ("train.lr=inf", "train.lr must be a finite number, got 'inf'"),
    ("train.budget=inf", "train.budget takes a number and its unit"),
    ("data.val_fraction=nan", "data.val_fraction must be a finite number"),
    ("model.dropout=nan", "model.dropout must be a finite number"),
    ("train.batch_size=1e9", "train.batch_size must be at most 1,048,576, got 1,000,000,000"),
    ("train.grad_accum_steps=1e9", "train.grad_accum_steps must be at most 4,096, got 1,000,000,000"),
    ("train.seed=1e30", "train.seed must be in [0, 2**63)"),
    ("train.seed=-1", "train.seed must be in [0, 2**63)"),
])
def test_bad_numbers_give_one_line(setting, message, tmp_path, capsys):
    data = tmp_path / "names.txt"
    data.write_text("\n".join(NAMES), encoding="utf-8")
    out = tmp_path / "new"
    line = one_line(capsys, "train", "--data", str(data), "--max-steps", "2", "--out", str(out), "--set", setting)
    assert message in line
    assert not out.exists()


def test_every_float_is_checked_in_the_library_too():
    """Configs built in code skip the CLI's parsing; __post_init__ catches them all the same."""
    for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "peak_tflops", "ema_decay"):
        with pytest.raises(ConfigError, match=f"train.{name} must be a finite number"):
            TrainConfig(**{name: float("nan")})
    with pytest.raises(ConfigError, match="data.test_fraction must be a finite number"):
        DataConfig(test_fraction=float("inf"))
    with pytest.raises(ConfigError, match="train.lr must be a finite number"):
        build_config(TrainConfig, {"lr": 10**400}, "train")  # an int too large for a float
    assert TrainConfig(seed=2**63 - 1).seed == 2**63 - 1


def test_step_memory_is_checked_against_the_machine():
    config = TrainConfig(batch_size=4096)
    needed = step_memory(config, block_size=1024, vocab_size=50_000)
    # an evaluation batch (4x) holds its logits twice, more than a training step's three copies: ~6 TiB
    assert needed == 4 * 4096 * 1024 * 50_000 * 4 * 2 + 4096 * 1024 * 16
    with pytest.raises(ConfigError, match=r"needs at least .* GiB per step, more than the 1.0 GiB available; "
                                          "lower train.batch_size"):
        check_step_memory(config, 1024, 50_000, available=2**30)
    check_step_memory(TrainConfig(batch_size=32), 128, 27, available=2**30)  # the default run fits
    check_step_memory(TrainConfig(batch_size=32), 128, 27)  # and fits this machine


def test_the_memory_check_counts_the_activations_a_model_saves_for_backward():
    """A small vocabulary makes the logits cheap; a wide model's saved activations are what a huge batch
    cannot hold (gpt-small at batch 1e6 was killed by the kernel at 21.9 GB before it was counted)."""
    import torch

    from lmlab.models import REGISTRY
    from lmlab.training.memory import activation_bytes

    config = REGISTRY["gpt-small"].config_cls(vocab_size=27, block_size=13)
    with torch.device("meta"):
        net = REGISTRY["gpt-small"].model_cls(config)
    per_example = activation_bytes(net, 13)
    # at least the residual stream of every layer, kept for its norm: 13 tokens x 384 floats x 6 layers
    assert 13 * 384 * 4 * 6 < per_example < 13 * 384 * 4 * 6 * 100
    huge = TrainConfig(batch_size=1_000_000)
    assert step_memory(huge, 13, 27, activations=per_example) > 10**6 * per_example
    with pytest.raises(ConfigError, match="lower train.batch_size"):
        check_step_memory(huge, 13, 27, available=24 * 2**30, activations=per_example)
    check_step_memory(huge, 13, 27, available=24 * 2**30)  # the logits alone (6 GiB) would have passed


def test_sample_seed_out_of_range(run, capsys):
    assert "--seed must be in [0, 2**63), got 10000000000000000000000000000000" in one_line(
        capsys, "sample", str(run), "--seed", str(10**31))


# -- (b) damaged run files ---------------------------------------------------------------------------------

def nan_weights(run: Path) -> None:
    weights = safetensors.torch.load_file(str(run / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name][0] = float("nan")
    safetensors.torch.save_file(weights, str(run / "model.safetensors"), metadata={"step": "4"})


@pytest.mark.parametrize("command", ["eval", "sample", "train"])
def test_nan_weights_are_refused_on_load(command, run, capsys):
    nan_weights(run)
    before = snapshot(run)
    argv = ["--resume", "--out", str(run), "--max-steps", "6"] if command == "train" else [str(run)]
    line = one_line(capsys, command, *argv)
    assert "model.safetensors: the weights hold NaN or inf" in line and "the file is damaged" in line
    assert snapshot(run) == before


def edit_state(run: Path, edit) -> None:
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    edit(state)
    torch.save(state, run / "trainer_state.pt")


def _set(keys, value):
    def edit(state):
        target = state
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value
    return edit


STATES = {
    "torch rng of the wrong size": (_set(["rng", "torch"], torch.zeros(7, dtype=torch.uint8)),
                                    "the saved random-number state is damaged"),
    "data rng not a tensor": (_set(["rng", "data"], [1, 2, 3]), "the saved random-number state is damaged"),
    "python rng too short": (_set(["rng", "python"], (3, [1, 2, 3], None)), "random-number state is damaged"),
    "numpy rng of another kind": (_set(["rng", "numpy"], ["PCG64", [1], 0, 0, 0.0]),
                                  "random-number state is damaged"),
    "rng not a dict": (_set(["rng"], "seed"), "random-number state is damaged"),
    "step a string": (_set(["step"], "4"), "damaged trainer state (step is '4', not a count)"),
    "optimizer moment of another shape": (
        _set(["optimizer", "state", 0, "exp_avg"], torch.zeros(3)),
        "the saved optimizer state does not fit this model (exp_avg of parameter 0 has shape (3,)"),
    "optimizer for fewer parameters": (
        _set(["optimizer", "param_groups", 0, "params"], lambda p: p[:-1]),
        "the saved optimizer state does not fit this model (it is for"),
    "optimizer state not a dict": (_set(["optimizer"], ["adamw"]), "the optimizer state is not a state dict"),
    "callbacks not JSON": (_set(["callbacks"], "{broken"), "the callbacks' states are not JSON of states"),
    "a callback state not a dict": (_set(["callbacks"], json.dumps({"EarlyStopping": 3})),
                                    "the callbacks' states are not JSON of states"),
    "callback state of the wrong type": (_set(["callbacks"], json.dumps([{"best": "low", "wait": 0}])),
                                         "a callback's best is 'low'"),
    "callback kept list damaged": (_set(["callbacks"], json.dumps([{"kept": [[0.5]]}])), "a callback's kept"),
}


@pytest.mark.parametrize("row", list(STATES))
def test_damaged_trainer_state_gives_one_line(row, run, capsys):
    edit, message = STATES[row]
    edit_state(run, edit)
    before = snapshot(run)
    line = one_line(capsys, "train", "--resume", "--out", str(run), "--max-steps", "6")
    assert "trainer_state.pt" in line and message in line, line
    assert snapshot(run) == before


def test_an_undamaged_state_still_resumes(run, capsys):
    edit_state(run, lambda state: None)  # a re-save changes nothing that matters
    code, _, err = run_main(capsys, "-q", "train", "--resume", "--out", str(run), "--max-steps", "6",
                            "--no-inspect")
    assert code == 0, err


@pytest.mark.parametrize(("config", "message"), [
    ([1, 2], "corrupted config (a JSON list, not an object)"),
    ({"model": None}, 'corrupted config ("model" is null, not an object)'),
    ({"data": "names"}, 'corrupted config ("data" is "names", not an object)'),
    ({"model": {"name": "mlp", "block_size": "16"}}, "model.block_size is '16'"),
])
def test_run_config_of_the_wrong_shape(config, message, tmp_path):
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_run_config_dict(config, tmp_path / "config.json")
    good = {"data": {}, "model": {"name": "mlp", "block_size": 16}, "train": {}}
    assert check_run_config_dict(good, tmp_path / "config.json") is good


@pytest.mark.parametrize(("config", "message"), [
    ("[1, 2]", "config.json: corrupted config (a JSON list, not an object)"),
    ('{"model": null}', 'config.json: corrupted config ("model" is null, not an object)'),
])
@pytest.mark.parametrize("command", ["eval", "sample", "export"])
def test_damaged_config_json_gives_one_line(config, message, command, run, tmp_path, capsys):
    (run / "config.json").write_text(config)
    before = snapshot(run)
    argv = [str(run), str(tmp_path / "hf")] if command == "export" else [str(run)]
    assert message in one_line(capsys, command, *argv)
    assert snapshot(run) == before and not (tmp_path / "hf").exists()


COMPARE = {
    "metrics not JSON": ("metrics.jsonl", "{\"step\": 1, \"val\nloss\": 2}\n", "metrics.jsonl:1: not a JSON record"),
    "metrics a list": ("metrics.jsonl", "[1, 2]\n", "metrics.jsonl:1: not a JSON object"),
    "metrics step a string": ("metrics.jsonl", '{"step": "x", "val_loss": 2.0}\n', "is not a number"),
    "metrics binary": ("metrics.jsonl", b"\xff\xfe\x00garbage", "not UTF-8 text"),
    "summary a list": ("summary.json", "[]", "corrupted summary (a JSON list, not an object)"),
    "summary nll a string": ("summary.json", '{"nll": "low"}', "nll is not a number per split"),
    "summary steps a string": ("summary.json", '{"nll": {}, "steps": "many"}', "steps is 'many'"),
    "summary not JSON": ("summary.json", "{", "corrupted summary"),
    "config model null": ("config.json", '{"model": null}', "corrupted config"),
}


@pytest.mark.parametrize("row", list(COMPARE))
def test_compare_skips_a_damaged_run_and_compares_the_others(row, run, trained, tmp_path, capsys):
    name, content, message = COMPARE[row]
    (run / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out, err = run_main(capsys, "compare", str(trained), str(run), "--plot", "")
    assert code == 0, err
    assert err.count("\n") == 1 and "skipping a run:" in err and message in err, err
    assert str(trained.name) in out and out.count("mlp") == 1
    # alone, the damaged run is the error
    line = one_line(capsys, "compare", str(run), "--plot", "")
    assert message in line


# -- (c) prepared data -------------------------------------------------------------------------------------

@pytest.fixture
def prepared(tmp_path) -> Path:
    source = tmp_path / "corpus.txt"
    source.write_text("".join(f"line {i}: the quick brown fox.\n" for i in range(60)), encoding="utf-8")
    prepare_shards(PrepareOptions(source=str(source), out=str(tmp_path / "prep")))
    return tmp_path / "prep"


@pytest.mark.parametrize("name", ["../corpus.txt", "/etc/passwd", "sub/../../x.bin", "", 7])
def test_shard_names_must_stay_inside_the_folder(prepared, name):
    meta = json.loads((prepared / "meta.json").read_text())
    meta["splits"]["val"]["file"] = name
    (prepared / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="is not a file name inside"):
        open_shards(prepared, 8)


def test_token_ids_beyond_the_vocabulary_are_caught_on_open(prepared, tmp_path, capsys):
    meta = json.loads((prepared / "meta.json").read_text())
    open_shards(prepared, 8)  # as written, every id is inside
    with pytest.raises(DataError, match="outside the vocabulary of 5"):
        open_shards(prepared, 8, vocab_size=5)  # a smaller tokenizer than meta.json says
    ids = np.fromfile(prepared / "test.bin", dtype=np.uint16)
    ids[-1] = meta["vocab_size"]
    ids.tofile(prepared / "test.bin")
    with pytest.raises(DataError, match=f"test.bin: token id {meta['vocab_size']} is outside the vocabulary"):
        open_shards(prepared, 8)
    line = one_line(capsys, "train", "--data", str(prepared), "--max-steps", "1", "--out", str(tmp_path / "r"),
                    "--set", "data.block_size=8")
    assert "is outside the vocabulary" in line


# -- (d) NUL bytes anywhere --------------------------------------------------------------------------------

def test_a_late_nul_byte_is_binary(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes(b"hello world\n" * 5000 + b"\x00tail\n")
    with pytest.raises(DataError, match=r"binary file \(it contains NUL bytes, the first at byte 60,000\)"):
        read_text_file(path)
    wide = tmp_path / "wide.txt"
    wide.write_text("hello\nworld\n", encoding="utf-16")
    assert read_text_file(wide, "utf-16") == "hello\nworld\n"  # NUL bytes are how UTF-16 spells ASCII
    wide.write_text("hello\nwor\x00ld\n", encoding="utf-16")
    with pytest.raises(DataError, match="NUL characters"):
        read_text_file(wide, "utf-16")


# -- (e) stream mode encodes long lines in chunks ------------------------------------------------------------

@pytest.mark.parametrize(("kind", "vocab"), [("char", 0), ("word", 60), ("bpe", 300)])
def test_encode_to_tensor_equals_the_whole_encoding_on_one_long_line(kind, vocab):
    import random

    from lmlab.tokenizers import encode_to_tensor, fit_tokenizer, text_chunks

    rng = random.Random(0)
    words = ["the", "quick", "brown", "fox,", "jumps", "dog.", "  ", "héllo", "42", "it's", "\t", "a  b", "x\n y"]
    text = " ".join(rng.choice(words) for _ in range(3000)).replace("\n", "")  # one line, no break to cut at
    tokenizer = fit_tokenizer(kind, [text], vocab)
    assert len(list(text_chunks(text, 500))) > 10  # cut inside the line, so memory stays at one chunk
    ids = encode_to_tensor(tokenizer, text, chunk_chars=500)
    assert ids.dtype == torch.long and torch.equal(ids, torch.tensor(tokenizer(text).input_ids))


# -- (f) lmlab sample streams its samples -------------------------------------------------------------------

def test_iter_samples_batches_reproduce_sample_texts(run):
    from lmlab.run.folder import load_run
    from lmlab.sample import SampleOptions, batch_seed, iter_samples, sample_texts

    loaded = load_run(run)
    options = SampleOptions(num_samples=7, seed=3)
    batched = list(iter_samples(loaded, options, batch_size=3))
    assert len(batched) == 7 and batched == list(iter_samples(loaded, options, batch_size=3))
    assert batched[:3] == sample_texts(loaded, dataclasses.replace(options, num_samples=3))
    later = dataclasses.replace(options, num_samples=3, seed=batch_seed(3, 1))
    assert batched[3:6] == sample_texts(loaded, later)
    assert list(iter_samples(loaded, options, batch_size=64)) == sample_texts(loaded, options)  # one batch


def test_sample_prints_each_batch_before_generating_the_next(run, capsys, monkeypatch):
    import sys

    import lmlab.cli.finished
    import lmlab.sample

    printed_before_each_batch = []
    real = lmlab.sample.sample_texts

    def spy(*args, **kwargs):
        printed_before_each_batch.append(sys.stdout.getvalue().count("\n"))
        return real(*args, **kwargs)

    monkeypatch.setattr(lmlab.sample, "sample_texts", spy)
    monkeypatch.setattr(lmlab.cli.finished, "SAMPLE_BATCH", 3)
    code, out, err = run_main(capsys, "sample", str(run), "-n", "8", "--jsonl")
    assert code == 0, err
    assert printed_before_each_batch == [0, 3, 6]
    lines = [json.loads(line) for line in out.splitlines()]
    assert [list(r) for r in lines] == [["sample"]] * 8 + [["novelty"]]
    assert sum(lines[-1]["novelty"].values()) == 8


def test_sample_json_is_the_same_object_as_before(run, capsys):
    """--json streams its one object; the bytes equal json.dumps of the samples and novelty, computed the
    old way (all samples at once)."""
    from lmlab.run.folder import load_run
    from lmlab.sample import SampleOptions, novelty, sample_texts

    code, out, err = run_main(capsys, "sample", str(run), "-n", "5", "--seed", "4", "--json")
    assert code == 0, err
    loaded = load_run(run)
    samples = sample_texts(loaded, SampleOptions(num_samples=5, seed=4))
    expected = {"samples": samples, "novelty": novelty(samples, prepare_data(loaded.config.data).texts)}
    assert out == json.dumps(expected) + "\n"
    code, out, err = run_main(capsys, "sample", str(run), "-n", "5", "--seed", "4")
    assert code == 0 and out.splitlines() == samples and err.strip().endswith("new")


def test_optimizer_state_checked_against_the_optimizer_it_goes_into(tmp_path):
    """Resuming an AdamW run with train.optimizer=sgd: two saved groups, one in the optimizer."""
    from lmlab.training.checkpoint.checks import check_optimizer_state

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    params = list(model.parameters())
    adamw = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2]},
                               {"params": [p for p in params if p.dim() < 2]}])
    model(torch.ones(1, 3)).sum().backward()
    adamw.step()
    saved = adamw.state_dict()
    check_optimizer_state(saved, params, tmp_path / "s.pt", adamw)  # fits: matrices first, then vectors
    with pytest.raises(CheckpointError, match=r"groups of \[2, 2\] parameters, the optimizer has \[4\]"):
        check_optimizer_state(saved, params, tmp_path / "s.pt", torch.optim.SGD(params, lr=0.1))
    with pytest.raises(CheckpointError, match=r"exp_avg of parameter 0 has shape \(4, 3\), the parameter \(2, 4\)"):
        check_optimizer_state(saved, params[::-1], tmp_path / "s.pt")  # the same tensors, another model's order
