"""What the metric loggers share (MetricLogger): which values go out at which step. The backends are
tensorboard.py and wandb.py; __init__.py builds the ones train.log names.

Each is a Callback that logs, at the same steps as metrics.jsonl: train loss, learning rate, tokens/s,
grad norm (and MFU where the trainer measures it) as `train/*`, and the validation loss as `val/loss`. If an
inspector (a callback whose `stats` record has `layers` and `params`, see lmlab.inspector.stats) is among the trainer's
callbacks, its per-layer statistics go out as scalars and histograms at its sampled steps; the findings as
text at the end (given a `findings` function, since the health rules live in the inspector's layer); the
resolved config as hyperparameters.

Steps: the inspector samples the step that starts at s, and the loggers file it under s + 1, the step
number metrics.jsonl gives that same step's loss. Resuming from a checkpoint at step S continues the same
TensorBoard folder (purge_step S + 1 hides whatever an earlier session logged after the checkpoint, as
metrics.jsonl drops those records) and the same W&B run id. Only rank 0 logs. Both flush as they go, so
`tensorboard --logdir RUN` or the W&B page shows the curves while the run trains.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError
from lmlab.training.callbacks import Callback

if TYPE_CHECKING:
    from lmlab.training.trainer import Trainer

log = logging.getLogger(__name__)

TRAIN_KEYS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
              "tokens_per_s": "train/tokens_per_s", "mfu": "train/mfu"}
LAYER_SCALARS = {"mean": "act_mean", "std": "act_std", "saturated": "saturated", "dead": "dead",
                 "grad_mean": "grad_mean", "grad_std": "grad_std"}
PARAM_SCALARS = {"grad_data": "grad_data", "update_data": "update_data_log10"}
FLUSH_SECONDS = 5.0

Findings = Callable[[Any], list[Any]]  # the inspector's statistics record -> its findings


class MissingPackage(LmlabError):
    """An optional package a chosen logger or data format needs is not installed."""


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-3}} -> {'train.lr': 1e-3}; values TensorBoard's hparams cannot take become text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return flat


def _inspector(trainer: Trainer) -> Callback | None:
    """The inspector among the callbacks: one whose `stats` record has `layers` and `params` (filled in its
    own on_train_begin, which may come after this logger's). Read by attribute: this layer does not import
    the inspector's."""
    for callback in trainer.callbacks:
        stats = getattr(callback, "stats", None)
        if hasattr(stats, "layers") and hasattr(stats, "params"):
            return callback
    return None


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _findings_text(findings: list[Any]) -> str:
    """Findings (records with severity, rule, layer, what and fix) as Markdown."""
    if not findings:
        return "No problems found."
    lines = []
    for f in findings:
        where = f" ({f.layer})" if f.layer else ""
        lines.append(f"- **{f.severity}** `{f.rule}`{where}: {f.what}. *Fix:* {f.fix}")
    return "\n".join(lines)


class MetricLogger(Callback):
    """What the TensorBoard and W&B loggers share: which values go out at which step. A subclass opens,
    writes scalars, histograms and text, and closes."""

    name = ""

    def __init__(self, run_dir: str | Path, config: dict[str, Any] | None = None, *,
                 findings: Findings | None = None, val_bytes_per_token: float | None = None):
        self.run_dir = Path(run_dir)
        # Bits per byte compare runs whose tokenizers differ on the same text (nats per token do not).
        self.val_bytes_per_token = val_bytes_per_token
        self.config = config or {}
        self.findings = findings
        self.active = False
        self._inspector: Callback | None = None
        self._inspector_first = False
        self._inspected_upto = 0  # the last step whose inspector statistics went out
        self._last_flush = 0.0

    # -- what a backend provides ----------------------------------------------------------------------------

    def open(self, step: int) -> None: ...

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def histogram(self, tag: str, counts: list[int], edges: list[float], mean: float, std: float,
                  step: int) -> None: ...

    def text(self, tag: str, text: str, step: int) -> None: ...

    def hyperparameters(self, flat: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    # -- hooks ----------------------------------------------------------------------------------------------

    def on_train_begin(self, trainer: Trainer) -> None:
        if not trainer.parallel.is_main:
            return
        self._inspector = _inspector(trainer)
        order = list(trainer.callbacks)
        if self._inspector is not None and self in order:
            self._inspector_first = order.index(self._inspector) < order.index(self)
        self._inspected_upto = trainer.step
        self.open(trainer.step)
        self.active = True
        if trainer.step == 0 and self.config:
            self.hyperparameters(flatten(self.config))

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not self.active:
            return
        # The inspector finishes a sampled step in its own on_step_end: when it comes after this logger,
        # this step's sample is complete only at the next step.
        self._log_inspection(trainer.step if self._inspector_first else trainer.step - 1)
        if "tokens_per_s" in record:  # the trainer wrote this step to metrics.jsonl
            values = {tag: float(record[key]) for key, tag in TRAIN_KEYS.items() if is_finite_number(record.get(key))}
            self.scalars(values, record["step"])
        self._maybe_flush()

    def on_eval_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.active and is_finite_number(record.get("val_loss")):
            values = {"val/loss": float(record["val_loss"])}
            if self.val_bytes_per_token:
                values["val/bits_per_byte"] = values["val/loss"] / (math.log(2) * self.val_bytes_per_token)
            self.scalars(values, record["step"])
            self.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.active:
            return
        self._log_inspection(trainer.step)
        if self._inspector is not None and getattr(self._inspector, "started", True) and self.findings is not None:
            try:  # the run is saved by now: a side channel's failure must not fail it
                self.text("findings", _findings_text(self.findings(self._inspector.stats)), trainer.step)
            except Exception:  # noqa: BLE001
                log.warning("%s: could not log the findings", self.name, exc_info=True)
        self.close()
        self.active = False

    def on_interrupt(self, trainer: Trainer) -> None:
        self.on_train_end(trainer)  # what was logged so far goes out; a resumed run logs on from the checkpoint

    # -- the inspector's statistics -------------------------------------------------------------------------

    def _log_inspection(self, upto: int) -> None:
        """Every sampled step s with s + 1 in (last logged, upto], from the inspector's public statistics."""
        if self._inspector is None or upto <= self._inspected_upto:
            return
        stats = self._inspector.stats
        values: dict[int, dict[str, float]] = {}
        wanted = range(self._inspected_upto + 1, upto + 1)
        for kind, entries, scalars in (("layer", stats.layers, LAYER_SCALARS),
                                       ("param", stats.params, PARAM_SCALARS)):
            for name, entry in entries.items():
                steps = entry.step
                last = {s + 1: i for i, s in enumerate(steps) if s + 1 in wanted}  # a retried step: the last
                for step, i in last.items():
                    out = values.setdefault(step, {})
                    for key, label in scalars.items():
                        series = getattr(entry, key, [])
                        if len(series) == len(steps) and is_finite_number(series[i]):
                            out[f"inspect/{label}/{name}"] = float(series[i])
                    if kind == "layer" and len(entry.hist) == len(steps):
                        lo, hi = entry.hist_range[i]
                        counts = entry.hist[i]
                        edges = [lo + (hi - lo) * k / len(counts) for k in range(len(counts) + 1)]
                        self.histogram(f"inspect/activations/{name}", counts, edges, entry.mean[i],
                                       entry.std[i], step)
        for step in sorted(values):
            self.scalars(values[step], step)
            ratios = [v for k, v in values[step].items() if k.startswith("inspect/update_data_log10/")]
            if ratios:  # the spread of update:data over all parameters at this step
                self._value_histogram("inspect/update_data_log10", ratios, step)
        self._inspected_upto = upto

    def _value_histogram(self, tag: str, values: list[float], step: int, bins: int = 20) -> None:
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1e-6
        counts = [0] * bins
        for v in values:
            counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        self.histogram(tag, counts, [lo + (hi - lo) * k / bins for k in range(bins + 1)], mean, std, step)

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if now - self._last_flush >= FLUSH_SECONDS:
            self._last_flush = now
            self.flush()
