"""An image classification run: load images, split them, train the conv classifier with lmlab's Trainer
while a callback saves the conv feature maps at each evaluation, and score validation accuracy. The run
directory holds config.json, classes.json, model.safetensors, metrics.jsonl, summary.json,
feature_maps/step_*.png and feature_maps.html.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmlab.config import TrainConfig, build_config, to_dict
from lmlab.errors import ConfigError, DataError
from lmlab.inspector.finding import Finding
from lmlab.run.folder import CONFIG_FILE, SUMMARY_FILE, RunDir
from lmlab.training.callbacks import EarlyStopping
from lmlab.training.trainer import Trainer
from lmlab.vision.augment import Augment, AugmentedImages
from lmlab.vision.convnet import ConvNet, ConvNetConfig
from lmlab.vision.data import load_images
from lmlab.vision.feature_maps import FeatureMapCallback, accuracy

# Small folders overfit: weight decay and dropout by default, augmentation and early stopping in run_classify.
CLASSES_FILE = "classes.json"
TRAIN_DEFAULTS: dict[str, Any] = {"lr": 3e-3, "weight_decay": 0.05, "warmup_steps": 20, "batch_size": 64,
                                  "max_steps": 1000, "eval_interval": 50}
MODEL_DEFAULTS: dict[str, Any] = {"dropout": 0.25}
OVERFIT_TRAIN_ACCURACY = 0.95  # a finding when train accuracy is at least this ...
NEAR_CHANCE = 0.10  # ... while validation accuracy is within this of chance


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
    augment: str = "none"  # what training batches went through
    best_step: int | None = None  # early stopping's best evaluation (its weights are the model's)
    findings: list[Finding] = field(default_factory=list)


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
    augment: str | Augment | None = "auto",
    patience: int = 5,
) -> ClassifyResult:
    """augment: 'auto' (crop, flip and rotate; none for digits), 'none', a comma-separated list of crop,
    flip, rotate, or an Augment; patience: evaluations without a better validation loss before early
    stopping, keeping the best weights (0: off)."""
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
        "n_classes": len(images.class_names), **MODEL_DEFAULTS, **(model_values or {}),
    }, "model")
    augmenter = resolve_augment(augment, source)
    train_data = AugmentedImages(splits["train"], augmenter) if augmenter else splits["train"]
    stopper = early_stopping(patience)

    saved = {"data": {"source": source, "image_size": image_size, "grayscale": grayscale,
                      "val_fraction": val_fraction},
             "model": {"name": "convnet", **to_dict(model_config)}, "train": to_dict(train_config),
             "augment": augmenter.describe() if augmenter else "none", "patience": patience}
    torch.manual_seed(train_config.seed)
    model = ConvNet(model_config)
    with RunDir(out) as out:  # locked: one writer at a time
        out.clear()
        out.write_json(CONFIG_FILE, saved)
        out.write_json(CLASSES_FILE, images.class_names)
        # The same few validation images at every evaluation, so the pictures differ only by training.
        shown = splits["val"].images[:num_images]
        maps = FeatureMapCallback(out.path, shown, splits["val"])
        trainer = Trainer(model, train_data, splits["val"], train_config, run_dir=out,
                          callbacks=[*stopper, maps, *callbacks]).fit()

        val_accuracy = accuracy(trainer.model, splits["val"])
        chance = float(torch.bincount(splits["val"].labels).max()) / len(splits["val"])
        result = ClassifyResult(val_accuracy, accuracy(trainer.model, splits["train"]), chance,
                                images.class_names, len(splits["train"]), len(splits["val"]), trainer.step,
                                out / "feature_maps.html", augment=augmenter.describe() if augmenter else "none",
                                best_step=stopper[0].best_step if stopper else None)
        result.findings = overfit_findings(result, splits["train"].labels)
        summary = {"data": source, "classes": images.class_names, "steps": trainer.step,
                   "train_images": result.num_train, "val_images": result.num_val,
                   "val_accuracy": val_accuracy, "train_accuracy": result.train_accuracy, "chance": chance,
                   "val_loss": trainer.last_val_loss, "augment": result.augment, "best_step": result.best_step,
                   "findings": [f.to_dict() for f in result.findings]}
        out.write_json(SUMMARY_FILE, summary)
    return result


# ----------------------------------------------------------------------------------------------------------
# Before the Trainer: augmentation and early stopping; after it: what the accuracies say


def resolve_augment(augment: str | Augment | None, source: str) -> Augment | None:
    if isinstance(augment, Augment) or augment is None:
        return augment
    if augment == "auto":
        # Digits are no small folder (1,797 images), and one pixel is an eighth of an 8x8 digit: augmenting
        # them only costs accuracy (0.992 without, 0.978 with crops, 0.969 with crops and turns).
        return None if source == "digits" else Augment()
    return Augment.parse(augment)


def early_stopping(patience: int) -> list:
    if patience < 0:
        raise ConfigError(f"--patience must be >= 0, got {patience}")
    return [EarlyStopping(patience=patience, restore_best_weights=True)] if patience > 0 else []


def overfit_findings(result: ClassifyResult, train_labels: torch.Tensor) -> list[Finding]:
    """A finding (the inspector's record) when the net learnt its training images by heart but does
    no better than chance on the others: the usual fate of a few dozen images per class."""
    if result.train_accuracy < OVERFIT_TRAIN_ACCURACY or result.accuracy > result.chance + NEAR_CHANCE:
        return []
    per_class = int(torch.bincount(train_labels, minlength=len(result.class_names)).min())
    return [Finding("warning", "too_few_images", None,
                    f"too few images per class: {per_class}; train accuracy {result.train_accuracy:.3f} but "
                    f"validation {result.accuracy:.3f}, near chance ({result.chance:.3f})",
                    {"images_per_class": per_class, "train_accuracy": result.train_accuracy,
                     "val_accuracy": result.accuracy, "chance": result.chance},
                    "augment (--augment crop,flip,rotate) or collect more")]
