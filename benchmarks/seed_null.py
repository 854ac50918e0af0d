"""Does `lmlab compare` call two identical configs different? Trains R pairs of seed groups of one config
(group A seeds s..s+k-1, group B the next k seeds, so nothing but the seed differs) and counts how often the
comparison's p-value is above 0.05: about 95% is what a calibrated test gives. Also counts the same for single
runs (the first seed of each group), which `compare` pairs by evaluation unit: that SE covers which text was
scored but not the training's randomness, so it calls seeds different far more often; that is why tables
want --seeds.

    python3 benchmarks/seed_null.py --repeats 20 --seeds 3 --model bigram --steps 100 --out /tmp/seed-null
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="bigram")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--data", default="names")
    parser.add_argument("--out", default="runs/seed-null")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from lmlab.compare import difference, summarize
    from lmlab.experiments.seeds import train_seeds
    from lmlab.run.config import resolve_config
    from lmlab.run.data import prepare_data

    config = {"data": {"source": args.data}, "model": {"name": args.model},
              "train": {"max_steps": args.steps, "threads": 1, "early_stopping": 0}}
    data = prepare_data(resolve_config(config).data)
    out = Path(args.out)
    started, load = time.time(), os.getloadavg()[0]
    groups, singles = [], []
    for r in range(args.repeats):
        first = 1000 + 2 * args.seeds * r
        sides = []
        for side in range(2):
            seeds = list(range(first + side * args.seeds, first + (side + 1) * args.seeds))
            train_seeds(config, out=out / f"r{r}-{side}", seeds=seeds, data=data, inspect=False)
            sides.append(out / f"r{r}-{side}")
        grouped = difference(summarize(sides[0]), summarize(sides[1]), "val")
        single = difference(summarize(sides[0] / f"seed-{first}"),
                            summarize(sides[1] / f"seed-{first + args.seeds}"), "val")
        groups.append(grouped.p_value)
        singles.append(single.p_value)
        print(f"repeat {r}: groups {grouped.format()} ({grouped.method}); single runs {single.format()}", flush=True)
    print(f"p > 0.05 in {sum(p > 0.05 for p in groups)}/{args.repeats} group comparisons ({args.seeds} seeds a side, "
          f"unpaired over seeds) and {sum(p > 0.05 for p in singles)}/{args.repeats} single-run comparisons (paired by "
          f"evaluation unit); {time.time() - started:.0f} s, load average {load:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
