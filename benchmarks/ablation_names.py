"""The modern-block ablation at equal steps: GPT-2's block with one change each, the full Llama rung, and
Muon, each trained for the same number of steps (registry defaults otherwise), one `lmlab train` per rung.

    python3 benchmarks/ablation_names.py --steps 400 --out /tmp/ablation
    python3 benchmarks/ablation_names.py --rungs gpt,gpt+rope,llama,llama+muon --data names

A rung name ending in `+muon` is the named model with train.optimizer=muon. Prints one row per rung: test
NLL (nats/token), its delta against `gpt`, parameters and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", default=RUNGS)
    parser.add_argument("--data", default="names")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", default="runs/ablation")
    args = parser.parse_args()
    rows = {rung: train(rung, args) for rung in args.rungs.split(",")}
    base = rows.get("gpt", {}).get("nll", {}).get("test")
    print(f"{'rung':<12} {'test':>7} {'delta':>7} {'params':>9} {'seconds':>8}")
    for rung, summary in rows.items():
        test = summary["nll"]["test"]
        delta = f"{test - base:+.4f}" if base is not None else "-"
        print(f"{rung:<12} {test:7.4f} {delta:>7} {summary['parameters']:>9,} {summary['train_seconds']:8.0f}")


if __name__ == "__main__":
    main()
