"""The default GPT on names.txt: test NLL and wall time within a 5-minute budget on CPU.

makemore's default transformer (4 layers, 4 heads, 64 wide) reaches test ~1.92. The split is lmlab's default
for lines mode: shuffled with data.split_seed 1337, 80% train / 10% val / 10% test (3,203 test names).
Usage: python benchmarks/bench_gpt_names.py [--data ../shared/data/names.txt] [--budget 300] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from lmlab.config import parse_set_args
from lmlab.models import count_parameters
from lmlab.train.evaluation import mean_nll
from lmlab.train.run import build_model, layered_config, prepare_data, resolve_config
from lmlab.train.trainer import Trainer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "names.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="gpt")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds at most")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    started = time.perf_counter()
    base = {"data": {"source": args.data}, "model": {"name": args.model}, "train": {"time_budget": args.budget}}
    config = resolve_config(layered_config(base, parse_set_args(args.set)))
    data = prepare_data(config.data)
    model = build_model(config, data.tokenizer, max(ds.block_size for ds in data.splits.values()))
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=run_dir).fit()
    nll = {split: mean_nll(model, ds)[0] for split, ds in data.splits.items()}
    wall = time.perf_counter() - started
    print(f"{platform.node()} torch {torch.__version__} threads {torch.get_num_threads()}; {args.model} "
          f"({count_parameters(model):,} parameters) on {args.data}; split 80/10/10 seed {config.data.split_seed} "
          f"({len(data.splits['test'])} test names)")
    print(f"{trainer.step} steps in {trainer.train_seconds:.0f} s training, {wall:.0f} s wall: "
          f"train {nll['train']:.4f}  val {nll['val']:.4f}  test {nll['test']:.4f} nats/char")


if __name__ == "__main__":
    main()
