"""An image classification run: load images, split them, train the conv classifier with lmlab's Trainer
while a callback saves the conv feature maps at each evaluation, and score validation accuracy. The run
directory holds config.json, classes.json, model.safetensors, metrics.jsonl, summary.json,
feature_maps/step_*.png and feature_maps.html.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.config import TrainConfig, build_config, to_dict
from lmlab.errors import DataError
from lmlab.training.checkpoint import atomic_write_text
from lmlab.vision.convnet import ConvNet, ConvNetConfig
from lmlab.vision.data import load_images
from lmlab.vision.feature_maps import FeatureMapCallback, accuracy

TRAIN_DEFAULTS: dict[str, Any] = {"lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 20, "batch_size": 64,
                                  "max_steps": 500, "eval_interval": 100}


@dataclass
class ClassifyResult:
    accuracy: float  # on the validation split
    train_accuracy: float
    chance: float  # the accuracy of always answering the most common validation class
    class_names: list[str]
    num_train: int
    num_val: int
    steps: int
    report: Path


def run_classify(
    source: str,
    *,
    out: str | Path,
    image_size: int = 64,
    grayscale: bool = False,
    val_fraction: float = 0.2,
    num_images: int = 4,
    model_values: dict[str, Any] | None = None,
    train_values: dict[str, Any] | None = None,
    callbacks: tuple = (),
) -> ClassifyResult:
    from lmlab.training.trainer import Trainer

    images = load_images(source, image_size=image_size, grayscale=grayscale)
    train_config = build_config(TrainConfig, {**TRAIN_DEFAULTS, **(train_values or {})}, "train")
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    splits = images.split(val_fraction, seed=train_config.seed)
    if not len(splits["val"]) or not len(splits["train"]):
        raise DataError(f"{source}: {len(images.labels)} images are too few to split for validation")
    _, _, height, width = images.images.shape
    model_config = build_config(ConvNetConfig, {
        "in_channels": images.images.shape[1], "image_size": min(height, width),
        "n_classes": len(images.class_names), **(model_values or {}),
    }, "model")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"data": {"source": source, "image_size": image_size, "grayscale": grayscale,
                      "val_fraction": val_fraction},
             "model": {"name": "convnet", **to_dict(model_config)}, "train": to_dict(train_config)}
    atomic_write_text(out / "config.json", json.dumps(saved, indent=2) + "\n")
    atomic_write_text(out / "classes.json", json.dumps(images.class_names) + "\n")
    (out / "metrics.jsonl").unlink(missing_ok=True)

    torch.manual_seed(train_config.seed)
    model = ConvNet(model_config)
    # The same few validation images at every evaluation, so the pictures differ only by training.
    shown = splits["val"].images[:num_images]
    maps = FeatureMapCallback(out, shown, splits["val"])
    trainer = Trainer(model, splits["train"], splits["val"], train_config, run_dir=out,
                      callbacks=[maps, *callbacks]).fit()

    val_accuracy = accuracy(trainer.model, splits["val"])
    chance = float(torch.bincount(splits["val"].labels).max()) / len(splits["val"])
    result = ClassifyResult(val_accuracy, accuracy(trainer.model, splits["train"]), chance,
                            images.class_names, len(splits["train"]), len(splits["val"]), trainer.step,
                            out / "feature_maps.html")
    summary = {"data": source, "classes": images.class_names, "steps": trainer.step,
               "train_images": result.num_train, "val_images": result.num_val,
               "val_accuracy": val_accuracy, "train_accuracy": result.train_accuracy, "chance": chance,
               "val_loss": trainer.last_val_loss}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return result
