"""Where images come from: a folder with one subfolder per class (as Keras' image_dataset_from_directory
reads it: classes in alphabetical order, every image resized to one size), or the 8x8 digits that ship
inside scikit-learn (the optional extra `lmlab[vision]`). Both become an ImageDataset of float images in
[0, 1] and integer labels.

Shape legend: N images, B batch, C channels, H height, W width.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lmlab.data.datasets import split_indices
from lmlab.errors import DataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads


class ImageDataset:
    """(images (B, C, H, W), labels (B,)) batches. `count_targets` tells the trainer this is not a token
    dataset: it counts images and evaluates the model's own loss."""

    def __init__(self, images: Tensor, labels: Tensor):
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images.float()  # (N, C, H, W)
        self.labels = labels.long()  # (N,)
        self.block_size = 0  # the trainer's interface for token datasets; images have no context length
        self.unit = "images"  # what the trainer counts and shows a rate of (images/s), for tokens

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_predictions(self) -> int:
        return len(self.labels)

    @staticmethod
    def count_targets(targets: Tensor) -> int:
        return targets.numel()

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        rows = torch.randint(len(self.labels), (batch_size,), generator=generator)
        return self.images[rows], self.labels[rows]

    def iter_batches(self, batch_size: int, max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        limit = len(self.labels) if max_tokens is None else min(len(self.labels), max_tokens)
        for start in range(0, limit, batch_size):
            stop = min(start + batch_size, limit)
            yield self.images[start:stop], self.labels[start:stop]


@dataclass
class ImageSet:
    name: str
    images: Tensor  # (N, C, H, W) in [0, 1]
    labels: Tensor  # (N,)
    class_names: list[str]

    def split(self, val_fraction: float = 0.2, seed: int = 1337) -> dict[str, ImageDataset]:
        """A seeded shuffled split, as image_dataset_from_directory's validation_split with a seed."""
        index = split_indices(len(self.labels), val_fraction, 0.0, seed)
        return {name: ImageDataset(self.images[rows], self.labels[rows])
                for name, rows in index.items() if name != "test"}


def load_digits() -> ImageSet:
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 grey images of 0-9, pixel values 0-16."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("the embedded digits set needs scikit-learn: pip install 'lmlab[vision]'") from None
    bunch = sklearn_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    return ImageSet("digits", images, torch.tensor(bunch.target), [str(c) for c in bunch.target_names])


def load_image_folder(folder: str | Path, *, image_size: int = 64, grayscale: bool = False) -> ImageSet:
    """Every image under folder/CLASS/, resized to image_size x image_size (bilinear, aspect ratio not kept,
    as Keras does by default); labels are the class folders' positions in alphabetical order."""
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected digits, or a folder of class subfolders)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{folder}: found {len(classes)} class subfolder(s); a classifier needs at least 2")
    arrays, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{folder / name}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        for path in files:
            try:
                with Image.open(path) as img:
                    img = img.convert("L" if grayscale else "RGB").resize((image_size, image_size),
                                                                           Image.Resampling.BILINEAR)
                    arrays.append(np.asarray(img, dtype=np.float32) / 255.0)
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"{path}: not a readable image ({type(err).__name__})") from None
            labels.append(label)
    stacked = np.stack(arrays)  # (N, H, W) or (N, H, W, C)
    images = torch.from_numpy(stacked)
    images = images.unsqueeze(1) if grayscale else images.permute(0, 3, 1, 2)  # (N, C, H, W)
    return ImageSet(folder.name, images.contiguous(), torch.tensor(labels), classes)


def load_images(source: str, *, image_size: int = 64, grayscale: bool = False) -> ImageSet:
    """`digits` or a folder of class subfolders."""
    if source == "digits":
        return load_digits()
    return load_image_folder(source, image_size=image_size, grayscale=grayscale)
