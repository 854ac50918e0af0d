"""The ladder at a work budget: every rung sized for the same FLOPs, on one shared split; per rung its
parameters, steps, tokens, FLOPs and seconds, the load average before and after, and (with --busy N) the same
ladder again with N processes spinning beside it, to show the NLLs do not move.

    python benchmarks/ladder_names.py --data names --out runs/ladder-names
    python benchmarks/ladder_names.py --data names --busy 2 --set train.threads=1
    python benchmarks/ladder_names.py --data identifiers --models ngram,mlp,gpt,llama --set train.threads=1

`--data identifiers` writes (once) 40,000 lowercase identifiers drawn from the running Python's standard
library (3-16 characters of a-z, 0-9 and _: a vocabulary of 38 with the boundary) and trains on them.

Expected order (makemore's notes): the counted bigram worst, the MLP and WaveNet next, the recurrent models
and the transformers best. Prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import time
from pathlib import Path

from lmlab.config import LADDER_BUDGET, parse_set_args
from lmlab.ladder import run_ladder

REPO = Path(__file__).resolve().parents[1]


def identifiers(path: Path, count: int = 40_000) -> Path:
    """`count` distinct lowercase identifiers of the standard library's sources, shuffled by a fixed seed."""
    import random
    import re
    import sysconfig

    if not path.is_file():
        found: set[str] = set()
        for source in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
            if "site-packages" not in source.parts:
                text = source.read_text(encoding="utf-8", errors="replace")
                found.update(re.findall(r"(?<![A-Za-z0-9_])[a-z_][a-z0-9_]{2,15}(?![A-Za-z0-9_])", text))
        chosen = sorted(found)
        random.Random(0).shuffle(chosen)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(chosen[:count]) + "\n", encoding="utf-8")
    return path


def spin(stop) -> None:  # a busy process: what "two other jobs on the machine" means here
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def ladder(args, out: Path) -> tuple[list[dict], float, tuple[float, float]]:
    shutil.rmtree(out, ignore_errors=True)
    before = os.getloadavg()[0]
    started = time.perf_counter()
    rows = run_ladder(args.data, out, budget=args.budget, models=args.models.split(",") if args.models else None,
                      overrides=parse_set_args(args.set))
    return rows, time.perf_counter() - started, (before, os.getloadavg()[0])


def table(rows: list[dict], seconds: float, load: tuple[float, float]) -> str:
    lines = ["| rung | params | steps | tokens | FLOPs | seconds | val | test |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['steps']:,} | {r['tokens'] or 0:,} | "
                     f"{r['flops'] or 0:.3g} | {r['train_seconds']:.1f} | {r['nll']['val']:.4f} | "
                     f"{r['nll']['test']:.4f} |")
    lines.append(f"\n{seconds:.0f} s in all; load average {load[0]:.2f} before, {load[1]:.2f} after; "
                 f"{platform.node()}, {os.cpu_count()} cores, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="names")
    parser.add_argument("--budget", default=LADDER_BUDGET)
    parser.add_argument("--models", help="comma-separated rungs (default: one per architecture)")
    parser.add_argument("--set", action="append", default=[], help="a config value for every rung")
    parser.add_argument("--out", default=str(REPO / "runs" / "ladder-bench"))
    parser.add_argument("--busy", type=int, default=0, help="run again with this many spinning processes beside it")
    args = parser.parse_args()
    if args.data == "identifiers":
        args.data = str(identifiers(REPO / "runs" / "identifiers.txt"))
    rows, seconds, load = ladder(args, Path(args.out))
    print(table(rows, seconds, load))
    if args.busy:
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(args.busy)]
        for p in spinners:
            p.start()
        try:
            busy_rows, busy_seconds, busy_load = ladder(args, Path(args.out + "-busy"))
        finally:
            stop.set()
            for p in spinners:
                p.join()
        print(f"\nwith {args.busy} busy processes beside it:\n" + table(busy_rows, busy_seconds, busy_load))
        same = [json.dumps(a["nll"]) == json.dumps(b["nll"]) for a, b in zip(rows, busy_rows, strict=True)]
        print(f"\nNLLs byte-identical: {all(same)} ({sum(same)} of {len(same)} rungs)")


if __name__ == "__main__":
    main()
