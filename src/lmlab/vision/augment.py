"""Data augmentation for small image folders, in plain torch ops (torchvision's wheels do not install beside
this torch): every training batch is seen through a fresh random crop, left-right flip and small rotation,
so a net cannot simply remember its few pictures. Validation images are never augmented.

All three are one affine map per image, sampled with `F.affine_grid` + `F.grid_sample`:
- crop: a random crop of the picture padded by `shift` pixels on each side (padding by reflection), i.e. a
  random translation by up to `shift` pixels in x and y;
- flip: a mirror image left-right with probability 1/2 (not for digits or text, whose mirror images mean
  something else, or nothing);
- rotate: a turn by up to `degrees` either way about the centre.

Shape legend: B batch, C channels, H height, W width.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.errors import ConfigError

KINDS = ("crop", "flip", "rotate")


@dataclass(frozen=True, kw_only=True, slots=True)
class Augment:
    crop: bool = True
    flip: bool = True
    rotate: bool = True
    shift: int | None = None  # pixels; default: an eighth of the picture's side (4 px at 32, 1 px at 8)
    degrees: float = 10.0

    def __post_init__(self) -> None:
        if self.shift is not None and self.shift < 0:
            raise ConfigError(f"augment shift must be >= 0 pixels, got {self.shift}")
        if not 0 <= self.degrees <= 180:
            raise ConfigError(f"augment degrees must be in [0, 180], got {self.degrees}")

    @classmethod
    def parse(cls, text: str) -> Augment | None:
        """'crop,flip,rotate' (any of them, comma-separated) or 'none'."""
        kinds = [k.strip() for k in text.split(",") if k.strip()]
        if kinds == ["none"]:
            return None
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ConfigError(f"--augment takes 'none' or a comma-separated list of {', '.join(KINDS)}, got {text!r}")
        return cls(**{k: k in kinds for k in KINDS})

    def describe(self) -> str:
        return ",".join(k for k in KINDS if getattr(self, k)) or "none"

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """A randomly moved, mirrored and turned copy of each image, (B, C, H, W) -> (B, C, H, W)."""
        b, _, h, w = images.shape
        shift = max(1, min(h, w) // 8) if self.shift is None else self.shift
        angle = torch.zeros(b)
        if self.rotate and self.degrees > 0:
            angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(self.degrees)
        mirror = torch.ones(b)
        if self.flip:
            mirror = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
        move = torch.zeros(b, 2)
        if self.crop and shift > 0:
            pixels = torch.randint(-shift, shift + 1, (b, 2), generator=generator).float()
            move = pixels * 2 / torch.tensor([w, h], dtype=torch.float32)  # in grid_sample's [-1, 1] units
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Output pixel (x, y) reads input (mirror * (cos x - sin y) + tx, sin x + cos y + ty).
        theta = torch.stack([torch.stack([mirror * cos, -mirror * sin, move[:, 0]], -1),
                             torch.stack([sin, cos, move[:, 1]], -1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)  # (B, H, W, 2)
        return F.grid_sample(images, grid.to(images.device), mode="bilinear", padding_mode="reflection",
                             align_corners=False)


class AugmentedImages:
    """An ImageDataset whose training batches pass through `augment`; evaluation batches are the originals.
    Everything else (len, labels, images, count_targets) is the wrapped dataset's."""

    def __init__(self, dataset, augment: Augment):
        self.dataset, self.augment = dataset, augment

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        images, labels = self.dataset.sample_batch(batch_size, generator)
        return self.augment(images, generator), labels

    def iter_batches(self, batch_size: int, max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        return self.dataset.iter_batches(batch_size, max_tokens)
