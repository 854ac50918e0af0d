"""Issue 2 benchmarks: the MLP's validation NLL on names.txt with its wall time, and counted-bigram fit speed.

    python benchmarks/bench_foundation.py [--steps 10000]

Split: names.txt lines shuffled with data.split_seed 1337, 80/10/10 (lmlab's default). Lecture figures to
compare (makemore part 2/3, different split of the same file): val 2.10-2.17.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.scoring import mean_nll
from lmlab.training.trainer import Trainer

NAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "names.txt"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--norm", default="none")
    args = parser.parse_args()
    results = {"machine": platform.node(), "date": time.strftime("%Y-%m-%d")}

    config = resolve_config({"data": {"source": str(NAMES)}, "model": {"name": "ngram"}})
    data = prepare_data(config.data)
    model = build_model(config, data.tokenizer, 0)
    started = time.perf_counter()
    for _ in range(10):
        Trainer(model, data.splits["train"], None, config.train).fit()
    seconds = (time.perf_counter() - started) / 10
    results["bigram_fit_tokens_per_s"] = round(data.splits["train"].num_predictions / seconds)

    config = resolve_config({"data": {"source": str(NAMES)}, "model": {"name": "mlp", "norm": args.norm},
                             "train": {"max_steps": args.steps, "eval_interval": args.steps}})
    model = build_model(config, data.tokenizer, data.splits["train"].block_size)
    started = time.perf_counter()
    Trainer(model, data.splits["train"], data.splits["val"], config.train).fit()
    results["mlp"] = {
        "config": config.to_dict()["model"] | {"steps": args.steps},
        "wall_s": round(time.perf_counter() - started, 1),
        **{f"{split}_nll": round(mean_nll(model, data.splits[split])[0], 4) for split in ("train", "val", "test")},
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
