"""The cost of windows that stay inside documents (issue 18): time per training batch and per exact evaluation
pass, and the share of window slots that hold a target, for a stream of documents with and without
`data.cross_documents`.

A synthetic stream of random ids is cut into documents of random lengths (exponential, of the given mean);
both ways sample the same number of batches, alternating, in one process with one torch thread, and the
ratio of their medians is reported beside each.

    PYTHONPATH=src python benchmarks/stream_documents.py [--tokens 4000000] [--block 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lmlab.data.datasets import IGNORE_INDEX, StreamDataset


def stream(tokens: int, mean_doc: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50_000, (tokens,), generator=g)
    lengths = (torch.empty(tokens // mean_doc * 2).exponential_(1.0 / mean_doc, generator=g).long() + 1)
    ends = lengths.cumsum(0) + torch.arange(len(lengths))  # a boundary after each document
    boundaries = ends[ends < tokens - 1]
    ids[boundaries] = 0
    return ids, boundaries


def batch_seconds(ds: StreamDataset, batch: int, generator: torch.Generator, repeat: int = 50) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        ds.sample_batch(batch, generator)
    return (time.perf_counter() - started) / repeat


def eval_seconds(ds: StreamDataset) -> float:
    started = time.perf_counter()
    for _ in ds.iter_batches(256):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4_000_000)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}: "
          f"{args.tokens:,} tokens, block {args.block}, batch {args.batch}, 1 torch thread")
    print("| mean document | documents | setup ms | batch ms: inside / across (ratio) | target share inside "
          "| eval pass s: inside / across (ratio) | load |")
    print("|---|---|---|---|---|---|---|")
    for mean_doc in (10_000, 1_000, 100):
        ids, boundaries = stream(args.tokens, mean_doc)
        started = time.perf_counter()
        inside = StreamDataset(ids, args.block, boundaries)
        setup = time.perf_counter() - started
        across = StreamDataset(ids, args.block)
        g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        batch_a, batch_b, eval_a, eval_b, shares = [], [], [], [], []
        for _ in range(args.rounds):  # alternating, so a change in load hits both alike
            batch_a.append(batch_seconds(inside, args.batch, g1))
            batch_b.append(batch_seconds(across, args.batch, g2))
            eval_a.append(eval_seconds(inside))
            eval_b.append(eval_seconds(across))
            _, labels = inside.sample_batch(1024, g1)
            shares.append(float((labels[:, 1:] != IGNORE_INDEX).sum()) / (1024 * (args.block - 1)))
        a, b = statistics.median(batch_a) * 1e3, statistics.median(batch_b) * 1e3
        ea, eb = statistics.median(eval_a), statistics.median(eval_b)
        print(f"| {mean_doc:,} | {len(boundaries) + 1:,} | {setup * 1e3:.1f} | {a:.2f} / {b:.2f} ({a / b:.2f}x) | "
              f"{statistics.mean(shares):.2f} | {ea:.2f} / {eb:.2f} ({ea / eb:.2f}x) | {os.getloadavg()[0]:.1f} |")


if __name__ == "__main__":
    main()
