"""Pictures of what each conv layer computes, for a few fixed images, saved at every evaluation so a user
can watch the filters form: the notes' Keras `activation_model` plot, with forward hooks instead of a
second model.

Each map is normalised for display as the notes do: subtract its mean, divide by its std, times 64 plus 128,
clipped to 0..255, so a map's contrast shows whatever its scale. Any model with nn.Conv2d layers works; the
maps are the convolutions' outputs (before the activation).

Shape legend: N images, C channels, H height, W width.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lmlab.files import atomic_write, atomic_write_text
from lmlab.training.callbacks import Callback

CELL = 48  # pixels per map in the mosaic; small maps are enlarged by repeating pixels, so none is blurred
GAP = 2


@torch.no_grad()
def capture_feature_maps(model: nn.Module, images: Tensor) -> dict[str, np.ndarray]:
    """{conv layer name: (N, C, H, W) outputs} for a batch of images, in the order the layers run."""
    maps: dict[str, np.ndarray] = {}
    def keep(name: str):
        return lambda _module, _inputs, output: maps.__setitem__(name, output.detach().float().cpu().numpy())

    hooks = [module.register_forward_hook(keep(name))
             for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        model(images.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return maps


def normalise_for_display(feature_map: np.ndarray) -> np.ndarray:
    """One (H, W) map -> uint8 in 0..255 centred on 128 (the notes' mean/std, *64 +128, clip)."""
    x = np.asarray(feature_map, dtype=np.float64)
    x = x - x.mean()
    std = x.std()
    if std > 0:  # a flat map (a dead filter) stays mid-grey instead of dividing by zero
        x = x / std
    return np.clip(x * 64 + 128, 0, 255).astype(np.uint8)


def _cell(picture: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (CELL, CELL), enlarged by whole-pixel repetition then padded."""
    h, w = picture.shape
    k = max(1, CELL // max(h, w))
    big = np.kron(picture, np.ones((k, k), dtype=np.uint8))[:CELL, :CELL]
    out = np.zeros((CELL, CELL), dtype=np.uint8)
    out[: big.shape[0], : big.shape[1]] = big
    return out


def feature_map_mosaic(images: Tensor, maps: dict[str, np.ndarray], max_channels: int = 8) -> np.ndarray:
    """A grey (rows, cols) uint8 picture: for each image, one row per conv layer; column 0 holds the input
    image (on the image's first row), then the layer's first `max_channels` maps."""
    n_cols = 1 + min(max_channels, max(m.shape[1] for m in maps.values()))
    rows = []
    for i in range(len(images)):
        picture = images[i].float().mean(0).cpu().numpy()  # (H, W): channels averaged to grey
        for layer_index, layer_maps in enumerate(maps.values()):
            first = _cell(np.clip(picture * 255, 0, 255).astype(np.uint8)) if layer_index == 0 else None
            cells = [first if first is not None else np.zeros((CELL, CELL), dtype=np.uint8)]
            cells += [_cell(normalise_for_display(layer_maps[i, c])) for c in range(min(max_channels,
                                                                                         layer_maps.shape[1]))]
            cells += [np.zeros((CELL, CELL), dtype=np.uint8)] * (n_cols - len(cells))
            rows.append(np.concatenate([np.pad(c, ((0, GAP), (0, GAP))) for c in cells], axis=1))
        rows.append(np.zeros((GAP * 2, rows[-1].shape[1]), dtype=np.uint8))  # space between images
    return np.concatenate(rows, axis=0)


def save_png(grey: np.ndarray, path: Path, colormap: str = "inferno") -> Path:
    """Write a uint8 picture through a matplotlib colormap (the notes plot with 'inferno')."""
    import matplotlib
    from PIL import Image

    rgba = matplotlib.colormaps[colormap](grey)  # (rows, cols, 4) floats in [0, 1]
    picture = Image.fromarray((rgba[..., :3] * 255).round().astype(np.uint8))
    atomic_write(Path(path), lambda tmp: picture.save(tmp, format="PNG"))
    return path


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} img{{image-rendering:pixelated;max-width:100%}}
.meta{{color:#555}}</style></head><body>
<h1>{title}</h1>
<p>Each block is one image: the input on the left, then the first maps of each conv layer, one row per
layer, from the first layer down. Each map is normalised on its own (mean/std, &times;64 +128, clipped to
0&ndash;255). Drag the slider to watch the maps change as training goes on.</p>
<input type="range" id="pick" min="0" max="{last}" value="{last}" style="width:60%">
<p class="meta" id="caption"></p>
<img id="maps" alt="feature maps">
<h2>All evaluations</h2>
<div id="all">
{all}
</div>
<script>
// After the images it borrows: the slider shows the embedded pictures listed above.
const frames = {frames};
const shots = document.querySelectorAll("#all img");
const pick = document.getElementById("pick");
function show() {{
  document.getElementById("maps").src = shots[pick.value].src;
  document.getElementById("caption").textContent = frames[pick.value].caption;
}}
pick.addEventListener("input", show); show();
</script>
</body></html>
"""


def write_page(path: Path, frames: list[dict[str, Any]], title: str) -> Path:
    """A self-contained HTML page: every saved mosaic embedded as a base64 PNG (so the page can be mailed or
    moved alone), with a slider over time. Each frame's `src` is its PNG's path relative to the page."""
    listed = "\n".join(
        f'<h3>{html.escape(f["caption"])}</h3><img src="data:image/png;base64,{_base64(path.parent / f["src"])}" '
        f'alt="{html.escape(f["src"])}">' for f in frames)
    shown = [{"step": f["step"], "caption": f["caption"]} for f in frames]
    atomic_write_text(path, _PAGE.format(title=html.escape(title), last=max(len(frames) - 1, 0),
                                 frames=json.dumps(shown), all=listed))
    return path


def _base64(png: Path) -> str:
    return base64.b64encode(png.read_bytes()).decode("ascii")


class FeatureMapCallback(Callback):
    """At the start and after every evaluation: the conv feature maps of `images` saved as
    run_dir/feature_maps/step_NNNNNN.png, validation accuracy computed, and feature_maps.html rewritten."""

    def __init__(self, run_dir: str | Path, images: Tensor, val_data=None, *, max_channels: int = 8):
        self.run_dir = Path(run_dir)
        self.images = images
        self.val_data = val_data
        self.max_channels = max_channels
        self.frames: list[dict[str, Any]] = []
        self.accuracy: float | None = None

    def on_train_begin(self, trainer) -> None:
        if trainer.step == 0:
            self._snapshot(trainer, None)

    def on_eval_end(self, trainer, record: dict[str, Any]) -> None:
        if self.frames and self.frames[-1]["step"] == trainer.step:
            return  # the final evaluation can repeat the last one's step
        self._snapshot(trainer, record.get("val_loss"))

    def _snapshot(self, trainer, val_loss: float | None) -> None:
        folder = self.run_dir / "feature_maps"
        folder.mkdir(parents=True, exist_ok=True)
        maps = capture_feature_maps(trainer.model, self.images)
        name = f"step_{trainer.step:06d}.png"
        save_png(feature_map_mosaic(self.images, maps, self.max_channels), folder / name)
        epochs = trainer.step * trainer.config.batch_size / max(len(trainer.train_data), 1)
        caption = f"step {trainer.step} (epoch {epochs:.1f})"
        if self.val_data is not None:
            self.accuracy = accuracy(trainer.model, self.val_data)
            caption += f", validation accuracy {self.accuracy:.3f}"
        if val_loss is not None:
            caption += f", validation loss {val_loss:.4f}"
        caption += "; rows: " + ", ".join(f"{layer} ({m.shape[1]} maps)" for layer, m in maps.items())
        self.frames.append({"step": trainer.step, "src": f"feature_maps/{name}", "caption": caption})
        write_page(self.run_dir / "feature_maps.html", self.frames, "Conv feature maps during training")


@torch.no_grad()
def accuracy(model: nn.Module, dataset, batch_size: int = 512) -> float:
    """Fraction of the dataset's examples whose highest-scoring class is the label."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    right = total = 0
    for inputs, labels in dataset.iter_batches(batch_size):
        right += int((model(inputs.to(device)).logits.argmax(-1).cpu() == labels).sum())
        total += len(labels)
    model.train(was_training)
    return right / total if total else float("nan")
