"""torch.compile with the inspector on (issue 14): `lmlab train --set train.compile=true --max-steps N`,
with and without the inspector, for two source trees (before and after a change), alternating the four
settings over `--rounds` rounds, each a fresh process with one torch thread.

Per run: wall seconds, training seconds and steps per second from the run's summary.json (compilation
included: it happens inside the first steps), and the number of stderr lines dynamo wrote (its recompile
warnings). Run one warm-up first (`--warmup`) so that neither side pays for a cold inductor cache alone.
Usage: python benchmarks/bench_compile_inspector.py --before /work/main/src [--steps 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AFTER = Path(__file__).resolve().parents[1] / "src"


def one_run(src: Path, inspect: bool, steps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-m", "lmlab", "train", "--max-steps", str(steps), "--out", out, "--force",
                "--device", "cpu", "--set", "train.compile=true", "--set", "train.threads=1"]
        started = time.perf_counter()
        done = subprocess.run(args + ([] if inspect else ["--no-inspect"]), capture_output=True, text=True,
                              env=env, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"lmlab train failed ({done.returncode}):\n{done.stderr[-3000:]}")
        summary = json.loads((Path(out) / "summary.json").read_text(encoding="utf-8"))
    steps_done, train_s = summary["steps"], summary["train_seconds"]
    dynamo = [line for line in done.stderr.splitlines() if "torch/_dynamo" in line]
    return {"wall_s": round(wall, 1), "steps": steps_done, "train_s": round(train_s, 1),
            "steps_per_s": round(steps_done / train_s, 2),
            "dynamo_warning_lines": len(dynamo), "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the src folder of the tree before")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", action="store_true", help="one untimed run of each tree first")
    args = parser.parse_args()
    trees = {"before": args.before, "after": AFTER}
    if args.warmup:
        for src in trees.values():
            one_run(src, True, 4)
    for r in range(args.rounds):
        for inspect in (True, False):
            for name, src in trees.items() if r % 2 == 0 else reversed(trees.items()):
                result = one_run(src, inspect, args.steps)
                print(json.dumps({"round": r, "tree": name, "inspector": inspect, **result}), flush=True)


if __name__ == "__main__":
    main()
