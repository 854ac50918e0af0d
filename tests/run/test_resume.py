"""Exact resume: a run killed with SIGKILL and resumed with --resume ends bitwise equal to one that never
stopped (weights and metrics.jsonl, on CPU); Ctrl-C / SIGTERM saves a checkpoint and says how to resume;
the same seed, data and config give the same metrics.jsonl (test_checkpoint_safety.py checks that
in-process)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    # One thread: on a shared 2-core machine, torch's thread pool makes tiny models ~10x slower.
    return dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), stdin=subprocess.DEVNULL)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmlab", *args], check=False, capture_output=True, text=True,
                          env=cli_env(), stdin=subprocess.DEVNULL, timeout=300)


def checkpoint_step(run_dir: Path) -> int | None:
    try:
        state = torch.load(run_dir / "trainer_state.pt", weights_only=True)
    except Exception:  # noqa: BLE001 -- not written yet, or being replaced right now
        return None
    return state["step"]


def assert_same_run(a: Path, b: Path) -> None:
    weights_a = safetensors.torch.load_file(a / "model.safetensors")
    weights_b = safetensors.torch.load_file(b / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def kill_after_checkpoint(args: list[str], run_dir: Path, target: int, rng: random.Random,
                          signum: int = signal.SIGKILL) -> int:
    """Start a run, wait until it has checkpointed step `target` or later, let it go on for a random while,
    send it `signum` (SIGKILL unless told). Returns the step of the checkpoint it left behind."""
    proc = start_cli(*args)
    try:
        deadline = time.monotonic() + 120
        while (checkpoint_step(run_dir) or 0) < target:
            assert proc.poll() is None, f"the run ended before step {target}: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, f"no checkpoint at step {target} within 120 s"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()
    # SIGINT and SIGTERM: the run saves its state and exits 130, saying how to resume
    expected = -signal.SIGKILL if signum == signal.SIGKILL else 130
    assert proc.returncode == expected, f"the run ended before it could be stopped ({proc.returncode}): {stderr}"
    return checkpoint_step(run_dir)


RESUME_CASES = {
    # lines mode, a dropout MLP: the torch RNG (dropout) and the data generator both matter
    "lines-mlp-dropout": ["--model", "mlp", "--set", "model.dropout=0.3", "--set", "model.n_hidden=32",
                          "--set", "train.batch_size=8"],
    # stream mode: random windows into one long text
    "stream-mlp": ["--model", "mlp", "--mode", "stream", "--set", "data.block_size=16",
                   "--set", "model.dropout=0.1", "--set", "model.n_hidden=32", "--set", "train.batch_size=8"],
}


@pytest.mark.parametrize("case", [
    "lines-mlp-dropout",
    # ~25 s on a loaded 2-core machine; stream-mode resume is also checked in-process (test_checkpoint_safety)
    pytest.param("stream-mlp", marks=pytest.mark.slow),
])
def test_sigkill_then_resume_is_bitwise_equal(case, tiny_names, tmp_path):
    max_steps, rng = 400, random.Random(case)
    common = ["train", "--data", str(tiny_names), "--max-steps", str(max_steps), "--seed", "7",
              "--set", "train.eval_interval=60", "--set", "train.checkpoint_interval=25",
              "--set", "train.log_interval=5", *RESUME_CASES[case]]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = run_cli(*common, "--out", str(straight))
    assert done.returncode == 0, done.stderr

    step = kill_after_checkpoint([*common, "--out", str(killed)], killed, rng.randrange(25, 250, 25), rng)
    assert 25 <= step < max_steps
    resumed = run_cli(*common, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed} at step {step}" in resumed.stderr
    assert_same_run(straight, killed)


# SIGHUP: the terminal or ssh session closed; it would otherwise end the process with nothing saved
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tiny_names, tmp_path, signum):
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_names), "--model", "mlp", "--max-steps", "100000",
            "--set", "train.eval_interval=50000", "--set", "model.dropout=0.2", "--out", str(out)]
    proc = start_cli(*args)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file():  # training has begun (the first log line is out)
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signum)  # Ctrl-C (SIGINT) takes the same path
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at step ") and f"lmlab train --out {out} --resume" in last
    step = int(last.split()[3].rstrip(";"))
    assert 0 < step < 100000 and checkpoint_step(out) == step
    # No evaluation at the interrupted step: the metrics end where an uninterrupted run's would be
    assert all('"val_loss"' not in line for line in (out / "metrics.jsonl").read_text().splitlines())

    resumed = run_cli("train", "--out", str(out), "--resume", "--max-steps", str(step + 20))
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {step}" in resumed.stderr and f"after {step + 20} steps" in resumed.stdout


def assert_same_files(a: Path, b: Path) -> None:
    """Byte for byte: the weights, the early-stopping's best weights, the metrics and the run's own files;
    the trainer state tensor for tensor (it also holds the wall-clock time trained)."""
    assert_same_run(a, b)
    for name in ("model.safetensors", "metrics.jsonl", "config.json", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    best_a = sorted(p.name for p in (a / "checkpoints").glob("*"))
    assert best_a == sorted(p.name for p in (b / "checkpoints").glob("*"))
    for name in best_a:
        assert (a / "checkpoints" / name).read_bytes() == (b / "checkpoints" / name).read_bytes(), name
    state_a, state_b = (torch.load(p / "trainer_state.pt", weights_only=True) for p in (a, b))
    assert state_a["step"] == state_b["step"] and state_a["callbacks"] == state_b["callbacks"]
    for group_a, group_b in zip(state_a["optimizer"]["state"].values(), state_b["optimizer"]["state"].values(),
                                strict=True):
        for key in group_a:
            assert torch.equal(group_a[key], group_b[key]), key


# The default GPT recipe (weight average, early stopping that keeps the best weights, the inspector), at a
# size and evaluation interval where early stopping restores weights from before the last step: it stops at
# step 115 with the best weights of step 75 (evaluations inside the 30-step warm-up count for no patience).
EARLY_STOPPING_GPT = ["--model", "gpt-nano", "--max-steps", "300", "--seed", "7", "--set", "train.eval_interval=5",
                      "--set", "train.checkpoint_interval=5", "--set", "train.log_interval=5"]


@pytest.fixture(scope="module")
def straight_early_stopping_run(tmp_path_factory) -> tuple[Path, Path]:
    """(the data, a run of EARLY_STOPPING_GPT that was never stopped)."""
    folder = tmp_path_factory.mktemp("early-stopping")
    data = folder / "names.txt"
    rng = random.Random(0)  # the tiny_names fixture's names: module-scoped, made here
    syllables = ["ka", "mi", "lo", "ra", "en", "to", "sa", "li", "na", "ve"]
    names = {"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(400)}
    data.write_text("\n".join(sorted(names)[:200]) + "\n", encoding="utf-8")
    done = run_cli("train", "--data", str(data), *EARLY_STOPPING_GPT, "--out", str(folder / "straight"))
    assert done.returncode == 0, done.stderr
    assert "stopped early at step 115" in done.stdout and "from step 75" in done.stdout, done.stdout
    return data, folder / "straight"


@pytest.mark.parametrize(("signum", "target"), [
    (signal.SIGINT, 80),  # after the best step: ending the run here would restore step 75's weights
    # ~70 s each on a loaded 2-core machine: SIGTERM takes SIGINT's path, kill -9 is also tested above
    pytest.param(signal.SIGTERM, 60, marks=pytest.mark.slow),  # before the best step
    pytest.param(signal.SIGKILL, 80, marks=pytest.mark.slow),
], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_stopped_with_early_stopping_on_resumes_to_identical_files(straight_early_stopping_run, signum, target,
                                                                    tmp_path):
    data, straight = straight_early_stopping_run
    args = ["train", "--data", str(data), *EARLY_STOPPING_GPT, "--out", str(tmp_path / "run")]
    step = kill_after_checkpoint(args, tmp_path / "run", target, random.Random(target), signum)
    assert target <= step < 90
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {step}" in resumed.stderr
    assert_same_files(straight, tmp_path / "run")
