"""Callbacks: small objects with a few hooks the trainer calls. Subclass `Callback` and override what you need.

Hooks receive the trainer (for `trainer.model`, `trainer.optimizer`, `trainer.step`, `trainer.stop()`) and,
where there is one, the record just logged (`{"step", "loss", "lr", ...}` or `{"step", "val_loss"}`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmlab.train.trainer import Trainer


class Callback:
    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_step_begin(self, trainer: Trainer) -> None: ...

    def on_after_backward(self, trainer: Trainer) -> None:
        """Gradients are in `.grad`, before clipping and before the optimizer step."""

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_eval_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to resume exactly (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
