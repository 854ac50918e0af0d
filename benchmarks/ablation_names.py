"""The modern-block ablation at equal steps: GPT-2's block with one change each, the full Llama rung, and
Muon, each trained for the same number of steps (registry defaults otherwise), one `lmlab train` per rung.

    python3 benchmarks/ablation_names.py --steps 400 --out /tmp/ablation
    python3 benchmarks/ablation_names.py --rungs gpt,gpt+rope,llama,llama+muon --data names

A rung name ending in `+muon` is the named model with train.optimizer=muon. Prints one row per rung: test
NLL (nats/token), its delta against `gpt` with the standard error of that delta (paired over the test
examples: both rungs score the same names, so most of the names' own difficulty cancels), parameters, seconds.
`--summarize` skips training and reads the runs already in --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

RUNGS = "gpt,gpt+rope,gpt+rmsnorm,gpt+swiglu,gpt+qknorm,gpt+gqa,gpt+muon,llama,llama+muon"


def train(rung: str, args: argparse.Namespace) -> dict:
    model, muon = (rung.removesuffix("+muon"), True) if rung.endswith("+muon") else (rung, False)
    out = Path(args.out) / rung
    cmd = [sys.executable, "-m", "lmlab", "train", "--model", model, "--data", args.data, "--max-steps",
           str(args.steps), "--out", str(out), "--force", "--device", "cpu", "--seed", str(args.seed),
           "--set", f"train.eval_interval={max(args.steps // 2, 1)}", "--set", "train.threads=1"]
    if muon:
        cmd += ["--set", "train.optimizer=muon"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


@torch.no_grad()
def example_nll(run_dir: Path) -> tuple[torch.Tensor, int]:
    """Summed test NLL of each example (row) of the run's test split, and the number of predicted tokens."""
    from lmlab.training.run_data import prepare_data
    from lmlab.training.run_dir import load_run

    run = load_run(run_dir)
    run.model.eval()
    test = prepare_data(run.config.data, tokenizer=run.tokenizer).splits["test"]
    sums, tokens = [], 0
    for input_ids, labels in test.iter_batches(256):
        logits = run.model(input_ids).logits[:, :-1].float()  # (B, T-1, V)
        target = labels[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")  # (B, T-1)
        sums.append(nll.sum(dim=1))
        tokens += int((target != -100).sum())
    return torch.cat(sums), tokens


def paired_delta(run_dir: Path, base_dir: Path) -> tuple[float, float]:
    """(mean test NLL per token of run minus base, its standard error over examples)."""
    a, tokens = example_nll(run_dir)
    b, _ = example_nll(base_dir)
    diff = (a - b).double()
    return float(diff.sum() / tokens), float(diff.std() * math.sqrt(len(diff)) / tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", default=RUNGS)
    parser.add_argument("--data", default="names")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--summarize", action="store_true", help="only read the runs already in --out")
    args = parser.parse_args()
    out = Path(args.out)
    rungs = args.rungs.split(",")
    rows = {rung: json.loads((out / rung / "summary.json").read_text()) if args.summarize else train(rung, args)
            for rung in rungs}
    print(f"{'rung':<12} {'test':>7} {'delta vs gpt':>17} {'params':>9} {'seconds':>8}")
    for rung, summary in rows.items():
        delta = "-"
        if rung != "gpt" and "gpt" in rows:
            mean, se = paired_delta(out / rung, out / "gpt")
            delta = f"{mean:+.4f} ± {se:.4f}"
        print(f"{rung:<12} {summary['nll']['test']:7.4f} {delta:>17} {summary['parameters']:>9,} "
              f"{summary['train_seconds']:8.0f}")


if __name__ == "__main__":
    main()
