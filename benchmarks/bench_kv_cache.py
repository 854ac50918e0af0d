"""KV cache speed-up: greedy generation of 256 new tokens with and without the cache, on CPU.

Without the cache every step runs the whole context (O(T) tokens through the network, O(T^2) attention);
with it each step runs one token against the stored keys and values. Target: at least 5x faster.
Usage: python benchmarks/bench_kv_cache.py [--preset gpt-micro] [--new-tokens 256] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from lmlab.models.gpt import GPT, GPTConfig


def timed_generate(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    out = model.generate(prompt, new_tokens, do_sample=False, use_cache=use_cache)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt-micro")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    block = args.prompt_tokens + args.new_tokens  # the whole generation fits: the cache never has to slide
    model = GPT(GPTConfig(preset=args.preset, vocab_size=65, block_size=block)).eval()
    prompt = torch.randint(65, (1, args.prompt_tokens))
    timed_generate(model, prompt, 8, True)  # warm-up: first-call allocations
    t_cache, out_cache = timed_generate(model, prompt, args.new_tokens, True)
    t_full, out_full = timed_generate(model, prompt, args.new_tokens, False)
    same = torch.equal(out_cache, out_full)
    print(f"{platform.node()} torch {torch.__version__} threads {torch.get_num_threads()}; preset {args.preset} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters), {args.new_tokens} new tokens after "
          f"{args.prompt_tokens}")
    print(f"with cache {t_cache:.3f} s ({args.new_tokens / t_cache:,.0f} tok/s), without {t_full:.3f} s "
          f"({args.new_tokens / t_full:,.0f} tok/s): {t_full / t_cache:.1f}x faster; same tokens: {same}")


if __name__ == "__main__":
    main()
