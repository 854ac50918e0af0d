"""Muon's optimizer step on CPU: torch.optim.Muon (Newton-Schulz in bfloat16) vs lmlab's (float32 on CPU), on
the hidden matrices of the nanoGPT-CPU-sized Llama (4 layers x 4 heads x 128 wide), alternating, 1 thread.

    PYTHONPATH=src OMP_NUM_THREADS=1 python3 benchmarks/bench_muon_cpu.py [--steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from lmlab.models import Llama, LlamaConfig
from lmlab.training.muon import Muon, split_hidden_matrices


def time_steps(optimizer_cls, hidden: list[torch.nn.Parameter], steps: int) -> float:
    optimizer = optimizer_cls(hidden, lr=0.02, weight_decay=0.1)
    for p in hidden:
        p.grad = torch.randn_like(p)
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = Llama(LlamaConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0))
    hidden, _ = split_hidden_matrices(model)
    for r in range(args.rounds):
        bf16 = time_steps(torch.optim.Muon, hidden, args.steps)
        fp32 = time_steps(Muon, hidden, args.steps)
        print(f"round {r}: torch (bf16) {bf16:.1f} ms/step, lmlab (fp32 on CPU) {fp32:.1f} ms/step, "
              f"ratio {bf16 / fp32:.1f}x")


if __name__ == "__main__":
    main()
