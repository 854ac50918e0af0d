"""Issue 18: what --log tensorboard / --log wandb (offline) add to training time, with the inspector on.

    python benchmarks/bench_loggers.py [--steps 400] [--rounds 3]

The MLP on names.txt (or the embedded `names` set when ../shared is absent), log_interval 10, inspector
every 20 steps; the variants alternate within each round so load on a shared machine hits them alike.
Prints the median seconds per variant and each logger's overhead per run (W&B's includes starting its service).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lmlab.config import DataConfig, TrainConfig
from lmlab.inspector import Inspector, find_problems
from lmlab.models import REGISTRY
from lmlab.training import loggers as lg
from lmlab.run.data import prepare_data
from lmlab.training.trainer import Trainer

NAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "names.txt"


def one_run(data, steps: int, variant: str) -> float:
    spec = REGISTRY["mlp"]
    torch.manual_seed(0)
    model = spec.model_cls(spec.config_cls(vocab_size=data.tokenizer.vocab_size, block_size=32,
                                           pad_id=data.tokenizer.boundary_id))
    config = TrainConfig(max_steps=steps, batch_size=32, eval_interval=100, eval_max_tokens=5000,
                         log_interval=10, device="cpu", threads=1)
    with tempfile.TemporaryDirectory() as run_dir:
        callbacks = [Inspector(every=20)]
        if variant == "tensorboard":
            callbacks.append(lg.TensorBoardLogger(run_dir, {"train": {}}, findings=find_problems))
        elif variant == "wandb":
            callbacks.append(lg.WandbLogger(run_dir, {"train": {}}, findings=find_problems))
        trainer = Trainer(model, data.splits["train"], data.splits["val"], config, run_dir=run_dir,
                          callbacks=callbacks)
        started = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    data = prepare_data(DataConfig(source=str(NAMES) if NAMES.is_file() else "names"))
    variants = ["none", "tensorboard", "wandb"]
    one_run(data, 20, "tensorboard")  # imports and first-use costs out of the timings
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            times[variant].append(one_run(data, args.steps, variant))
    median = {v: statistics.median(t) for v, t in times.items()}
    print(json.dumps({"steps": args.steps, "seconds": times, "median": median,
                      "overhead_s": {v: median[v] - median["none"] for v in variants[1:]},  # W&B: with its init
                      "loadavg": Path("/proc/loadavg").read_text().split()[:3]}, indent=2))


if __name__ == "__main__":
    main()
