"""nanoGPT's CPU Shakespeare run, reproduced with lmlab's GPT (reference: val ~1.88, ~3 min on a MacBook).

nanoGPT's README command: `train.py config/train_shakespeare_char.py --device=cpu --compile=False
--eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`, with that config's lr 1e-3 -> min_lr 1e-4 (cosine),
100 warm-up steps, weight decay 0.1, beta2 0.99, grad clip 1.0, no biases. Data: characters of
tinyshakespeare.txt, first 90% train, last 10% val. nanoGPT reports val as the mean of 20 random batches;
lmlab reports the exact NLL over every val character, and the 20-batch estimate beside it: its mean and
spread over `--draws` independent draws (nanoGPT's one draw, fixed by its seed, is one of them), so a
difference smaller than that spread says nothing.

nanoGPT's GPU figure (1.4697) is its *best* validation estimate: config/train_shakespeare_char.py says "we
expect to overfit on this small dataset, so only save when val improves", evaluates every 250 iterations and
keeps the checkpoint with the lowest val. So besides the final val this prints the validation curve (the
trainer's sampled estimate every `eval_interval` steps) and its lowest point, the figure to set beside it.

    PYTHONPATH=src python benchmarks/shakespeare_char.py [--steps 2000] [--device cpu] [--compile]
    PYTHONPATH=src python benchmarks/shakespeare_char.py --preset gpu   # the 6x6x384, ctx 256 model
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from lmlab.config import parse_set_args
from lmlab.models import count_parameters
from lmlab.run.config import build_model, merge_layers, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.scoring import mean_nll
from lmlab.training.trainer import Trainer

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"

PRESETS = {
    # nanoGPT README, "I only have a macbook": val 1.88
    "cpu": {"model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0},
            "data": {"block_size": 64}, "train": {"batch_size": 12, "max_steps": 2000, "eval_interval": 250}},
    # config/train_shakespeare_char.py on a GPU: val 1.4697 after 5000 iterations (~3 min on an A100)
    "gpu": {"model": {"n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2},
            "data": {"block_size": 256}, "train": {"batch_size": 64, "max_steps": 5000, "eval_interval": 250}},
}


def estimate_like_nanogpt(model, dataset, batch_size: int, iters: int = 20, seed: int = 0) -> float:
    """Mean loss over `iters` random batches, as nanoGPT's estimate_loss."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        losses = [float(model(x.to(device), labels=y.to(device)).loss)
                  for x, y in (dataset.sample_batch(batch_size, generator) for _ in range(iters))]
    return sum(losses) / len(losses)


def estimator_spread(model, dataset, batch_size: int, draws: int) -> tuple[float, float]:
    """Mean and standard deviation of the 20-batch estimate over `draws` seeds: how far one draw can fall."""
    values = torch.tensor([estimate_like_nanogpt(model, dataset, batch_size, seed=s) for s in range(draws)])
    return float(values.mean()), float(values.std())


class ValCurve:
    """Keeps the trainer's periodic validation estimates, as (step, val)."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_eval_end(self, trainer, record: dict) -> None:
        self.points.append((record["step"], record["val_loss"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    parser.add_argument("--steps", type=int, help="override the preset's iterations")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--data", type=Path, default=SHAKESPEARE, help="tinyshakespeare.txt")
    parser.add_argument("--draws", type=int, default=50, help="draws of the 20-batch estimate for its spread")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as lmlab train --set")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    train = {"lr": 1e-3, "min_lr_ratio": 0.1, "schedule": "cosine", "warmup_steps": 100, "weight_decay": 0.1,
             "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0, "device": args.device, "compile": args.compile,
             "log_interval": 50, **preset["train"]}
    if args.steps:
        train["max_steps"] = args.steps
    config = resolve_config(merge_layers({
        "data": {"source": str(args.data), "mode": "stream", "val_fraction": 0.1, "test_fraction": 0.0,
                 **preset["data"]},
        "model": {"name": "gpt", "bias": False, **preset["model"]},
        "train": train,
    }, parse_set_args(args.set)))
    data = prepare_data(config.data)
    model = build_model(config, data.tokenizer, config.data.block_size)
    curve = ValCurve()
    trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, callbacks=[curve])
    started = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - started
    val, val_tokens = mean_nll(trainer.model, data.splits["val"], device=trainer.device)
    spread_mean, spread_std = estimator_spread(trainer.model, data.splits["val"], config.train.batch_size,
                                               args.draws)
    best_step, best_val = min(curve.points, key=lambda p: p[1]) if curve.points else (None, None)
    result = {
        "machine": platform.node(),
        "device": str(trainer.device) if trainer.device.type == "cpu" else torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d"),
        "preset": args.preset,
        "parameters": count_parameters(trainer.model),
        "steps": trainer.step,
        "val_nll_exact": round(val, 4),
        "val_tokens": val_tokens,
        "val_nll_20_batches": round(estimate_like_nanogpt(trainer.model, data.splits["val"],
                                                          config.train.batch_size), 4),
        "val_nll_20_batches_over_draws": f"{spread_mean:.4f} +- {spread_std:.4f} (sd of one draw, "
                                         f"{args.draws} draws)",
        "val_curve": [[step, round(v, 4)] for step, v in curve.points],
        "best_periodic_val": best_val and round(best_val, 4),
        "best_periodic_val_step": best_step,
        "train_nll_20_batches": round(estimate_like_nanogpt(trainer.model, data.splits["train"],
                                                            config.train.batch_size), 4),
        "nanogpt_val": 1.88 if args.preset == "cpu" else 1.4697,
        "wall_seconds": round(wall, 1),
        "train_tokens_per_s": round(trainer.tokens_seen / max(trainer.train_seconds, 1e-9)),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
