"""The default GPT on names.txt: test NLL and wall time within a 5-minute budget on CPU.

makemore's default transformer (4 layers, 4 heads, 64 wide) reports test ~1.92: the lowest of its test losses
measured every 500 steps, on its own 1,000 test names. `--split lmlab` (default) uses lmlab's lines split
(data.split_seed 1337: 25,627 / 3,203 / 3,203 names); `--split makemore` rebuilds makemore's. The test
standard error says how far another random test set of the same size could land by chance.
Usage: python benchmarks/bench_gpt_names.py [--data ../shared/data/names.txt] [--budget 300] [--split makemore]
       [--threads 2] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lmlab.config import parse_set_args
from lmlab.data.datasets import IGNORE_INDEX
from lmlab.models import count_parameters
from lmlab.run.config import build_model, merge_layers, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.scoring import mean_nll
from lmlab.training.trainer import Trainer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "names.txt"


@torch.no_grad()
def standard_error(model, dataset) -> float:
    """Standard error of the mean NLL per character, with names as the sampled units (a ratio estimator):
    how far another random test set of this size could land by chance."""
    model.eval()
    sums, counts = [], []
    for input_ids, labels in dataset.iter_batches(512):
        logits = model(input_ids).logits[:, :-1]
        losses = F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none")
        sums.append(losses.sum(1))
        counts.append((labels[:, 1:] != IGNORE_INDEX).sum(1))
    nll, n = torch.cat(sums).double(), torch.cat(counts).double()
    ratio = nll.sum() / n.sum()
    residual = nll - ratio * n
    return float((residual.pow(2).sum() * len(n) / (len(n) - 1)).sqrt() / n.sum())


def makemore_split(path: Path, folder: Path) -> tuple[Path, Path]:
    """makemore's own split, as its create_datasets makes it: words in file order, torch.manual_seed(3407)
    (its default seed) then torch.randperm; the last 1,000 are the test set, the rest (31,033) train. Written
    to two files, so lmlab reads them as any user's data."""
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
    words = [w for w in words if w]
    order = torch.randperm(len(words), generator=torch.Generator().manual_seed(3407)).tolist()
    test_size = min(1000, int(len(words) * 0.1))
    files = folder / "train.txt", folder / "test.txt"
    for file, part in zip(files, (order[:-test_size], order[-test_size:]), strict=True):
        file.write_text("\n".join(words[i] for i in part) + "\n", encoding="utf-8")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="gpt")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds at most")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: one per core")
    parser.add_argument("--split", choices=["lmlab", "makemore"], default="lmlab",
                        help="lmlab: data.split_seed shuffle, 80/10/10; makemore: its seed-3407 split, 31,033 "
                             "train / 1,000 test names and no validation set")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        base = {"data": {"source": args.data}, "model": {"name": args.model}, "train": {"budget": f"{args.budget:g}s"}}
        if args.split == "makemore":
            train_file, test_file = makemore_split(Path(args.data), Path(scratch))
            base["data"] = {"source": str(train_file), "val_fraction": 0.0, "test_fraction": 0.0}
        config = resolve_config(merge_layers(base, parse_set_args(args.set)))
        data = prepare_data(config.data)
        splits = {name: ds for name, ds in data.splits.items() if len(ds)}
        if args.split == "makemore":
            test_config = dataclasses.replace(config.data, source=str(test_file))
            splits["test"] = prepare_data(test_config, data.tokenizer).splits["train"]
        model = build_model(config, data.tokenizer, max(ds.block_size for ds in splits.values()))
        trainer = Trainer(model, splits["train"], splits.get("val"), config.train, run_dir=Path(scratch) / "run").fit()
    nll = {split: mean_nll(model, ds)[0] for split, ds in splits.items()}
    wall = time.perf_counter() - started
    print(f"{platform.node()} torch {torch.__version__} threads {torch.get_num_threads()}; {args.model} "
          f"({count_parameters(model):,} parameters) on {args.data}; {args.split} split: "
          + " / ".join(f"{len(ds)} {name}" for name, ds in splits.items()) + " names")
    print(f"{trainer.step} steps in {trainer.train_seconds:.0f} s training, {wall:.0f} s wall: "
          + "  ".join(f"{name} {value:.4f}" for name, value in nll.items())
          + f" nats/char (test standard error {standard_error(model, splits['test']):.4f})")


if __name__ == "__main__":
    main()
