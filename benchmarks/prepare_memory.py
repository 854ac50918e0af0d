"""Time and peak memory of `lmlab data prepare` on one large text file, beside HF `tokenizers` alone.

Generates a corpus of each size asked (prose-like lines of words drawn from a Zipf-like vocabulary, seeded,
so every size has the same statistics), then, each in its own process, measures its peak resident set size
(os.wait4's ru_maxrss) and wall time:

- lmlab: `lmlab data prepare FILE --tokenizer bpe --vocab-size V --out DIR` (fit, encode, write shards);
- tokenizers alone: the same byte-level BPE trained with `train_from_iterator` over the file read in 1 MiB
  pieces cut at line breaks, then the whole file encoded in batches and written as uint16, the floor any
  wrapper of the library can reach.

    PYTHONPATH=src python benchmarks/prepare_memory.py --sizes 50 [500 2000] [--vocab-size 4096]

Each corpus is deleted after its size is measured; it needs its size again in free disk for the shards.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The library alone, in the same shape as lmlab: fit from an iterator of bounded pieces, encode in batches.
TOKENIZERS_ALONE = r"""
import sys, numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
path, vocab, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def pieces(size=1 << 20):
    with open(path, encoding="utf-8") as fh:
        while True:
            piece = fh.read(size)
            if not piece:
                return
            piece += fh.readline()  # end the piece at a line break
            yield piece

hf = Tokenizer(models.BPE())
hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
hf.decoder = decoders.ByteLevel()
hf.train_from_iterator(pieces(), trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                       show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
with open(out, "wb") as fh:
    batch = []
    for piece in pieces(1 << 16):
        batch.append(piece)
        if len(batch) == 16:
            for e in hf.encode_batch(batch, add_special_tokens=False):
                np.asarray(e.ids, dtype=np.uint16).tofile(fh)
            batch = []
    for e in hf.encode_batch(batch, add_special_tokens=False):
        np.asarray(e.ids, dtype=np.uint16).tofile(fh)
"""


def make_corpus(path: Path, megabytes: int, seed: int = 0) -> None:
    """`megabytes` MB of lines of 5-20 words, written a MB at a time (the generator holds one MB)."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "ter", "mi", "an", "sto", "re", "ul", "pha", "gen", "di", "or", "ne", "vi", "sa"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(20000)})
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf: a few words are most of the text
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(megabytes):
            lines, size = [], 0
            while size < 1_000_000:
                line = " ".join(rng.choices(words, weights, k=rng.randint(5, 20))).capitalize() + ".\n"
                lines.append(line)
                size += len(line)
            fh.write("".join(lines))


def measure(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of `command`, run in its own process."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50], help="corpus sizes in MB (default: 50)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--dir", default=None, help="where to write the corpus (default: a temporary folder)")
    args = parser.parse_args()
    print(f"# {platform.node()} ({os.cpu_count()} cores) {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.1f}: BPE {args.vocab_size}")
    print("| corpus MB | lmlab s | lmlab MB/s | lmlab peak RSS MB | tokenizers s | tokenizers MB/s | "
          "tokenizers peak RSS MB | load after |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for megabytes in args.sizes:
            corpus = Path(tmp) / f"c{megabytes}.txt"
            make_corpus(corpus, megabytes)
            lmlab_rss, lmlab_s = measure([sys.executable, "-m", "lmlab", "data", "prepare", str(corpus),
                                          "--tokenizer", "bpe", "--vocab-size", str(args.vocab_size),
                                          "--out", str(Path(tmp) / "prep")])
            alone_rss, alone_s = measure([sys.executable, "-c", TOKENIZERS_ALONE, str(corpus),
                                          str(args.vocab_size), str(Path(tmp) / "alone.bin")])
            size = corpus.stat().st_size / 1e6
            print(f"| {size:.0f} | {lmlab_s:.1f} | {size / lmlab_s:.2f} | {lmlab_rss:.0f} | {alone_s:.1f} | "
                  f"{size / alone_s:.2f} | {alone_rss:.0f} | {os.getloadavg()[0]:.1f} |", flush=True)
            subprocess.run(["rm", "-rf", str(corpus), str(Path(tmp) / "prep"), str(Path(tmp) / "alone.bin")],
                           check=True)


if __name__ == "__main__":
    main()
