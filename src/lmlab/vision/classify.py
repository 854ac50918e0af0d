"""An image classification run: load images, split them, train the conv classifier with lmlab's Trainer
while a callback saves the conv feature maps at each evaluation, and score validation accuracy. The run
directory holds config.json, classes.json, model.safetensors, metrics.jsonl, summary.json,
feature_maps/step_*.png and feature_maps.html.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.config import TrainConfig, build_config, to_dict
from lmlab.errors import DataError
from lmlab.training.run_dir import CONFIG_FILE, SUMMARY_FILE, RunDir
from lmlab.training.trainer import Trainer
from lmlab.vision.convnet import ConvNet, ConvNetConfig
from lmlab.vision.data import load_images
from lmlab.vision.feature_maps import FeatureMapCallback, accuracy

CLASSES_FILE = "classes.json"
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

    saved = {"data": {"source": source, "image_size": image_size, "grayscale": grayscale,
                      "val_fraction": val_fraction},
             "model": {"name": "convnet", **to_dict(model_config)}, "train": to_dict(train_config)}
    torch.manual_seed(train_config.seed)
    model = ConvNet(model_config)
    with RunDir(out) as out:  # locked: one writer at a time
        out.clear()
        out.write_json(CONFIG_FILE, saved)
        out.write_json(CLASSES_FILE, images.class_names)
        # The same few validation images at every evaluation, so the pictures differ only by training.
        shown = splits["val"].images[:num_images]
        maps = FeatureMapCallback(out.path, shown, splits["val"])
        trainer = Trainer(model, splits["train"], splits["val"], train_config, run_dir=out,
                          callbacks=[maps, *callbacks]).fit()
        return _finish(out, source, images.class_names, trainer, splits)


def _finish(out: RunDir, source: str, class_names: list[str], trainer, splits) -> ClassifyResult:
    """Score validation and train accuracy against chance; write summary.json."""
    val_accuracy = accuracy(trainer.model, splits["val"])
    chance = float(torch.bincount(splits["val"].labels).max()) / len(splits["val"])
    result = ClassifyResult(val_accuracy, accuracy(trainer.model, splits["train"]), chance,
                            class_names, len(splits["train"]), len(splits["val"]), trainer.step,
                            out / "feature_maps.html")
    summary = {"data": source, "classes": class_names, "steps": trainer.step,
               "train_images": result.num_train, "val_images": result.num_val,
               "val_accuracy": val_accuracy, "train_accuracy": result.train_accuracy, "chance": chance,
               "val_loss": trainer.last_val_loss}
    out.write_json(SUMMARY_FILE, summary)
    return result
