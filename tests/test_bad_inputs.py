"""The catalog of bad inputs: each gives one line on stderr, exit status 2, no traceback, and leaves every
file it could have touched as it was (an existing run unchanged, no new run directory)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.run.folder import RunDir
from lmlab.training.trainer import Trainer

# Made of a few syllables, so every split uses the same characters and no warning about unseen ones appears.
NAMES = sorted({a + b + c for a in ("ka", "mi", "lo") for b in ("ra", "en", "to") for c in ("", "sa", "li")})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny MLP run (trained in-process: a subprocess would cost a second torch import)."""
    root = tmp_path_factory.mktemp("trained")
    data_file = root / "names.txt"
    data_file.write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    config = resolve_config({"data": {"source": str(data_file)}, "model": {"name": "mlp", "n_hidden": 16},
                             "train": {"max_steps": 6, "eval_interval": 3, "device": "cpu"}})
    data = prepare_data(config.data)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, mode=data.mode))
    model = build_model(config, data.tokenizer, data.splits["train"].block_size)
    run_dir = root / "run"
    RunDir(run_dir).write_config(config, model.config.block_size)
    RunDir(run_dir).save_tokenizer(data.tokenizer)
    Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=run_dir).fit()
    return run_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run, with its own copy of the data it was trained on."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    data_file = tmp_path / "names.txt"
    shutil.copy(trained.parent / "names.txt", data_file)
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["source"] = str(data_file)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return run_dir


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def scribble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:64] = b"\xff" * 56  # inside the header / zip directory, where a bad byte cannot go unnoticed
    path.write_bytes(bytes(data))


def other_tokenizer(run: Path) -> None:
    vocab = json.loads((run / "tokenizer.json").read_text())
    vocab["vocab"] = [*vocab["vocab"], "#"]  # one token more: the saved weights no longer fit
    (run / "tokenizer.json").write_text(json.dumps(vocab))


def edit_config(run: Path, **model: int) -> None:
    """Sizes written into the run's config.json by hand (or by a hostile file)."""
    config = json.loads((run / "config.json").read_text())
    config["model"].update(model)
    (run / "config.json").write_text(json.dumps(config))


DEEP = "[" * 200_000 + "]" * 200_000  # past Python's recursion limit: json.loads raises RecursionError


def folder_with(path: Path, name: str, text: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)
    return str(path)


def prepared_with_meta(tmp: Path, run: Path, meta: str) -> str:
    """A prepared-data folder (the run's tokenizer) whose meta.json is `meta`."""
    folder_with(tmp / "prepared", "meta.json", meta)
    shutil.copy(run / "tokenizer.json", tmp / "prepared")
    return str(tmp / "prepared")


def edit_json(path: Path, **values) -> None:
    saved = json.loads(path.read_text())
    saved.update(values)
    path.write_text(json.dumps(saved))


def raw_pickle(path: Path) -> None:
    """A trainer state written by pickle alone (what a hostile file looks like): torch warns about it in
    two lines before weights_only refuses it."""
    import pickle  # the hostile input under test; lmlab itself never pickles

    path.write_bytes(pickle.dumps({"step": 6, "progress": {}, "rng": {}, "callbacks": "{}"}))


def retyped_weights(path: Path, dtype) -> None:
    """The run's weights stored in another dtype (int8, float64): a cast on load would change what they mean."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(path))
    save_file({k: v.to(dtype) for k, v in weights.items()}, str(path), metadata={"step": "6"})


def newer_trainer_state(path: Path) -> None:
    import torch

    state = torch.load(path, weights_only=True)
    state["format"] = 999
    torch.save(state, path)


def reorder_data(tmp: Path) -> None:
    """The run's data file edited after training: the same characters, other lines."""
    write(tmp / "names.txt", "\n".join([*NAMES[::-1], "kamisa"]) + "\n")


# Each row: (setup(tmp, run) -> argv, what the one line must say). `{run}` and `{new}` are filled in: an
# existing run that must stay unchanged, and a run directory that must not come into being.
T = ["train", "--max-steps", "2", "--out", "{new}"]
CATALOG = {
    "missing file": (lambda t, r: [*T, "--data", str(t / "nope.txt")], "no such file or folder"),
    "empty file": (lambda t, r: [*T, "--data", write(t / "e.txt", " \n\n")], "the file is empty"),
    "binary file": (lambda t, r: [*T, "--data", write(t / "b.bin", b"\x7fELF\x00\x01\x02")], "binary file"),
    "undecodable file": (lambda t, r: [*T, "--data", write(t / "l.txt", "jos\xe9\nren\xe9e\n".encode("latin-1"))],
                         "not valid utf-8 at byte 3; pass --encoding"),
    "unknown encoding": (lambda t, r: [*T, "--data", write(t / "a.txt", "ab\ncd\n"), "--encoding", "klingon"],
                         "unknown encoding 'klingon'"),
    "smaller than the context": (lambda t, r: [*T, "--data", write(t / "s.txt", "a tiny text\n"), "--mode",
                                               "stream"], "not more than the context of 128"),
    "a single example": (lambda t, r: [*T, "--data", write(t / "one.txt", "onlyone\n")],
                         "needs at least 2 examples, found 1"),
    "over-long line": (lambda t, r: [*T, "--data", write(t / "long.txt", "ab" * 600 + "\nx\n"), "--mode",
                                     "lines"], "line 1 has 1,200 characters, over data.max_line_chars=1000"),
    "unknown model": (lambda t, r: [*T, "--model", "gpt9"], "unknown model 'gpt9'; did you mean 'gpt'? choose one of"),
    "unknown data set": (lambda t, r: [*T, "--data", "shakespear"], "not an embedded data set (names,"),
    "missing config file": (lambda t, r: [*T, "--config", str(t / "c.toml")], "config file"),
    "--set unknown key": (lambda t, r: [*T, "--set", "train.lrr=1"],
                          "unknown key train.lrr; did you mean 'train.lr'? train takes:"),
    "--set unknown section": (lambda t, r: [*T, "--set", "optim.lr=1"], "unknown config section 'optim'"),
    "--set wrong type": (lambda t, r: [*T, "--set", "train.batch_size=big"], "train.batch_size: 'big' is not an"),
    "--set bad choice": (lambda t, r: [*T, "--set", "train.optimizer=adam"], "'adam' is not one of 'adamw'"),
    "--set out of range": (lambda t, r: [*T, "--set", "train.lr=-1"], "train.lr must be positive, got -1.0"),
    "--set model out of range": (lambda t, r: [*T, "--set", "model.dropout=1.5"], "model.dropout must be in"),
    "--set without =": (lambda t, r: [*T, "--set", "train.lr"], "--set takes SECTION.KEY=VALUE"),
    "--out holds a run": (lambda t, r: ["train", "--max-steps", "2", "--out", str(r)],
                          "already holds a run; pass --resume to continue it or --force"),
    "--resume without a run": (lambda t, r: ["train", "--resume", "--out", "{new}"], "no such run directory"),
    "truncated weights": (lambda t, r: truncate(r / "model.safetensors") or ["train", "--resume", "--out", str(r)],
                          "unreadable or corrupted checkpoint"),
    "corrupted weights": (lambda t, r: scribble(r / "model.safetensors") or ["sample", str(r)],
                          "unreadable or corrupted checkpoint"),
    "truncated trainer state": (lambda t, r: truncate(r / "trainer_state.pt") or
                                ["train", "--resume", "--out", str(r)], "corrupted trainer state"),
    "corrupted trainer state": (lambda t, r: scribble(r / "trainer_state.pt") or
                                ["train", "--resume", "--out", str(r)], "corrupted trainer state"),
    "corrupted tokenizer": (lambda t, r: write(r / "tokenizer.json", "{not json") and ["sample", str(r)],
                            "not an lmlab tokenizer file"),
    "tokenizer does not fit the weights": (lambda t, r: other_tokenizer(r) or ["sample", str(r)],
                                           "the weights do not fit this model"),
    "resume on other data": (lambda t, r: ["train", "--resume", "--out", str(r), "--data", write(
        t / "o.txt", "x\ny\n")], "--resume continues the run's own data and model"),
    "resume with another model": (lambda t, r: ["train", "--resume", "--out", str(r), "--model", "bigram"],
                                  "is a mlp run; --resume continues the run's own data and model"),
    "data edited: new characters": (lambda t, r: write(t / "names.txt", "\n".join([*NAMES, "ölaf"] * 2)) and
                                    ["train", "--resume", "--out", str(r)], "does not match the run's tokenizer"),
    "data edited: same characters": (lambda t, r: write(t / "names.txt", "\n".join(NAMES[::-1])) and
                                     ["train", "--resume", "--out", str(r)], "the training data differ"),
    "prompt outside the vocabulary": (lambda t, r: ["sample", str(r), "--prompt", "ZQ!"],
                                      "--prompt: 3 character(s) not in the vocabulary: '!', 'Q', 'Z'"),
    "--max-new-tokens 0": (lambda t, r: ["sample", str(r), "--max-new-tokens", "0"],
                           "--max-new-tokens must be at least 1, got 0"),
    "--max-new-tokens < 0": (lambda t, r: ["sample", str(r), "--max-new-tokens", "-4"],
                             "--max-new-tokens must be at least 1, got -4"),
    "negative temperature": (lambda t, r: ["sample", str(r), "--temperature", "-0.5"],
                             "temperature must be a finite number >= 0"),
    "top-p 0": (lambda t, r: ["sample", str(r), "--top-p", "0"], "top_p must be in (0, 1], got 0.0"),
    "top-p above 1": (lambda t, r: ["sample", str(r), "--top-p", "1.5"], "top_p must be in (0, 1], got 1.5"),
    "top-k 0": (lambda t, r: ["sample", str(r), "--top-k", "0"], "top_k must be at least 1, got 0"),
    "-n 0": (lambda t, r: ["sample", str(r), "-n", "0"], "-n must be at least 1"),
    "eval of no run": (lambda t, r: ["eval", str(t / "nowhere")], "no such run directory"),
    # Sizes: hard limits and the machine's memory, checked before anything is allocated
    "temperature nan": (lambda t, r: ["sample", str(r), "--temperature", "nan"],
                        "temperature must be a finite number >= 0, got nan"),
    "--max-new-tokens 1e9": (lambda t, r: ["sample", str(r), "--max-new-tokens", "1000000000"],
                             "max_new_tokens must be at most 1,000,000"),
    "bpe vocab_size 1e12": (lambda t, r: [*T, "--set", "data.tokenizer=bpe", "--set", "data.vocab_size=1e12"],
                            "data.vocab_size=1,000,000,000,000 is more than any lmlab model uses"),
    "data prepare --vocab-size 5e9": (lambda t, r: ["data", "prepare", "names", "--tokenizer", "bpe",
                                                    "--vocab-size", "5000000000", "--out", "{new}"],
                                      "--vocab-size=5,000,000,000 is more than any lmlab model uses"),
    "gpt n_layer 10000": (lambda t, r: [*T, "--model", "gpt-nano", "--set", "model.n_layer=10000"],
                          "model.n_layer=10,000 is larger than any lmlab model can use"),
    "gpt n_embd 1e6": (lambda t, r: [*T, "--model", "gpt-nano", "--set", "model.n_embd=1000000", "--set",
                                     "model.n_head=4"], "model.n_embd=1,000,000 is larger than any lmlab model"),
    "mlp n_hidden 1e9": (lambda t, r: [*T, "--model", "mlp", "--set", "model.n_hidden=1000000000"],
                         "model.n_hidden=1,000,000,000 is larger than any lmlab model can use"),
    "lstm n_hidden 1e6": (lambda t, r: [*T, "--model", "lstm", "--set", "model.n_hidden=1000000"],
                          "to train (weights, gradients, optimizer state), more than the"),
    "train.threads 100000": (lambda t, r: [*T, "--set", "train.threads=100000"],
                             "train.threads must be 'auto' or a number of threads in 0..4096"),
    "ngram n 1e6": (lambda t, r: [*T, "--model", "ngram", "--set", "model.n=1000000"],
                    "model.n=1,000,000 with"),
    "config.json block_size 1e12": (lambda t, r: edit_config(r, block_size=10**12) or ["eval", str(r)],
                                    "model.block_size=1,000,000,000,000 is larger than any lmlab model"),
    "config.json n_layer 1e4 x n_embd 1e6": (lambda t, r: edit_config(r, n_layer=10**4, n_embd=10**6) or
                                             ["sample", str(r)], "is larger than any lmlab model can use"),
    # A run's own data and steps
    "--resume to fewer steps": (lambda t, r: ["train", "--resume", "--out", str(r), "--max-steps", "3"],
                                "is at step 6, past --max-steps 3; resume to a later step"),
    "eval after the data changed": (lambda t, r: reorder_data(t) or ["eval", str(r)], "the data changed since"),
    "UTF-16 file": (lambda t, r: [*T, "--data", write(t / "u.txt", "anna\nbob\n".encode("utf-16"))],
                    "looks like UTF-16 text (NUL bytes between the characters); pass --encoding utf-16"),
    # JSON nested past Python's recursion limit, wherever lmlab reads JSON a user hands it (files.parse_json)
    "deep JSON: run config.json": (lambda t, r: write(r / "config.json", DEEP) and ["eval", str(r)],
                                   "config.json: corrupted config (nested too deeply)"),
    "deep JSON: a .jsonl data line": (lambda t, r: [*T, "--data", write(t / "d.jsonl", '{"text": "anna"}\n' + DEEP)],
                                      "line 2 is not valid JSON (nested too deeply)"),
    "deep JSON: prepared meta.json": (lambda t, r: [*T, "--data", prepared_with_meta(t, r, DEEP)],
                                      "not a prepared-data description (corrupted meta.json?) (nested too deeply)"),
    "deep JSON: HF config.json": (lambda t, r: ["import", folder_with(t / "hf", "config.json", DEEP), "--out",
                                                "{new}"], "config.json: not valid JSON (nested too deeply)"),
    "deep JSON: --config": (lambda t, r: [*T, "--config", write(t / "c.json", DEEP)], "nested too deeply"),
    "TOML key that is not a section": (lambda t, r: [*T, "--config", write(t / "c.toml", "model = 5\n")],
                                       "'model' must be a section (a table of key = value), got 5"),
    "config file section a list": (lambda t, r: [*T, "--config", write(t / "c.json", '{"train": [1]}')],
                                   "'train' must be a section"),
    # a trainer state that is a raw pickle: the refusal alone, torch's two-line warning silenced
    "raw pickle as trainer_state.pt": (lambda t, r: raw_pickle(r / "trainer_state.pt") or
                                       ["train", "--resume", "--out", str(r)], "corrupted trainer state"),
    # weights in a dtype the run did not save
    "int8 weights": (lambda t, r: retyped_weights(r / "model.safetensors", __import__("torch").int8) or
                     ["sample", str(r)], "is stored as I8, this model holds F32"),
    "float64 weights": (lambda t, r: retyped_weights(r / "model.safetensors", __import__("torch").float64) or
                        ["eval", str(r)], "is stored as F64, this model holds F32"),
    # files from a newer lmlab
    "config.json of a newer lmlab": (lambda t, r: edit_json(r / "config.json", lmlab_version="99.0.0") or
                                     ["eval", str(r)], "written by lmlab 99.0.0, newer than this lmlab 0.1.0"),
    "trainer state of a newer format": (lambda t, r: newer_trainer_state(r / "trainer_state.pt") or
                                        ["train", "--resume", "--out", str(r), "--max-steps", "8"],
                                        "trainer state format 999 is newer than this lmlab's (format 2)"),
    # config files take exact types; text becomes a number only from --set
    "config.json n_hidden a string": (lambda t, r: edit_config(r, n_hidden="16") or ["eval", str(r)],
                                      "model.n_hidden: '16' is not an int"),
    "--config lr a string": (lambda t, r: [*T, "--config", write(t / "c.json", '{"train": {"lr": "0.01"}}')],
                             "train.lr: '0.01' is not a float"),
    # compare: a path that is not a run is an error, not a run to skip
    "compare a missing run": (lambda t, r: ["compare", str(t / "no-such-run"), str(r)], "no such run directory"),
    "compare a folder that is no run": (lambda t, r: (t / "plain").mkdir() or ["compare", str(r), str(t / "plain")],
                                        "not an lmlab run"),
    # every count a user gives is bounded before work starts (errors.check_count)
    "--seeds 1e8": (lambda t, r: [*T, "--seeds", "100000000"], "--seeds must be at most 1,000, got 100,000,000"),
    "sample -n 1e9": (lambda t, r: ["sample", str(r), "-n", "1000000000"], "-n must be at most 100,000"),
    "forecast --horizon 1e12": (lambda t, r: ["forecast", "--horizon", "1000000000000", "--out", "{new}"],
                                "--horizon must be at most 100,000, got 1,000,000,000,000"),
    "lr-find --num-iter 1e9": (lambda t, r: ["lr-find", "--num-iter", "1000000000"],
                               "--num-iter must be at most 100,000"),
    # a half-written prepared-data folder (data prepare killed): named, not read as a folder of text
    "half-written prepared folder": (lambda t, r: [*T, "--data", folder_with(t / "shards", "train.bin", "\0\0")],
                                     "a half-written prepared-data folder (lmlab data prepare did not finish)"),
}


def snapshot(folder: Path) -> dict[str, str]:
    """Every run file's hash. RUN/.lock is left out: a writer creates it to take the lock, and it holds
    nothing of the run."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.name != ".lock"}


def run_main(capsys, *argv: str) -> tuple[int, str]:
    """`lmlab ARGV` in this process: the catalog has ~40 rows, and a subprocess each would cost ~40 torch
    imports. The same path as the command (main -> subcommand -> LmlabError -> one line, status 2); a few
    rows also run as real subprocesses below."""
    logging.root.handlers.clear()  # main configures logging once per process, onto this test's stderr
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    finally:
        logging.root.handlers.clear()
    return code, capsys.readouterr().err


def check_row(row: str, tmp_path: Path, run: Path, call) -> None:
    setup, message = CATALOG[row]
    new = tmp_path / "new-run"
    argv = [a.replace("{new}", str(new)) for a in setup(tmp_path, run)]
    before = snapshot(run)
    code, stderr = call("-q", *argv)  # -q: progress lines off, warnings and errors on
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"lmlab {argv[0]}: error: ") and message in lines[0], lines[0]
    assert snapshot(run) == before
    assert not new.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("row", list(CATALOG))
def test_bad_input_gives_one_line_and_exit_2(row, run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_row(row, tmp_path, run, lambda *argv: run_main(capsys, *argv))


@pytest.mark.parametrize("row", ["undecodable file", "truncated trainer state", "top-p 0",
                                 "raw pickle as trainer_state.pt"])  # torch's warnings print only outside pytest
def test_bad_input_as_a_subprocess(row, run, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def call(*argv):
        result = cli(*argv, cwd=tmp_path)
        assert "Traceback" not in result.stderr
        return result.returncode, result.stderr

    check_row(row, tmp_path, run, call)


@pytest.mark.parametrize("kind", ["folder", "fifo", "link to /dev/zero"])
def test_a_weights_file_that_is_no_file_is_named_for_what_it_is(kind, run, capsys):
    """Not "missing": a folder, a FIFO (reading it would hang) or a link to a device (it would never end)."""
    weights = run / "model.safetensors"
    weights.unlink()
    expected = {"folder": "model.safetensors is a folder", "fifo": "model.safetensors is a named pipe (FIFO)",
                "link to /dev/zero": "model.safetensors is a link to /dev/zero, a character device"}[kind]
    if kind == "folder":
        weights.mkdir()
    elif kind == "fifo":
        os.mkfifo(weights)
    else:
        weights.symlink_to("/dev/zero")
    code, stderr = run_main(capsys, "-q", "sample", str(run))
    assert code == 2 and stderr.count("\n") == 1 and expected in stderr, stderr


def test_a_run_config_naming_another_file_quotes_nothing_of_it(run, tmp_path, capsys):
    """A hostile config.json may name any readable file as its data: the error says what is wrong, not what
    the file holds (here, the field names of a JSON lines file)."""
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"key_SECRET": "x", "user_SECRET": "y"}\n' * 2)
    edit_json(run / "config.json", data={**json.loads((run / "config.json").read_text())["data"],
                                         "source": str(secret)})
    code, stderr = run_main(capsys, "-q", "eval", str(run))
    assert code == 2 and stderr.count("\n") == 1 and "no field 'text'" in stderr, stderr
    assert "SECRET" not in stderr


def test_latin1_file_trains_with_encoding(tmp_path, capsys):
    data = write(tmp_path / "l.txt", "\n".join(["josé", "renée", "françois", "zoë", *NAMES]).encode("latin-1"))
    code, stderr = run_main(capsys, "train", "--data", data, "--encoding", "latin-1", "--max-steps", "3",
                            "--out", str(tmp_path / "r"))
    assert code == 0, stderr
    assert "ç" in json.loads((tmp_path / "r" / "tokenizer.json").read_text(encoding="utf-8"))["vocab"]


def test_force_starts_over(run, capsys):
    code, stderr = run_main(capsys, "train", "--max-steps", "2", "--out", str(run), "--force",
                            "--data", json.loads((run / "config.json").read_text())["data"]["source"])
    assert code == 0, stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_divergence_stops_with_exit_2_and_keeps_the_checkpoint(run, capsys):
    """A planted NaN: an absurd learning rate drives the weights to inf within a few steps."""
    kept = {name: (run / name).read_bytes() for name in ("model.safetensors", "trainer_state.pt")}
    code, stderr = run_main(capsys, "-q", "train", "--resume", "--out", str(run), "--max-steps", "50",
                            "--set", "train.lr=1e38", "--set", "train.warmup_steps=0", "--set", "train.grad_clip=0")
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("lmlab train: error: loss or gradients were non-finite for 5 steps in a row")
    assert "the last good checkpoint is kept" in lines[-1]
    assert sum("non-finite loss or gradient, step skipped" in line for line in lines) == 5
    assert {name: (run / name).read_bytes() for name in kept} == kept
