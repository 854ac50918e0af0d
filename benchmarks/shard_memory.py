"""Peak memory of stream training as the corpus grows: prepared shards (np.memmap) versus text in memory.

Builds corpora of 1x and Kx the embedded `pystdlib` set, prepares each with `lmlab data prepare` (char
level), then trains the default MLP for a few steps on (a) the prepared folder and (b) the text file, each
in its own process, and reports that process's peak resident set size (os.wait4's ru_maxrss).

    PYTHONPATH=src python benchmarks/shard_memory.py [--repeat 4] [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_and_measure(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of `python -m lmlab ARGS`."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"lmlab {' '.join(args)} failed:\n{err}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from lmlab.data import load_corpus

    base = "\n".join(load_corpus("pystdlib").documents)
    common = ["--max-steps", str(args.steps), "--set", "data.block_size=64", "--set", "train.eval_interval=50",
              "--set", "train.eval_max_tokens=20000", "--model", "mlp"]
    print(f"# {platform.node()} {time.strftime('%Y-%m-%d')}: peak RSS of `lmlab train` ({args.steps} steps)")
    print("| corpus | text MB | prepare s | shards: peak RSS MB | text in memory: peak RSS MB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1, args.repeat):
            text_path = Path(tmp) / f"stdlib{k}.txt"
            text_path.write_text("\n".join([base] * k), encoding="utf-8")
            folder = Path(tmp) / f"prep{k}"
            started = time.perf_counter()
            prep = subprocess.run([sys.executable, "-m", "lmlab", "data", "prepare", str(text_path), "--out",
                                   str(folder)], env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
                                  capture_output=True, text=True, check=True)
            prepare_s = time.perf_counter() - started
            shard_rss, _ = run_and_measure(["train", "--data", str(folder), "--out", f"{tmp}/run_s{k}", *common])
            text_rss, _ = run_and_measure(["train", "--data", str(text_path), "--out", f"{tmp}/run_t{k}",
                                           "--mode", "stream", *common])
            size = text_path.stat().st_size / 1e6
            print(f"| pystdlib x{k} | {size:.0f} | {prepare_s:.0f} | {shard_rss:.0f} | {text_rss:.0f} |")
            print(f"  prepare: {prep.stdout.strip()}", file=sys.stderr)


if __name__ == "__main__":
    main()
