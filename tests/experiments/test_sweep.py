"""lmlab sweep: the search space from --set, resuming after kill -9, workers sharing one SQLite study."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from lmlab.cli import main
from lmlab.config import load_config_file
from lmlab.errors import ConfigError
from lmlab.experiments.space import grid_points, split_sets
from lmlab.experiments.sweep import STUDY_NAME, SweepPlan, run_sweep, trial_config

REPO = Path(__file__).resolve().parents[2]



def test_lists_and_ranges_become_axes():
    axes, fixed = split_sets(["train.lr=1e-3,3e-3,1e-2", "model.n_embd=8:64:log", "train.max_steps=5",
                              "data.source=file.jsonl:text"], "mlp")
    assert fixed == ["train.max_steps=5", "data.source=file.jsonl:text"]
    lr, embd = axes
    assert lr.choices == (1e-3, 3e-3, 1e-2) and embd.integer and embd.log
    assert embd.grid(4) == (8, 16, 32, 64)
    assert len(grid_points(axes, 4)) == 12 and grid_points(axes, 4)[0] == {"train.lr": 1e-3, "model.n_embd": 8}
    for bad in ("train.lr=1e-2:1e-3", "train.lr=0:1:log", "train.bogus=1,2", "train.lr=1,1", "model.n_embd=a:b"):
        with pytest.raises(ConfigError):
            split_sets([bad], "mlp")


def test_equal_tokens_keeps_steps_times_batch():
    axes, _ = split_sets(["train.batch_size=16,64"], "mlp")
    plan = SweepPlan(base={"model": {"name": "mlp"}, "train": {"max_steps": 100, "batch_size": 32}}, axes=tuple(axes),
                     equal="tokens")
    assert [trial_config(plan, p)["train"]["max_steps"] for p in plan.points] == [200, 50]
    timed = SweepPlan(base={"model": {"name": "mlp"}, "train": {"budget": "5s"}}, axes=tuple(axes), equal="time")
    assert {trial_config(timed, p)["train"]["budget"] for p in timed.points} == {"5s"}
    assert len({trial_config(timed, p)["train"]["max_steps"] for p in timed.points}) == 1  # the budget decides
    with pytest.raises(ConfigError, match="--budget SECONDSs"):
        SweepPlan(base={"model": {"name": "mlp"}}, axes=tuple(axes), equal="time")
    with pytest.raises(ConfigError, match="not reproducible|--equal time"):  # a time budget must be meant
        SweepPlan(base={"model": {"name": "mlp"}, "train": {"budget": "5s"}}, axes=tuple(axes))
    # a work budget in the base (the GPT's default) gives every trial the same work, whatever it varies
    worked = SweepPlan(base={"model": {"name": "gpt"}}, axes=tuple(axes), equal="tokens")
    assert all(trial_config(worked, p)["train"].get("max_steps") is None for p in worked.points)


def _sweep_args(data, out, *extra):
    return ["sweep", "--data", str(data), "--model", "bigram", "--max-steps", "100", "--set", "train.lr=1,10",
            "--seeds", "2", "--out", str(out), *extra]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")


def test_kill_9_mid_sweep_then_the_same_command_keeps_every_finished_trial(tiny_names, tmp_path, cli, capsys):
    assert main(["-q", *_sweep_args(tiny_names, tmp_path / "whole")]) == 0  # the uninterrupted sweep
    reference = capsys.readouterr().out
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lmlab", *_sweep_args(tiny_names, out)]
    process = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = [out / "trial-0000" / f"seed-{s}" / "summary.json" for s in (1337, 1338)]
    started = out / "trial-0001" / "seed-1337"
    deadline = time.time() + 120
    while not (all(f.is_file() for f in finished) and started.is_dir()) and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert all(f.is_file() for f in finished) and not (started / "summary.json").is_file()
    kept = [f.stat().st_mtime_ns for f in finished]
    resumed = cli(*_sweep_args(tiny_names, out))
    assert resumed.returncode == 0, resumed.stderr
    assert [f.stat().st_mtime_ns for f in finished] == kept  # not trained again
    assert (out / "results.txt").read_text() == (tmp_path / "whole" / "results.txt").read_text()
    assert resumed.stdout.splitlines()[:4] == reference.splitlines()[:4]
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1  # the killed one, queued again
    best = load_config_file(out / "best.toml")
    assert best["train"]["lr"] == json.loads((out / "results.json").read_text())["rows"][0]["params"]["train.lr"]


def test_two_workers_on_one_sqlite_study_run_no_trial_twice(tiny_names, tmp_path):
    axes, _ = split_sets(["train.lr=1,2,4,8"], "bigram")
    plan = SweepPlan(base={"data": {"source": str(tiny_names)}, "model": {"name": "bigram"},
                           "train": {"max_steps": 10}}, axes=tuple(axes))
    report = run_sweep(plan, tmp_path / "sweep", workers=2)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    assert sorted(t.params["train.lr"] for t in complete) == [1, 2, 4, 8]
    assert len({t.user_attrs["folder"] for t in complete}) == 4
    assert sorted(p.name for p in (tmp_path / "sweep").glob("trial-*")) == [f"trial-{i:04d}" for i in range(4)]
    assert [r["mark"] for r in report["rows"]][0] == "*"


def test_random_search_reports_importances(tiny_names, tmp_path):
    axes, _ = split_sets(["train.lr=0.5:20:log", "train.momentum=0.5,0.9"], "bigram")
    plan = SweepPlan(base={"data": {"source": str(tiny_names)}, "model": {"name": "bigram"},
                           "train": {"max_steps": 10}}, axes=tuple(axes), search="random", trials=3)
    report = run_sweep(plan, tmp_path / "random")
    assert len(report["rows"]) == 3 and set(report["importances"]) == {"train.lr", "train.momentum"}
    assert "parameter importances" in (tmp_path / "random" / "results.txt").read_text()
    assert (tmp_path / "random" / "sweep.png").stat().st_size > 5000
    with pytest.raises(ConfigError, match="another sweep"):
        run_sweep(SweepPlan(base=plan.base, axes=plan.axes, search="random", trials=4), tmp_path / "random")


def test_bad_sweep_input_is_one_line_and_exit_2(tiny_names, tmp_path, capsys):
    for extra in (["--set", "train.lr=2:1"], ["--search", "random", "--set", "train.lr=1,2"],
                  ["--set", "train.lr=1,2", "--seeds", "0"], ["--set", "train.lr=1"], ["--experiment", "nope"]):
        assert main(["sweep", "--data", str(tiny_names), "--out", str(tmp_path / "bad"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err, err
    assert not (tmp_path / "bad").exists()


def test_without_optuna_a_sweep_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if lmlab[sweep] were not installed
    out = tmp_path / "sweep"
    code = main(["sweep", "--model", "bigram", "--set", "train.lr=1e-3,3e-3", "--max-steps", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["lmlab sweep: error: lmlab sweep keeps its study in Optuna: pip install 'lmlab[sweep]'"]
    assert not out.exists()


def test_a_sweeps_counts_are_bounded_before_anything_runs():
    """A few zeros too many (--trials, --grid-points, a grid of many axes) is refused at once."""
    axes, _ = split_sets(["train.lr=1e-4:1e-1:log"], "mlp")
    with pytest.raises(ConfigError, match="--trials must be at most 10,000, got 1,000,000,000"):
        SweepPlan(base={"model": {"name": "mlp"}}, axes=tuple(axes), search="random", trials=10**9)
    with pytest.raises(ConfigError, match="--grid-points must be at most 10,000"):
        SweepPlan(base={"model": {"name": "mlp"}}, axes=tuple(axes), grid_points=10**7)
    many, _ = split_sets(["train.lr=1e-4:1e-1", "train.weight_decay=0:0.5", "model.n_hidden=8:512"], "mlp")
    with pytest.raises(ConfigError, match="the grid's trials must be at most 10,000, got 1,000,000"):
        SweepPlan(base={"model": {"name": "mlp"}}, axes=tuple(many), grid_points=100)
