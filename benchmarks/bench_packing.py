"""Packed against padded lines-mode batches: the share of positions that are padding, and the training step
time of the default GPT on the embedded names, at one thread (or --threads), in alternating rounds so a
change in the machine's load hits both alike. Prints the load average beside the figures.

The two trainers start from the same seed and draw the same examples each step; they differ only in how a
batch is laid out (data.packing) and so in dropout's draws.
Usage: python benchmarks/bench_packing.py [--model gpt] [--data names] [--rounds 6] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.performance import cpu_matmul_peak, flops_per_token
from lmlab.training.schedule import lr_at
from lmlab.training.trainer import Trainer


def trainer_for(model: str, data: str, packing: bool, threads: int) -> Trainer:
    config = resolve_config({"data": {"source": data, "packing": packing}, "model": {"name": model},
                             "train": {"budget": "", "threads": threads, "ema_decay": 0}})
    prepared = prepare_data(config.data)
    net = build_model(config, prepared.tokenizer, prepared.splits["train"].block_size)
    return Trainer(net, prepared.splits["train"], None, config.train)


def padding_share(dataset, packed: bool, batch_size: int, draws: int = 50) -> float:
    g = torch.Generator().manual_seed(0)
    real = positions = 0
    for _ in range(draws):
        if packed:
            before = g.get_state()
            batch = dataset.sample_packed(batch_size, g)
            g.set_state(before)
            rows = torch.randint(len(dataset), (batch_size,), generator=g)
            positions += batch.input_ids.numel()
        else:
            rows = torch.randint(len(dataset), (batch_size,), generator=g)
            positions += batch_size * int(dataset.lengths[rows].max())
        real += int(dataset.lengths[rows].sum())
    return 1 - real / positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt")
    parser.add_argument("--data", default="names")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20, help="steps of each kind per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trainers = {kind: trainer_for(args.model, args.data, kind == "packed", args.threads)
                for kind in ("padded", "packed")}
    for trainer in trainers.values():
        trainer.model.train()
    times: dict[str, list[float]] = {kind: [] for kind in trainers}
    cpu: dict[str, list[float]] = {kind: [] for kind in trainers}  # process time: less moved by others' load
    tokens: dict[str, int] = {kind: 0 for kind in trainers}
    loads = [os.getloadavg()[0]]
    for trainer in trainers.values():  # warm-up, untimed
        trainer._train_step(lr_at(0, trainer.config))
    for _ in range(args.rounds):
        for kind, trainer in trainers.items():
            for _ in range(args.steps):
                started, cpu_started = time.perf_counter(), time.process_time()
                record = trainer._train_step(lr_at(trainer.step, trainer.config))
                times[kind].append(time.perf_counter() - started)
                cpu[kind].append(time.process_time() - cpu_started)
                tokens[kind] += record["tokens"]
        loads.append(os.getloadavg()[0])
    train = trainers["packed"].train_data
    flops = flops_per_token(trainers["packed"].model, train.block_size)
    peak = cpu_matmul_peak()
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.model} on {args.data}, "
          f"batch {trainers['packed'].config.batch_size}, {args.threads} thread(s), "
          f"load average {min(loads):.2f}-{max(loads):.2f}; one thread's matmul peak {peak / 1e9:.0f} GFLOP/s")
    medians = {}
    for kind, trainer in trainers.items():
        medians[kind] = statistics.median(times[kind])
        rate = tokens[kind] / sum(times[kind]) * flops
        print(f"{kind:7s} padding {padding_share(train, kind == 'packed', trainer.config.batch_size):6.1%}  "
              f"step {1000 * medians[kind]:6.1f} ms wall, {1000 * statistics.median(cpu[kind]):6.1f} ms CPU "
              f"(medians of {len(times[kind])})  "
              f"useful {rate / 1e9:5.1f} GFLOP/s = {rate / (peak * args.threads):5.1%} of peak")
    print(f"padded / packed step time: {medians['padded'] / medians['packed']:.2f}x wall, "
          f"{statistics.median(cpu['padded']) / statistics.median(cpu['packed']):.2f}x CPU")


if __name__ == "__main__":
    main()
