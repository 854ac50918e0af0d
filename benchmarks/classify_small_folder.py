"""Image classification on a small folder (issue 19): 30 generated images per class, circle vs square
outlines at 32 px, with `lmlab classify`'s defaults (augmentation, weight decay, dropout, early stopping) and
with all of them off (the round-1 recipe). The validation split holds only 12 images, so each trained net is
also scored on 400 fresh images from the same generator (another seed). Then digits with the defaults.
Targets: validation accuracy >= 0.80 on the folder; digits >= 0.97.

    PYTHONPATH=src python benchmarks/classify_small_folder.py [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from lmlab.vision.classify import run_classify
from lmlab.vision.convnet import ConvNet, ConvNetConfig
from lmlab.vision.data import ImageDataset, load_image_folder
from lmlab.vision.feature_maps import accuracy
from lmlab.vision.shapes import write_shapes_folder

ROUND_ONE = {"augment": "none", "patience": 0, "model_values": {"dropout": 0.0},
             "train_values": {"weight_decay": 0.0, "max_steps": 500, "eval_interval": 100}}


def fresh_accuracy(run: Path, seed: int) -> float:
    """The run's saved net on 400 new images from the generator."""
    import safetensors.torch

    config = json.loads((run / "config.json").read_text())["model"]
    config.pop("name")
    model = ConvNet(ConvNetConfig(**config))
    safetensors.torch.load_model(model, str(run / "model.safetensors"))
    with tempfile.TemporaryDirectory() as folder:
        images = load_image_folder(write_shapes_folder(Path(folder), per_class=200, seed=seed), image_size=32)
    return accuracy(model, ImageDataset(images.images, images.labels))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, {args.threads} thread(s), "
          f"load {Path('/proc/loadavg').read_text().split()[0]}")
    print("| data | recipe | val accuracy (12) | fresh accuracy (400) | train accuracy | best step / steps | "
          "findings | seconds |\n|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        for recipe, kwargs in (("defaults", {}), ("round 1 (no augment/decay/dropout/stopping)", ROUND_ONE)):
            with tempfile.TemporaryDirectory() as folder:
                data = write_shapes_folder(Path(folder) / "shapes", seed=seed)
                started = time.perf_counter()
                result = run_classify(str(data), out=Path(folder) / "run", image_size=32, **kwargs)
                seconds = time.perf_counter() - started
                fresh = fresh_accuracy(Path(folder) / "run", seed + 1000)
            findings = "; ".join(f["what"].split(";")[0] for f in result.findings) or "none"
            print(f"| shapes seed {seed} | {recipe} | {result.accuracy:.3f} | {fresh:.3f} | "
                  f"{result.train_accuracy:.3f} | {result.best_step} / {result.steps} | {findings} | {seconds:.0f} |",
                  flush=True)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = run_classify("digits", out=folder)
        print(f"| digits | defaults ({result.augment}) | {result.accuracy:.4f} ({result.num_val}) | | "
              f"{result.train_accuracy:.4f} | {result.best_step} / {result.steps} | | "
              f"{time.perf_counter() - started:.0f} |")


if __name__ == "__main__":
    main()
