"""The run as a library object: lmlab.train / lmlab.load, the run folder's lock, and one pipeline for the
CLI, the Python API and the ladder (the same bytes whichever way a run is made)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from inspect_helpers import StopAt

import lmlab
from lmlab.cli import main
from lmlab.errors import CheckpointError, ConfigError
from lmlab.ladder import run_ladder
from lmlab.run.folder import RunDir, RunLocked
from lmlab.training.callbacks import Callback, ModelCheckpoint

REPO = Path(__file__).resolve().parents[2]
TINY_MLP = {"model": {"name": "mlp", "n_embd": 4, "n_hidden": 16},
            "train": {"max_steps": 20, "eval_interval": 5, "log_interval": 5, "batch_size": 16}}


def _config(source, **train):
    return {"data": {"source": str(source)}, "model": TINY_MLP["model"], "train": {**TINY_MLP["train"], **train}}


def _cli_args(source, out, *extra):
    return ["train", "--data", str(source), "--model", "mlp", "--out", str(out), "--no-inspect",
            "--set", "model.n_embd=4", "--set", "model.n_hidden=16", "--set", "train.eval_interval=5",
            "--set", "train.log_interval=5", "--set", "train.batch_size=16", *extra]


def test_python_train_and_resume_give_the_cli_bytes(tmp_path, tiny_names):
    api, cli = tmp_path / "api", tmp_path / "cli"
    first = lmlab.train(_config(tiny_names), out=api, inspect=False, callbacks=[StopAt(10)])
    assert first.step == 10 and first.summary["steps"] == 10
    run = lmlab.train({"train": {"max_steps": 20}}, out=api, resume=True, inspect=False)
    assert run.step == 20 and isinstance(run, lmlab.Run)
    assert main(_cli_args(tiny_names, cli, "--max-steps", "20")) == 0
    for name in ("metrics.jsonl", "model.safetensors"):
        assert (api / name).read_bytes() == (cli / name).read_bytes(), name


def test_a_ladder_rung_and_lmlab_train_give_the_same_metrics(tmp_path, tiny_names):
    overrides = {"model": TINY_MLP["model"], "train": {k: v for k, v in TINY_MLP["train"].items() if k != "max_steps"}}
    run_ladder(str(tiny_names), tmp_path / "ladder", budget="20steps", size="default", models=["mlp"],
               overrides=overrides)
    assert main(_cli_args(tiny_names, tmp_path / "cli", "--budget", "20steps")) == 0
    ladder = (tmp_path / "ladder" / "mlp" / "metrics.jsonl").read_bytes()
    assert ladder == (tmp_path / "cli" / "metrics.jsonl").read_bytes() and ladder.count(b"val_loss") == 4


def test_load_mirrors_the_cli(tmp_path, tiny_names, capsys):
    lmlab.train(_config(tiny_names), out=tmp_path / "run")
    run = lmlab.load(tmp_path / "run")
    assert run.step == 20 and run.config.model_name == "mlp" and not run.model.training
    assert run.summary["nll"]["val"] == pytest.approx(run.evaluate("val")["nll"], abs=1e-6)
    assert main(["eval", str(tmp_path / "run"), "--split", "test", "--json"]) == 0
    assert f'"nll": {run.evaluate("test")["nll"]}' in capsys.readouterr().out
    samples = run.sample(n=3, seed=7)
    assert samples == run.sample(n=3, seed=7) and len(samples) == 3
    assert [r["step"] for r in run.metrics if "val_loss" in r] == [5, 10, 15, 20]
    assert run.inspect() == run.findings  # recomputed from inspect.json: the same rules, the same findings


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 -- the README's own example
    assert (tmp_path / "hf-names" / "config.json").is_file()


def test_a_second_writer_is_refused_and_readers_are_not(tmp_path, tiny_names, capsys):
    lmlab.train(_config(tiny_names), out=tmp_path / "run", inspect=False)
    with RunDir(tmp_path / "run"):
        with pytest.raises(RunLocked, match=f"process {os.getpid()}"):
            RunDir(tmp_path / "run").lock()
        assert main(_cli_args(tiny_names, tmp_path / "run", "--force")) == 2
        assert "is in use by process" in capsys.readouterr().err
        assert lmlab.load(tmp_path / "run").evaluate("val")["tokens"] > 0  # a reader works on a live run
    RunDir(tmp_path / "run").lock().unlock()  # released


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    code = (f"from lmlab.run.folder import RunDir; held = RunDir({str(tmp_path)!r}).lock(); "
            "print('locked', flush=True); import time; time.sleep(60)")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLocked, match=f"process {holder.pid}"):
        RunDir(tmp_path).lock()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    RunDir(tmp_path).lock().unlock()


def test_a_failed_start_leaves_nothing_behind(tmp_path, tiny_names):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(_cli_args(empty, tmp_path / "new")) == 2
    assert not (tmp_path / "new").exists()


class _FailAt(Callback):
    def __init__(self, step):
        self.at = step

    def on_step_end(self, trainer, record):
        if trainer.step == self.at:
            raise RuntimeError("the machine failed")


def test_a_failed_resume_changes_no_run_file(tmp_path, tiny_names):
    lmlab.train(_config(tiny_names), out=tmp_path / "run", inspect=False)
    files = ("config.json", "tokenizer.json", "model.safetensors", "trainer_state.pt", "summary.json")
    before = {name: (tmp_path / "run" / name).read_bytes() for name in files}
    with pytest.raises(RuntimeError, match="the machine failed"):  # before the resumed run's first checkpoint
        lmlab.train({"train": {"max_steps": 40, "lr": 0.5}}, out=tmp_path / "run", resume=True, inspect=False,
                    callbacks=[_FailAt(23)])
    assert {name: (tmp_path / "run" / name).read_bytes() for name in files} == before
    assert lmlab.load(tmp_path / "run").config.train.lr != 0.5


def test_resume_without_a_checkpoint_says_how_to_start_over(tmp_path, tiny_names):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="start it over with --force"):
        lmlab.train({}, out=tmp_path / "run", resume=True)


def test_a_copied_run_resumes_in_its_own_folder(tmp_path, tiny_names):
    original, copy = tmp_path / "a", tmp_path / "b"
    lmlab.train(_config(tiny_names), out=original, inspect=False, callbacks=[ModelCheckpoint(save_top_k=1)])
    kept = sorted(p.name for p in (original / "checkpoints").iterdir())
    shutil.copytree(original, copy)
    lmlab.train({"train": {"max_steps": 40}}, out=copy, resume=True, inspect=False,
                callbacks=[ModelCheckpoint(save_top_k=1)])
    assert sorted(p.name for p in (original / "checkpoints").iterdir()) == kept  # the original is untouched
    assert len(list((copy / "checkpoints").iterdir())) == 1


def test_config_json_comes_before_a_new_runs_first_checkpoint_and_after_a_resumes(tmp_path, tiny_names):
    seen = []
    config_file = tmp_path / "run" / "config.json"

    class Look(Callback):
        def on_step_end(self, trainer, record):
            saved = json.loads(config_file.read_text()) if config_file.is_file() else None
            seen.append((trainer.step, saved and saved["train"]["max_steps"]))

    lmlab.train(_config(tiny_names, eval_interval=10), out=tmp_path / "run", inspect=False, callbacks=[Look()])
    # a kill just after the first checkpoint (step 10) must leave a run that resumes
    assert seen[0] == (1, 20)
    seen.clear()
    lmlab.train({"train": {"max_steps": 40}}, out=tmp_path / "run", resume=True, inspect=False, callbacks=[Look()])
    assert seen[8] == (29, 20) and seen[10] == (31, 40)  # the resumed run's first checkpoint is at step 30


def test_a_bad_config_fails_before_the_folder_is_touched(tmp_path):
    with pytest.raises(ConfigError, match="train.max_steps"):
        lmlab.train({"train": {"max_steps": 0}}, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="a config is a dict"):
        lmlab.train(["not", "a", "config"], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()



def test_an_environment_fault_is_one_line_naming_the_path(tmp_path, tiny_names, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(_cli_args(tiny_names, blocker / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmlab train: error: ") and str(blocker) in err[0]


def test_a_bug_is_one_line_unless_debugging(tmp_path, tiny_names, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr("lmlab.run.pipeline.train", broken)  # what `lmlab train` calls, through lmlab.run
    assert main(_cli_args(tiny_names, tmp_path / "run")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lmlab train: internal error: ZeroDivisionError: planted (re-run with LMLAB_DEBUG=1 for the "
                   "traceback)"]
    monkeypatch.setenv("LMLAB_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(_cli_args(tiny_names, tmp_path / "run"))


def test_a_taken_default_folder_is_said_at_once(tmp_path, monkeypatch, caplog):
    from lmlab.run.folder import default_run_dir

    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="lmlab")
    assert default_run_dir("gpt", "names") == Path("runs/gpt-names") and not caplog.messages
    (tmp_path / "runs" / "gpt-names").mkdir(parents=True)
    assert default_run_dir("gpt", "names") == Path("runs/gpt-names-2")
    assert caplog.messages == ["runs/gpt-names is taken; writing to runs/gpt-names-2 (--out picks the folder)"]
    (tmp_path / "runs" / "gpt-names-2").mkdir()
    assert default_run_dir("gpt", "names") == Path("runs/gpt-names-3")
    assert caplog.messages[-1] == ("runs/gpt-names to runs/gpt-names-2 are taken; writing to runs/gpt-names-3 "
                                   "(--out picks the folder)")


class RemoveFolder(Callback):
    """Deletes the run folder while training, as `rm -r` from another terminal would."""

    def __init__(self, folder: Path, step: int):
        self.folder, self.at = folder, step

    def on_step_end(self, trainer, *args, **kwargs) -> None:
        if trainer.step == self.at:
            shutil.rmtree(self.folder)


def test_a_run_folder_removed_while_training_stops_in_one_line_and_is_not_recreated(tmp_path, tiny_names, capsys):
    out = tmp_path / "run"
    with pytest.raises(CheckpointError, match="the run folder was removed while training; stopped, nothing written"):
        lmlab.train(_config(tiny_names, checkpoint_interval=10), out=out, inspect=False,
                    callbacks=[RemoveFolder(out, 3)])
    assert not out.exists()


def test_sighup_stops_a_run_as_sigint_and_sigterm_do():
    from lmlab.run.pipeline import STOP_SIGNALS

    assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} <= set(STOP_SIGNALS)
