"""Peak memory of encoding one long line for stream mode: the list of ids (before) versus `encode_to_tensor`.

Stream mode encodes the whole training text at once. Before issue 13 it built `tokenizer(text).input_ids`, a
Python list, and copied it into a tensor; `encode_to_tensor` encodes chunk by chunk into compact arrays and
copies once. Each way runs in its own process on a generated single line of words (no line break, the case
the issue reported), and the process's peak RSS above its own baseline (text and tokenizer already built) is
reported as a multiple of the text's size.

    PYTHONPATH=src python benchmarks/stream_memory.py [--mb 50] [--tokenizer char] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import random, resource, sys, time, torch
from lmlab.tokenizers import encode_to_tensor, fit_tokenizer
mb, kind, way = float(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = random.Random(0)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(1, 9))) for _ in range(3000)]
text = ' '.join(rng.choice(words) for _ in range(int(mb * 1e6 / 5.5)))[: int(mb * 1e6)]
tok = fit_tokenizer(kind, [text[:2_000_000]], 0 if kind == 'char' else 4096)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if way == 'list':
    ids = torch.tensor(tok(text).input_ids, dtype=torch.long)
else:
    ids = encode_to_tensor(tok, text)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(text), ids.numel(), base * 1024, peak * 1024, seconds)
"""


def measure(mb: float, kind: str, way: str) -> tuple[int, int, int, int, float]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, str(mb), kind, way], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    chars, tokens, base, peak = map(int, out[:4])
    return chars, tokens, base, peak, float(out[4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="size of the line in MB (default 50)")
    parser.add_argument("--tokenizer", default="char", choices=["char", "word", "bpe"])
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds of both ways")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}: {args.mb:g} MB single line, "
          f"{args.tokenizer} tokenizer; peak RSS above the baseline (text + tokenizer)")
    print("| way | tokens | extra peak MB | x text size | seconds |")
    print("|---|---|---|---|---|")
    for _ in range(args.repeat):
        for way in ("list", "encode_to_tensor"):
            chars, tokens, base, peak, seconds = measure(args.mb, args.tokenizer, way)
            extra = peak - base
            print(f"| {way} | {tokens:,} | {extra / 1e6:,.0f} | {extra / chars:.1f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
