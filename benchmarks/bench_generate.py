"""Generation speed against issue 14's targets: new tokens per second from the 4x4x128 GPT (nanoGPT's CPU
Shakespeare shape) at a context of 256, sampling 200 tokens after a one-token prompt.

Three measurements, taken in alternation within each round:
- reference: nanoGPT's cache-less `generate` algorithm (crop to block_size, full forward, last logits,
  softmax, multinomial, concatenate), written out below. It is a stand-in: nanoGPT's own code cannot be
  fetched on this machine, and lmlab's `use_cache=False` path computes the same thing;
- one sequence: `model.generate` with the KV cache;
- a batch of 100 (what `lmlab sample -n 100` generates at once), counted in all tokens per second.
Targets: one sequence >= 5x the reference; 100 sequences >= 20x the one-sequence rate.

Sampling at temperature 1 from random weights (the speed does not depend on them). `--new-tokens` beyond
the context makes the window slide, where each token costs a forward pass over the whole window.
`--old-src DIR` runs each round twice in fresh processes, once with lmlab from DIR (e.g. main's src) and once
with this checkout's, alternating, so before/after are measured side by side under the same load.
`--window` instead times the Llama rung (RoPE) past its context: recompute vs the rolling KV cache.
Usage: python benchmarks/bench_generate.py [--new-tokens 200] [--threads 1] [--rounds 3] [--old-src DIR]
       [--window]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


@torch.no_grad()
def nanogpt_generate(model, idx: torch.Tensor, max_new_tokens: int, block_size: int) -> torch.Tensor:
    """The cache-less reference: every token runs the whole (cropped) context again."""
    for _ in range(max_new_tokens):
        context = idx if idx.size(1) <= block_size else idx[:, -block_size:]
        logits = model(context).logits[:, -1, :]  # (B, V)
        next_id = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1)  # (B, 1)
        idx = torch.cat((idx, next_id), dim=1)
    return idx


def tokens_per_second(model, batch: int, new_tokens: int, reference: bool = False, **kwargs) -> tuple[float, float]:
    """(per second of wall time, per second of this process's CPU time): on a loaded machine the second
    leaves out the time the process waited for a core."""
    prompt = torch.zeros(batch, 1, dtype=torch.long)
    torch.manual_seed(0)
    started, cpu_started = time.perf_counter(), time.process_time()
    if reference:
        nanogpt_generate(model, prompt, new_tokens, model.config.block_size)
    else:
        model.generate(prompt, new_tokens, generator=torch.Generator().manual_seed(0), **kwargs)
    tokens = batch * new_tokens
    return tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu_started)


def one_round(args: argparse.Namespace) -> dict[str, float]:
    """One measurement of each kind, in a fixed order: reference, one sequence, the batch."""
    from lmlab.models.gpt import GPT, GPTConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig(preset="gpt-micro", vocab_size=65, block_size=args.context, dropout=0.0)).eval()
    tokens_per_second(model, 1, 8)  # warm-up
    rates = {
        "reference": tokens_per_second(model, 1, args.new_tokens, reference=True),
        "one": tokens_per_second(model, 1, args.new_tokens),
        "batch": tokens_per_second(model, args.batch, args.new_tokens),
    }
    return {key: wall for key, (wall, _) in rates.items()} | {f"{key}_cpu": cpu for key, (_, cpu) in rates.items()}


def window_full(args: argparse.Namespace) -> None:
    """Past the context: the 4x4x128 Llama rung (RoPE) sampling 2x the context for one sequence, recomputing
    the window each token (exact) or keeping a rolling KV cache (sliding_window=True, an approximation)."""
    from lmlab.models.llama import Llama, LlamaConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Llama(LlamaConfig(preset="llama-micro", vocab_size=65, block_size=args.context, dropout=0.0)).eval()
    tokens_per_second(model, 1, 8)  # warm-up
    for _ in range(args.rounds):  # alternating
        exact = tokens_per_second(model, 1, 2 * args.context)[0]
        rolling = tokens_per_second(model, 1, 2 * args.context, sliding_window=True)[0]
        print(f"llama, {2 * args.context} new tokens: recompute {exact:,.0f} tokens/s, rolling cache "
              f"{rolling:,.0f} tokens/s ({rolling / exact:.1f}x), load {os.getloadavg()[0]:.1f}")


def report(name: str, rounds: list[dict[str, float]], batch: int) -> None:
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    spread = {key: f"{min(r[key] for r in rounds):,.0f}-{max(r[key] for r in rounds):,.0f}" for key in med}
    print(f"[{name}] reference (nanoGPT's cache-less algorithm): {med['reference']:8,.0f} tokens/s "
          f"({spread['reference']})")
    print(f"[{name}] one sequence: {med['one']:8,.0f} tokens/s ({spread['one']}), "
          f"{med['one'] / med['reference']:.1f}x the reference (target >= 5x)")
    print(f"[{name}] {batch} sequences: {med['batch']:8,.0f} tokens/s in all ({spread['batch']}), "
          f"{med['batch'] / med['one']:.1f}x the one-sequence rate (target >= 20x)")
    print(f"[{name}] per CPU second: reference {med['reference_cpu']:,.0f}, one {med['one_cpu']:,.0f} "
          f"({med['one_cpu'] / med['reference_cpu']:.1f}x), {batch} sequences {med['batch_cpu']:,.0f} "
          f"({med['batch_cpu'] / med['one_cpu']:.1f}x) tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-src", help="lmlab's src folder to compare against, in alternating processes")
    parser.add_argument("--window", action="store_true", help="measure the Llama's rolling cache instead")
    parser.add_argument("--one-round-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.window:
        window_full(args)
        return
    if args.one_round_json:
        print(json.dumps(one_round(args)))
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {args.threads} thread(s), load average at start {os.getloadavg()}; 4x4x128 "
          f"GPT, context {args.context}, {args.new_tokens} new tokens, medians of {args.rounds} (min-max)")
    if not args.old_src:
        rounds = [one_round(args) for _ in range(args.rounds)]
        report("this checkout", rounds, args.batch)
    else:
        new_src = str(Path(__file__).resolve().parents[1] / "src")
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                 if k in ("context", "new_tokens", "batch", "threads")]
        runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            for name, src in (("old", args.old_src), ("new", new_src)):
                env = os.environ | {"PYTHONPATH": src, "OMP_NUM_THREADS": str(args.threads)}
                out = subprocess.run([sys.executable, __file__, "--one-round-json", *flags], env=env,
                                     capture_output=True, text=True, check=True).stdout
                runs[name].append(json.loads(out.splitlines()[-1]))
        for name, src in (("old", args.old_src), ("new", new_src)):
            report(f"{name}: {src}", runs[name], args.batch)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
