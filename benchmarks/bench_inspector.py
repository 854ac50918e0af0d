"""The inspector's cost at its default interval, as a fraction of training step time.

Two identical trainers (the default MLP on the embedded names, same seed) run the same steps in alternating
blocks of one sampling interval, one with the Inspector and one without, so load changes on a shared
machine hit both alike. Prints the overhead ratio and the cost of one sampled step (the long-run figure).
Then a short run (300 steps) end to end, fit() with and without the inspector in alternating pairs: its
default interval, the probes at the start and the end and the findings' inputs included.

    PYTHONPATH=src python benchmarks/bench_inspector.py [--model mlp] [--steps 1000] [--every K]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from datetime import date

import torch

from lmlab.inspector import Inspector
from lmlab.inspector.probes import default_interval
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.schedule import lr_at
from lmlab.training.trainer import Trainer


def make_trainer(config, data, callbacks):
    model = build_model(config, data.tokenizer, max(ds.block_size for ds in data.splits.values()))
    trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, callbacks=callbacks)
    trainer.model.train()
    trainer._emit("on_train_begin")
    return trainer


def run_block(trainer, steps: int) -> list[float]:
    """The trainer's own step, as `fit` runs it; the CPU time of each step (process time: on a shared
    machine, wall time mostly measures the neighbours)."""
    times = []
    for _ in range(steps):
        started = time.process_time()
        record = trainer._train_step(lr_at(trainer.step, trainer.config))
        trainer._emit("on_step_end", record)
        times.append(time.process_time() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, help="sampling interval (default: the one a 10,000-step run gets)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier timings)")
    parser.add_argument("--short-run", type=int, default=300, help="steps of the short run timed end to end "
                        "(default 300)")
    parser.add_argument("--pairs", type=int, default=4, help="plain/inspected pairs of the short run")
    parser.add_argument("--short-only", action="store_true", help="time only the short run (every rung's "
                        "figure in a few minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = resolve_config({"model": {"name": args.model}, "train": {"device": "cpu", "max_steps": 10_000}})
    every = args.every or default_interval(config.train.max_steps)
    data = prepare_data(config.data)
    print(f"{date.today()} {platform.node()} {platform.processor() or platform.machine()} "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    if not args.short_only:
        long_run(args, config, data, every)
    short_run(args, config, data)


def long_run(args, config, data, every: int) -> None:
    plain = make_trainer(config, data, [])
    watched = make_trainer(config, data, [Inspector(every=every)])
    times: dict[str, list[float]] = {"plain": [], "inspected": []}
    run_block(plain, every), run_block(watched, every)  # warm-up, not timed; keeps samples at block starts
    for block in range(args.steps // every):
        order = [("plain", plain), ("inspected", watched)]
        for name, trainer in order if block % 2 == 0 else order[::-1]:
            times[name] += run_block(trainer, every)
    steps = len(times["plain"])
    # Medians resist the load spikes of a shared machine. The watched trainer samples on the first step of
    # each block: its cost over the median step, spread over the interval, plus any cost on the other steps.
    plain_step = statistics.median(times["plain"])
    sampled = times["inspected"][::every]
    unsampled = [t for i, t in enumerate(times["inspected"]) if i % every]
    per_sample = statistics.median(sampled) - statistics.median(unsampled)
    sampling = per_sample / every / plain_step  # the sampled steps' extra work, spread over the interval
    other = statistics.median(unsampled) / plain_step - 1  # the cheap per-step bookkeeping (loss history)
    total_ratio = sum(times["inspected"]) / sum(times["plain"]) - 1
    print(f"model {args.model}, {steps} steps each, inspector every {every} steps")
    print(f"median step: plain {1e3 * plain_step:.2f} ms, inspected (not sampled) "
          f"{1e3 * statistics.median(unsampled):.2f} ms, sampled step {1e3 * statistics.median(sampled):.2f} ms")
    print(f"inspector overhead: {sampling + max(other, 0):+.1%} of step time = sampling {sampling:+.1%} "
          f"({1e3 * per_sample:.1f} ms per sampled step) + other steps {other:+.1%} (noise when near 0); "
          f"total-time ratio {total_ratio:+.1%}")


def short_run(args, config, data) -> None:
    """A short run end to end, as `lmlab train` makes it: fit() with the default (widening) interval, the
    probes at the start and the end, beside the same fit() without the inspector; alternating pairs."""
    short_config = dataclasses.replace(config.train, max_steps=args.short_run, budget="")
    fits: dict[str, list[float]] = {"plain": [], "inspected": []}
    samples = 0
    for _ in range(args.pairs):
        for name in ("plain", "inspected") if _ % 2 == 0 else ("inspected", "plain"):
            torch.manual_seed(0)
            model = build_model(config, data.tokenizer, max(ds.block_size for ds in data.splits.values()))
            callbacks = [Inspector()] if name == "inspected" else []
            trainer = Trainer(model, data.splits["train"], data.splits["val"], short_config, callbacks=callbacks)
            started = time.process_time()
            trainer.fit()
            fits[name].append(time.process_time() - started)
            if callbacks:
                samples = len(next(iter(callbacks[0].stats.params.values())).step)
    plain_fit, inspected_fit = statistics.median(fits["plain"]), statistics.median(fits["inspected"])
    print(f"{args.short_run}-step fit(): plain {plain_fit:.2f} s, inspected {inspected_fit:.2f} s "
          f"({samples} samples): inspector {inspected_fit / plain_fit - 1:+.1%} (median of {args.pairs} pairs), "
          f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
