"""Callbacks: small objects with a few hooks the trainer calls. Subclass `Callback` and override what you need.

Hooks receive the trainer (for `trainer.model`, `trainer.optimizer`, `trainer.step`, `trainer.stop()`) and,
where there is one, the record just logged (`{"step", "loss", "lr", ...}` or `{"step", "val_loss"}`). A
callback that hooks into a step asks, in `on_step_begin`, for `trainer.run_this_step_uncompiled()`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmlab.config import TrainConfig
from lmlab.files import subfolder
from lmlab.run.folder import CHECKPOINTS_DIR
from lmlab.training.checkpoint.format import load_weights, read_weight_dict, save_weights
from lmlab.training.schedule import lr_at

if TYPE_CHECKING:
    from lmlab.training.trainer import Trainer

log = logging.getLogger(__name__)


class Callback:
    name: str | None = None  # the key of this callback's state in a checkpoint (default: the class name)

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_step_begin(self, trainer: Trainer) -> None: ...

    def on_after_backward(self, trainer: Trainer) -> None:
        """Gradients are in `.grad`, before clipping and before the optimizer step."""

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_eval_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_checkpoint(self, trainer: Trainer) -> None:
        """Just after the trainer wrote a checkpoint into the run folder."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Training ended (all steps taken, stopped early, or out of time): the place for final actions."""

    def on_interrupt(self, trainer: Trainer) -> None:
        """Ctrl-C or SIGTERM: the loop stopped and saved the state it was in, to be resumed. Release what
        you hold (files); change nothing the checkpoint holds, or the resumed run would differ."""

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to resume exactly (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _monitored(monitor: str, record: dict[str, Any]) -> float | None:
    value = record.get(monitor)
    return float(value) if isinstance(value, (int, float)) else None


class _Monitor(Callback):
    """Shared by the callbacks that watch one metric for improvement (lower is better: losses)."""

    def __init__(self, monitor: str, min_delta: float):
        if monitor not in ("val_loss", "loss"):
            raise ValueError(f"monitor must be 'val_loss' or 'loss', got {monitor!r}")
        self.monitor, self.min_delta = monitor, min_delta
        self.best: float | None = None
        self.wait = 0

    def _improved(self, value: float, trainer: Trainer) -> bool:
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return True
        # While the rate is still warming up the loss is not yet judged at the run's rate: a flat stretch
        # there is not a plateau, so it never uses up patience (it used to end runs inside their warm-up).
        if trainer.step > trainer.schedule.warmup_steps:
            self.wait += 1
        return False

    def _hook_record(self, record: dict[str, Any], from_eval: bool) -> float | None:
        if from_eval != (self.monitor == "val_loss"):
            return None
        value = _monitored(self.monitor, record)
        return value if value is not None and math.isfinite(value) else None

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = self._hook_record(record, from_eval=False)
        if value is not None:
            self.update(trainer, value)

    def on_eval_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = self._hook_record(record, from_eval=True)
        if value is not None:
            self.update(trainer, value)

    def update(self, trainer: Trainer, value: float) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state.get("best"), state.get("wait", 0)


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved by `min_delta` for `patience` checks (evaluations for val_loss,
    steps for loss). With `restore_best_weights`, the best weights seen become the run's final model. In a
    run folder they are also written to checkpoints/best-stepN.safetensors, so a killed and resumed run ends
    with the same weights as one that was never stopped."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best_weights: bool = False):
        super().__init__(monitor, min_delta)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_step: int | None = None
        self.stopped_step: int | None = None

    @staticmethod
    def _file(trainer: Trainer, step: int) -> Path | None:
        folder = subfolder(Path(trainer.run_dir), CHECKPOINTS_DIR) if trainer.run_dir is not None else None
        return folder / f"best-step{step:07d}.safetensors" if folder is not None else None

    def update(self, trainer: Trainer, value: float) -> None:
        if self._improved(value, trainer):
            self.best_step = trainer.step
            if self.restore_best_weights:  # on every rank: under FSDP the shards are gathered collectively
                self.best_weights = trainer.full_weights()
                path = self._file(trainer, trainer.step)
                if path is not None and trainer.parallel.is_main:
                    save_weights(self.best_weights, path, trainer.step)  # before the checkpoint that names it
        elif self.wait >= self.patience:
            self.stopped_step = trainer.step
            log.info("early stopping at step %d: %s has not improved on %.4f for %d checks", trainer.step,
                     self.monitor, self.best, self.wait)
            trainer.stop()

    def on_checkpoint(self, trainer: Trainer) -> None:
        # The checkpoint just written names best_step: older copies are no longer needed to resume.
        keep = self._file(trainer, self.best_step) if self.best_step is not None else None
        if keep is not None and trainer.parallel.is_main:
            for old in keep.parent.glob("best-step*.safetensors"):
                if old != keep:
                    old.unlink(missing_ok=True)

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.restore_best_weights or self.best_step is None or self.best_step == trainer.step:
            return
        if self.best_weights is None:  # resumed: this process never held them
            path = self._file(trainer, self.best_step)
            if path is None or not path.is_file():
                log.warning("the best weights (step %d) were not kept; the run ends with its last ones",
                            self.best_step)
                return
            if trainer.parallel.sharded:
                trainer.load_full_weights(read_weight_dict(path)[0])
            else:
                load_weights(trainer.model, path)
        else:
            trainer.load_full_weights(self.best_weights)
        log.info("restored the best weights (step %d, %s %.4f)", self.best_step, self.monitor, self.best)
        trainer.save_checkpoint()  # the run directory's model is the restored one

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_step = state.get("best_step")


class ModelCheckpoint(Callback):
    """Keep the best `save_top_k` weight files by `monitor` (and `last.safetensors` with `save_last`) in
    `dirpath` (default: RUN_DIR/checkpoints). The trainer's own checkpoint stays the latest state."""

    def __init__(self, dirpath: str | Path | None = None, monitor: str = "val_loss", save_top_k: int = 1,
                 save_last: bool = False):
        if monitor not in ("val_loss", "loss"):
            raise ValueError(f"monitor must be 'val_loss' or 'loss', got {monitor!r}")
        self.dirpath, self.monitor, self.save_top_k, self.save_last = dirpath, monitor, save_top_k, save_last
        self.kept: list[tuple[float, str]] = []  # (score, file name in the folder), best first
        self._folder: Path | None = None

    def _dir(self, trainer: Trainer) -> Path | None:
        if self.dirpath is None:
            return subfolder(Path(trainer.run_dir), CHECKPOINTS_DIR) if trainer.run_dir is not None else None
        Path(self.dirpath).mkdir(parents=True, exist_ok=True)
        return Path(self.dirpath)

    def _consider(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value, folder = _monitored(self.monitor, record), self._dir(trainer)
        if folder is None or value is None:
            return
        if self.save_last:
            save_weights(trainer.model, folder / "last.safetensors", trainer.step)
        if not math.isfinite(value) or self.save_top_k <= 0:
            return
        if len(self.kept) >= self.save_top_k and value >= self.kept[-1][0]:
            return
        name = f"step{trainer.step:07d}-{self.monitor}{value:.4f}.safetensors"
        save_weights(trainer.model, folder / name, trainer.step)
        self.kept = sorted([*self.kept, (value, name)])
        for _, dropped in self.kept[self.save_top_k:]:
            (folder / dropped).unlink(missing_ok=True)
        self.kept = self.kept[: self.save_top_k]
        self._folder = folder

    def on_train_begin(self, trainer: Trainer) -> None:
        self._folder = self._dir(trainer)

    def on_eval_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.monitor == "val_loss":
            self._consider(trainer, record)

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.monitor == "loss":
            self._consider(trainer, record)

    @property
    def best_model_path(self) -> str | None:
        return str(self._folder / self.kept[0][1]) if self.kept and self._folder is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.kept}  # file names only: a copied or moved run keeps and deletes its own files

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kept = []
        for score, name in state.get("kept", []):
            name = Path(name).name  # older checkpoints kept full paths; never follow one out of the folder
            kept.append((float(score), name))
        self.kept = kept


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by `factor` when `monitor` has not improved for `patience` checks; the
    scale rides on top of the schedule (trainer.lr_scale) and is saved with the trainer's state."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, min_delta: float = 1e-4,
                 cooldown: int = 0, min_scale: float = 0.0):
        super().__init__(monitor, min_delta)
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.factor, self.patience, self.cooldown, self.min_scale = factor, patience, cooldown, min_scale
        self.cooling = 0

    def update(self, trainer: Trainer, value: float) -> None:
        if self.cooling:
            self.cooling -= 1
            self.wait = 0
        if not self._improved(value, trainer) and self.wait >= self.patience:
            trainer.lr_scale = max(trainer.lr_scale * self.factor, self.min_scale)
            log.info("step %d: %s plateaued, learning rate scaled to x%.3g", trainer.step, self.monitor,
                     trainer.lr_scale)
            self.wait, self.cooling = 0, self.cooldown


class LearningRateScheduler(Callback):
    """Keras-style: `schedule(step, lr)` gets the step and the configured schedule's rate, returns the rate
    to use instead (it becomes trainer.lr_scale, so resuming recomputes it)."""

    def __init__(self, schedule: Callable[[int, float], float]):
        self.schedule = schedule

    def _set(self, trainer: Trainer) -> None:
        base = lr_at(trainer.step, trainer.config, trainer.schedule)
        trainer.lr_scale = self.schedule(trainer.step, base) / base

    # The trainer reads the rate before on_step_begin, so set it for the coming step at the end of the last.
    def on_train_begin(self, trainer: Trainer) -> None:
        self._set(trainer)

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._set(trainer)


class TerminateOnNaN(Callback):
    """Stop at the first non-finite loss instead of skipping up to five steps first."""

    def on_after_backward(self, trainer: Trainer) -> None:
        self._seen = trainer.nonfinite_steps

    def on_step_begin(self, trainer: Trainer) -> None:
        if trainer.nonfinite_steps > getattr(self, "_seen", trainer.nonfinite_steps):
            log.warning("step %d: non-finite loss; stopping (TerminateOnNaN)", trainer.step)
            trainer.stop()


def callbacks_for(train: TrainConfig, *, writes_files: bool, given: Sequence[Callback] = ()) -> list[Callback]:
    """The callbacks the train config names (so config.json records them and a resume keeps them), in the
    order their states are keyed in checkpoints: early stopping (unless `given` holds one), the plateau
    scaler, the best-weights keeper (only where this process `writes_files`). A new built-in callback is its
    class above, one line here and its train.* key in config.py."""
    chosen: list[Callback] = []
    if train.early_stopping and not any(isinstance(c, EarlyStopping) for c in given):
        chosen.append(EarlyStopping(patience=train.early_stopping, restore_best_weights=True))
    if train.reduce_lr_on_plateau:
        chosen.append(ReduceLROnPlateau(patience=train.reduce_lr_on_plateau))
    if train.save_top_k and writes_files:
        chosen.append(ModelCheckpoint(save_top_k=train.save_top_k, save_last=True))
    return chosen
