"""Generation speed: new tokens per second from the 4x4x128 GPT (nanoGPT's CPU Shakespeare shape) at a
context of 256, for one sequence and for a batch of 100 (what `lmlab sample -n 100` generates at once).

Sampling at temperature 1 from random weights (the speed does not depend on them). `--new-tokens` beyond
the context makes the window slide, where each token costs a forward pass over the whole window.
Usage: python benchmarks/bench_generate.py [--new-tokens 200] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lmlab.models.gpt import GPT, GPTConfig


def tokens_per_second(model: GPT, batch: int, new_tokens: int, use_cache: bool = True) -> float:
    prompt = torch.zeros(batch, 1, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    model.generate(prompt, new_tokens, generator=generator, use_cache=use_cache)
    return batch * new_tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig(preset="gpt-micro", vocab_size=65, block_size=args.context, dropout=0.0)).eval()
    tokens_per_second(model, 1, 8)  # warm-up
    runs: dict[str, list[float]] = {"1 sequence": [], f"{args.batch} sequences": []}
    for _ in range(args.rounds):  # alternating
        runs["1 sequence"].append(tokens_per_second(model, 1, args.new_tokens))
        runs[f"{args.batch} sequences"].append(tokens_per_second(model, args.batch, args.new_tokens))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()}; 4x4x128 GPT, context "
          f"{args.context}, {args.new_tokens} new tokens, medians of {args.rounds}")
    one = statistics.median(runs["1 sequence"])
    for name, values in runs.items():
        rate = statistics.median(values)
        per = f" ({rate / one:.1f}x the one-sequence rate)" if rate != one else ""
        print(f"{name:>14}: {rate:9,.0f} tokens/s{per}")


if __name__ == "__main__":
    main()
