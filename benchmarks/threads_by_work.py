"""Where a second thread starts to pay: a step's time at 1 thread and at every core, for steps of growing
FLOPs (rungs and batch sizes on the embedded names), alternating in one process. What sets
`performance.AUTO_THREADS_MIN_FLOPS`, the work above which `train.threads=auto` uses every core. Run it on an
idle machine (`uptime` below 1): the load is printed beside the table.

    python benchmarks/threads_by_work.py --steps 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lmlab.config import Typed
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.performance import AUTO_THREADS_MIN_FLOPS, base_threads, flops_per_token
from lmlab.training.trainer import Trainer

CASES = [("mlp", 64), ("lstm", 64), ("gpt-nano", 32), ("gpt", 32), ("gpt", 128), ("gpt-micro", 64)]


def step_seconds(trainer: Trainer, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        trainer._train_step(1e-3)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = base_threads()
    print(f"load average {os.getloadavg()[0]:.2f}; {cores} threads at most; threshold now "
          f"{AUTO_THREADS_MIN_FLOPS:.0e} FLOPs a step\n")
    print(f"| rung | batch | FLOPs a step | ms at 1 thread | ms at {cores} | speed-up |\n|---|---|---|---|---|---|")
    for name, batch in CASES:
        config = resolve_config({"model": {"name": name}, "train": {"max_steps": 1, "batch_size": batch,
                                                                    "threads": Typed("1"), "ema_decay": 0.0}})
        data = prepare_data(config.data)
        model = build_model(config, data.tokenizer, data.splits["train"].block_size, training=True)
        trainer = Trainer(model, data.splits["train"], None, config.train)
        step_flops = flops_per_token(model, data.splits["train"].block_size) * batch * 7  # ~7 tokens a name
        one, many = [], []
        for _ in range(args.rounds):  # alternating, so a change in load hits both alike
            one.append(step_seconds(trainer, 1, args.steps))
            many.append(step_seconds(trainer, cores, args.steps))
        a, b = statistics.median(one), statistics.median(many)
        print(f"| {name} | {batch} | {step_flops:.2g} | {1000 * a:.1f} | {1000 * b:.1f} | {a / b:.2f}x |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
