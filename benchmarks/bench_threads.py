"""Threads on a busy machine: the default GPT's step time on the embedded names with train.threads=auto,
torch's default (one per core) and 1 thread, while busy-loop processes hold the cores.

The benchmark starts `--busy` processes (`python -c 'while True: pass'`), runs each setting in a fresh
process, alternating the settings over `--rounds` rounds, stops the busy processes and prints the median
seconds per step and the ratios. A setting with `+passive` runs with OMP_WAIT_POLICY=PASSIVE (OpenMP
threads sleep at once instead of spinning; the runtime reads it only at start-up). An idle one-thread run
first gives the reference the issue's target is stated against (busy step <= 2x idle one-thread step).
The time per step is the run's whole training time over its steps, so auto pays for its own measuring.
Usage: python benchmarks/bench_threads.py [--busy 2] [--steps 80] [--rounds 2] [--limit 120]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SETTINGS = {"auto": "auto", "default": "0", "1": "1", "auto+passive": "auto", "default+passive": "0"}


def one_run(threads: str, steps: int) -> None:
    """In a child process: train the default GPT for `steps` steps and print seconds per step as JSON."""
    import torch

    from lmlab.config import Typed  # the setting arrives as command-line text
    from lmlab.run.config import build_model, resolve_config
    from lmlab.run.data import prepare_data
    from lmlab.training.trainer import Trainer

    config = resolve_config({"model": {"name": "gpt"}, "train": {
        "max_steps": steps, "eval_interval": 10**6, "threads": Typed(threads), "device": "cpu"}})
    data = prepare_data(config.data)
    model = build_model(config, data.tokenizer, data.splits["train"].block_size)
    trainer = Trainer(model, data.splits["train"], None, config.train)
    trainer.fit()
    print(json.dumps({"seconds_per_step": trainer.train_seconds / trainer.step,
                      "threads_at_end": torch.get_num_threads()}))


def measure(setting: str, steps: int, limit: float) -> dict:
    """One run in a fresh process; a run past `limit` seconds is stopped and counted as limit / steps."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop("OMP_NUM_THREADS", None)
    if setting.endswith("+passive"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        out = subprocess.run([sys.executable, __file__, "--one", SETTINGS[setting], "--steps", str(steps)],
                             env=env, capture_output=True, text=True, check=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"seconds_per_step": limit / steps, "threads_at_end": "? (stopped at the time limit: at least)"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes to start")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--limit", type=float, default=120.0, help="seconds at most for one run")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_run(args.one if args.one == "auto" else int(args.one), args.steps)

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load average before: {os.getloadavg()}")
    idle = measure("1", args.steps, args.limit)["seconds_per_step"]
    print(f"idle, 1 thread: {1000 * idle:.1f} ms/step")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a killed benchmark still stops its busy loops
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    results: dict[str, list[float]] = {s: [] for s in args.settings}
    try:
        time.sleep(2)
        for _ in range(args.rounds):
            for setting in args.settings:
                run = measure(setting, args.steps, args.limit)
                results[setting].append(run["seconds_per_step"])
                print(f"  busy x{args.busy}, {setting}: {1000 * run['seconds_per_step']:.1f} ms/step "
                      f"(threads at the end: {run['threads_at_end']})", flush=True)
        load = os.getloadavg()
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    print(f"load average while busy: {load}")
    for setting, times in results.items():
        median = statistics.median(times)
        print(f"{setting:>16}: {1000 * median:7.1f} ms/step, {median / idle:.2f}x the idle one-thread step")


if __name__ == "__main__":
    main()
