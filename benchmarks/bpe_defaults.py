"""Defaults for BPE data (issue 14): the default GPT's step time and tokens/s on a BPE vocabulary with the old
defaults (batch 128 x context 128, set explicitly) and with the ones lmlab now chooses (batch and context
left to the defaults), side by side in alternating rounds, with a char-vocabulary run of the same corpus at
the old defaults as the reference the choice aims for; then, optionally, the validation NLL each reaches in
the same time budget.

Each setting trains through the pipeline (`lmlab.train`) on one torch thread; a step's time is the median
gap between consecutive step ends (the first step, warm-up, left out). `uptime`'s load average is printed
beside every figure: the machine is shared.
Usage: python benchmarks/bpe_defaults.py [--text FILE] [--vocab 8192] [--rounds 2] [--budget 90]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import lmlab  # noqa: E402
from lmlab.training.callbacks import Callback  # noqa: E402


class StepClock(Callback):
    name = "step_clock"

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, trainer, record) -> None:
        self.ends.append(time.perf_counter())


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def timed(data: dict, out: Path, train: dict, steps: int) -> dict:
    """Median seconds a step and tokens/s of `steps` steps of the default GPT."""
    clock = StepClock()
    values = {"data": data, "model": {"name": "gpt"},
              "train": {"max_steps": steps, "eval_interval": 10**6, "threads": 1, "device": "cpu",
                        "eval_max_tokens": 2048, **train}}
    run = lmlab.train(values, out=out, force=True, inspect=False, callbacks=[clock])
    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]
    step = statistics.median(gaps)
    tokens = run.config.train.batch_size * (run.config.data.block_size - 1)
    return {"batch": run.config.train.batch_size, "context": run.config.data.block_size, "s_per_step": step,
            "tokens_per_s": tokens / step, "load": load()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--text", default="/work/shared/data/tinyshakespeare.txt")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of training for the NLL comparison "
                        "(0: skip it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lmlab.run.fit_defaults").setLevel(logging.INFO)
    tmp = Path(tempfile.mkdtemp(prefix="bpe_defaults_"))
    env = dict(os.environ, PYTHONPATH=sys.path[0], OMP_NUM_THREADS="1")
    for name, extra in (("bpe", ["--tokenizer", "bpe", "--vocab-size", str(args.vocab)]), ("char", [])):
        subprocess.run([sys.executable, "-m", "lmlab", "data", "prepare", args.text, "--out", str(tmp / name),
                        *extra], check=True, env=env)
    bpe, char = str(tmp / "bpe"), str(tmp / "char")
    # The old defaults set explicitly (batch and context): what lmlab trained before issue 14.
    settings = {"old defaults (bpe)": ({"source": bpe, "block_size": 128}, {"batch_size": 128}, 4),
                "chosen (bpe)": ({"source": bpe}, {}, 12), "char, defaults": ({"source": char}, {}, 4)}
    print("| setting | batch x context | s/step | tokens/s | load |\n|---|---|---|---|---|")
    for round_ in range(args.rounds):
        for name, (data, train, steps) in settings.items():
            if name.startswith("char") and round_:  # the reference, once
                continue
            r = timed(data, tmp / "run", train, steps)
            print(f"| {name} | {r['batch']} x {r['context']} | {r['s_per_step']:.3f} | {r['tokens_per_s']:,.0f} "
                  f"| {r['load']} |", flush=True)
    if args.budget > 0:
        print(f"\n| setting, {args.budget:g} s of training | steps | val NLL (nats/token) | load |\n|---|---|---|---|")
        for name, train in (("old defaults", {"batch_size": 128}), ("chosen", {})):
            values = {"data": {"source": str(tmp / "bpe"), **({"block_size": 128} if train else {})},
                      "model": {"name": "gpt"}, "train": {"budget": f"{args.budget:g}s", "threads": 1, "device": "cpu",
                                                         **train}}
            before = load()
            run = lmlab.train(values, out=tmp / name.replace(" ", "_"), force=True, inspect=False)
            print(f"| {name} ({run.config.train.batch_size} x {run.config.data.block_size}) | {run.step} | "
                  f"{run.summary['nll']['val']:.4f} | {before}-{load()} |", flush=True)


if __name__ == "__main__":
    main()
