"""DDP and FSDP2 through torchrun on CPU (gloo): 2 processes match 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab.training.distributed import Parallel

REPO = Path(__file__).resolve().parents[2]
COMMON = ["--device", "cpu", "--set", "train.eval_interval=3", "--set", "train.log_interval=1",
          "--set", "train.warmup_steps=0", "--set", "train.grad_accum_steps=2",
          "--set", "train.schedule=constant"]  # constant: the lr must not depend on max_steps across a resume


def lmlab(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [*launcher, "-m", "lmlab"] if nproc > 1 else [sys.executable, "-m", "lmlab"]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=300, check=False,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def test_single_process_parallel_is_a_no_op():
    p = Parallel()
    assert p.is_main and p.world_size == 1 and p.any(True) and not p.any(False)


def test_two_ranks_match_one_process_and_resume(tmp_path, tiny_names):
    """Lines mode (padded batches): each rank takes half of every global batch of 8; the all-reduced
    token-weighted loss and the averaged gradients must reproduce the single process, through a resume."""
    data = ["--data", str(tiny_names), "--model", "mlp", "--set", "model.n_hidden=16"]
    lmlab("train", *data, *COMMON, "--set", "train.batch_size=4", "--max-steps", "3", "--out",
          str(tmp_path / "ddp"), nproc=2)
    resumed = lmlab("train", *data, *COMMON, "--set", "train.batch_size=4", "--max-steps", "5", "--out",
                    str(tmp_path / "ddp"), "--resume", nproc=2)
    assert "resuming" in resumed.stderr
    lmlab("train", *data, *COMMON, "--set", "train.batch_size=8", "--max-steps", "5", "--out",
          str(tmp_path / "one"))
    two, one = losses(tmp_path / "ddp"), losses(tmp_path / "one")
    assert [s for s, _ in two] == [1, 2, 3, 4, 5] == [s for s, _ in one]  # rank 0 alone wrote the log
    assert [x for _, x in two] == pytest.approx([x for _, x in one], abs=1e-5)
    assert one[-1][1] < one[0][1] - 0.01  # it trained, so matching the losses means something


@pytest.mark.slow
def test_fsdp_gpt_matches_one_process_through_a_resume(tmp_path, tiny_names):
    """FSDP2 shards each GPT block and the tied embedding/head; gathered checkpoints resume exactly. Dropout
    off: each rank draws its own masks, so with it two ranks are not one process (the GPT's other training
    defaults, the weight average and early stopping, stay on)."""
    args = ["train", "--data", str(tiny_names), *COMMON, "--model", "gpt", "--set", "model.n_layer=2",
            "--set", "model.n_head=2", "--set", "model.n_embd=16", "--set", "model.dropout=0"]
    lmlab(*args, "--set", "train.batch_size=4", "--max-steps", "3", "--set", "train.parallel=fsdp",
          "--out", str(tmp_path / "fsdp"), nproc=2)
    lmlab(*args, "--set", "train.batch_size=4", "--max-steps", "5", "--set", "train.parallel=fsdp",
          "--out", str(tmp_path / "fsdp"), "--resume", nproc=2)
    lmlab(*args, "--set", "train.batch_size=8", "--max-steps", "5", "--out", str(tmp_path / "one"))
    two, one = losses(tmp_path / "fsdp"), losses(tmp_path / "one")
    assert [s for s, _ in two] == [1, 2, 3, 4, 5]
    assert [x for _, x in two] == pytest.approx([x for _, x in one], abs=1e-5)
    done = lmlab("eval", str(tmp_path / "fsdp"), "--json")  # the gathered weights load as a plain model
    assert json.loads(done.stdout)["nll"] == pytest.approx(json.loads(lmlab("eval", str(tmp_path / "one"),
                                                                             "--json").stdout)["nll"], abs=1e-4)


def test_seed_rank_gives_each_rank_its_own_dropout_stream():
    import torch

    draws = []
    for rank in (0, 1):
        Parallel(rank=rank, world_size=2).seed_rank(7)
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])
    torch.manual_seed(7)
    torch.rand(4)
    Parallel().seed_rank(7)  # one process: its stream goes on, not seeded again
    assert not torch.equal(torch.rand(4), draws[0])


@pytest.mark.parametrize("mode", [pytest.param("ddp", marks=pytest.mark.slow), "fsdp"])
def test_two_ranks_with_the_gpt_defaults_resume_byte_identically(tmp_path, tiny_names, mode):
    """The default GPT's training defaults (dropout, the weight average, early stopping keeping the best
    weights) on 2 processes: stopped after 2 steps and resumed, the run equals one never stopped, loss for
    loss and byte for byte, which needs every rank's own random state saved."""
    args = ["train", "--data", str(tiny_names), *COMMON, "--model", "gpt", "--set", "model.n_layer=1",
            "--set", "model.n_head=2", "--set", "model.n_embd=16", "--set", "train.batch_size=4",
            "--set", f"train.parallel={mode}", "--set", "train.eval_interval=1", "--set", "train.early_stopping=1",
            "--no-inspect"]
    lmlab(*args, "--max-steps", "2", "--out", str(tmp_path / "cut"), nproc=2)
    lmlab(*args, "--max-steps", "4", "--out", str(tmp_path / "cut"), "--resume", nproc=2)
    lmlab(*args, "--max-steps", "4", "--out", str(tmp_path / "whole"), nproc=2)
    cut, whole = losses(tmp_path / "cut"), losses(tmp_path / "whole")
    assert [s for s, _ in cut] == [1, 2, 3, 4] and cut == whole
    for name in ("model.safetensors", "summary.json"):
        a, b = (tmp_path / run / name for run in ("cut", "whole"))
        if name == "summary.json":
            a, b = (json.loads(p.read_text())["nll"] for p in (a, b))
            assert a == b
        else:
            assert a.read_bytes() == b.read_bytes()
