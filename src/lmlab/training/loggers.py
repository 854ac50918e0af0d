"""Metric loggers for the tools people already watch training in: TensorBoard and Weights & Biases.

Each is a Callback that logs, at the same steps as metrics.jsonl: train loss, learning rate, tokens/s,
grad norm (and MFU where the trainer measures it) as `train/*`, and the validation loss as `val/loss`. If an
inspector (a callback with a `stats` dict of layers and params, see lmlab.inspector) is among the trainer's
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
import netrc
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.config import TrainConfig
from lmlab.errors import LmlabError
from lmlab.training.callbacks import Callback
from lmlab.training.run_dir import METRICS_FILE, RunDir

if TYPE_CHECKING:
    from lmlab.training.trainer import Trainer

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # inside the run directory
TRAIN_KEYS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
              "tokens_per_s": "train/tokens_per_s", "mfu": "train/mfu"}
LAYER_SCALARS = {"mean": "act_mean", "std": "act_std", "saturated": "saturated", "dead": "dead",
                 "grad_mean": "grad_mean", "grad_std": "grad_std"}
PARAM_SCALARS = {"grad_data": "grad_data", "update_data": "update_data_log10"}
FLUSH_SECONDS = 5.0

Findings = Callable[[dict[str, Any]], list[dict[str, Any]]]


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
    """The inspector among the callbacks: one with a `stats` dict (filled with "layers" and "params" in its
    own on_train_begin, which may come after this logger's)."""
    for callback in trainer.callbacks:
        if isinstance(getattr(callback, "stats", None), dict):
            return callback
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _findings_text(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "No problems found."
    lines = []
    for f in findings:
        where = f" ({f['layer']})" if f.get("layer") else ""
        lines.append(f"- **{f['severity']}** `{f['rule']}`{where}: {f['what']}. *Fix:* {f['fix']}")
    return "\n".join(lines)


class MetricLogger(Callback):
    """What the TensorBoard and W&B loggers share: which values go out at which step. A subclass opens,
    writes scalars, histograms and text, and closes."""

    name = ""

    def __init__(self, run_dir: str | Path, config: dict[str, Any] | None = None, *,
                 findings: Findings | None = None):
        self.run_dir = Path(run_dir)
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
            values = {tag: float(record[key]) for key, tag in TRAIN_KEYS.items() if _finite(record.get(key))}
            self.scalars(values, record["step"])
        self._maybe_flush()

    def on_eval_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.active and _finite(record.get("val_loss")):
            self.scalars({"val/loss": float(record["val_loss"])}, record["step"])
            self.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.active:
            return
        self._log_inspection(trainer.step)
        if self._inspector is not None and "layers" in self._inspector.stats and self.findings is not None:
            try:  # the run is saved by now: a side channel's failure must not fail it
                self.text("findings", _findings_text(self.findings(self._inspector.stats)), trainer.step)
            except Exception:  # noqa: BLE001
                log.warning("%s: could not log the findings", self.name, exc_info=True)
        self.close()
        self.active = False

    # -- the inspector's statistics -------------------------------------------------------------------------

    def _log_inspection(self, upto: int) -> None:
        """Every sampled step s with s + 1 in (last logged, upto], from the inspector's public statistics."""
        if self._inspector is None or upto <= self._inspected_upto:
            return
        stats = self._inspector.stats
        values: dict[int, dict[str, float]] = {}
        wanted = range(self._inspected_upto + 1, upto + 1)
        for kind, entries, scalars in (("layer", stats.get("layers", {}), LAYER_SCALARS),
                                       ("param", stats.get("params", {}), PARAM_SCALARS)):
            for name, entry in entries.items():
                steps = entry.get("step", [])
                last = {s + 1: i for i, s in enumerate(steps) if s + 1 in wanted}  # a retried step: the last
                for step, i in last.items():
                    out = values.setdefault(step, {})
                    for key, label in scalars.items():
                        series = entry.get(key, [])
                        if len(series) == len(steps) and _finite(series[i]):
                            out[f"inspect/{label}/{name}"] = float(series[i])
                    if kind == "layer" and len(entry.get("hist", [])) == len(steps):
                        lo, hi = entry["hist_range"][i]
                        counts = entry["hist"][i]
                        edges = [lo + (hi - lo) * k / len(counts) for k in range(len(counts) + 1)]
                        self.histogram(f"inspect/activations/{name}", counts, edges, entry["mean"][i],
                                       entry["std"][i], step)
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


# ----------------------------------------------------------------------------------------------------------
# TensorBoard


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingPackage("--log tensorboard needs the tensorboard package: pip install 'lmlab[tensorboard]'") \
            from None
    return SummaryWriter


class TensorBoardLogger(MetricLogger):
    """Event files in RUN/tensorboard: `tensorboard --logdir RUN` (or the folder of many runs)."""

    name = "tensorboard"

    def __init__(self, run_dir: str | Path, config: dict[str, Any] | None = None, *,
                 findings: Findings | None = None, log_dir: str | Path | None = None):
        super().__init__(run_dir, config, findings=findings)
        self.log_dir = Path(log_dir) if log_dir is not None else self.run_dir / TENSORBOARD_DIR
        self._writer_cls = _summary_writer()
        self.writer = None

    def open(self, step: int) -> None:
        # A fresh run purges from 0 (a --force restart's old events); a resumed one what followed its checkpoint.
        self.writer = self._writer_cls(str(self.log_dir), purge_step=step + 1 if step else 0,
                                       flush_secs=int(FLUSH_SECONDS))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def histogram(self, tag, counts, edges, mean, std, step) -> None:
        total = sum(counts)
        if not total:
            return
        self.writer.add_histogram_raw(tag, min=edges[0], max=edges[-1], num=total, sum=mean * total,
                                      sum_squares=(std * std + mean * mean) * total,
                                      bucket_limits=edges[1:], bucket_counts=counts, global_step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def hyperparameters(self, flat: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Written into this run's own folder (SummaryWriter.add_hparams would start a separate run).
        for summary in hparams(flat, {"val/loss": float("nan")}):
            self.writer.file_writer.add_summary(summary)
        self.text("config", "```\n" + json.dumps(self.config, indent=2) + "\n```", 0)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ----------------------------------------------------------------------------------------------------------
# Weights & Biases


def _wandb():
    try:
        import wandb
    except ImportError:
        raise MissingPackage("--log wandb needs the wandb package: pip install 'lmlab[wandb]'") from None
    return wandb


def wandb_mode() -> str:
    """WANDB_MODE when set; online with an API key (WANDB_API_KEY, or `wandb login`'s ~/.netrc); else offline
    (the run folder is kept under RUN/wandb; `wandb sync` uploads it later)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        hosts = netrc.netrc(os.environ.get("NETRC")).hosts
    except (OSError, netrc.NetrcParseError):
        hosts = {}
    return "online" if any("wandb" in host for host in hosts) else "offline"


class WandbLogger(MetricLogger):
    """A W&B run in RUN/wandb, offline when there is no API key. Resuming continues the same run id."""

    name = "wandb"

    def __init__(self, run_dir: str | Path, config: dict[str, Any] | None = None, *,
                 findings: Findings | None = None, project: str | None = None):
        super().__init__(run_dir, config, findings=findings)
        self.wandb = _wandb()
        self.project = project or os.environ.get("WANDB_PROJECT") or "lmlab"
        self.run_id: str | None = None
        self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"logger": self.name, "run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("logger") == self.name:
            self.run_id = state.get("run_id")

    def open(self, step: int) -> None:
        wandb = self.wandb
        if step == 0 or self.run_id is None:
            if step:
                log.warning("no W&B run id in the checkpoint; resuming into a new W&B run")
            self.run_id = secrets.token_hex(4)  # W&B ids are short lowercase alphanumerics
        (self.run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        mode = wandb_mode()
        self.run = wandb.init(
            project=self.project, name=self.run_dir.name, id=self.run_id, resume="allow", dir=str(self.run_dir),
            config=self.config, mode=mode, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        log.info("W&B run %s (%s) in %s", self.run_id, mode, self.run_dir / "wandb")

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def histogram(self, tag, counts, edges, mean, std, step) -> None:
        self.run.log({tag: self.wandb.Histogram(np_histogram=(counts, edges))}, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.run.summary[tag] = text

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


# ----------------------------------------------------------------------------------------------------------
# Building them


LOGGERS: dict[str, type[MetricLogger]] = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}


def logger_names(value: str) -> list[str]:
    """train.log ('tensorboard,wandb') -> ['tensorboard', 'wandb'] (TrainConfig has checked the names)."""
    return [n.strip() for n in value.split(",") if n.strip()]


def loggers_for(train_config: TrainConfig, run_dir: str | Path, run_config_dict: dict[str, Any], *,
                findings: Findings | None = None) -> list[Callback]:
    """The loggers train.log names, for the trainer's callbacks (after the Inspector, so each sampled step
    goes out as soon as it is complete, and the findings see the inspector's closing statistics). A missing
    package is one MissingPackage line naming the extra."""
    return [LOGGERS[name](run_dir, run_config_dict, findings=findings) for name in logger_names(train_config.log)]


# ----------------------------------------------------------------------------------------------------------
# Finished runs into one TensorBoard folder


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    if not (run_dir / METRICS_FILE).is_file():
        raise LmlabError(f"{run_dir}: no {METRICS_FILE} (not a finished run?)")
    return [r for r in RunDir(run_dir).read_metrics() if isinstance(r.get("step"), int)]


def write_tensorboard_runs(run_dirs: Sequence[str | Path], out: str | Path,
                           names: Sequence[str] | None = None) -> Path:
    """One TensorBoard folder with a run per finished run (a ladder's rungs, `compare`'s runs), from each
    one's metrics.jsonl: `tensorboard --logdir OUT` overlays their curves. Rewritten from scratch each time."""
    SummaryWriter = _summary_writer()
    out = Path(out)
    if names is None:
        names = [Path(r).resolve().name for r in run_dirs]
        if len(set(names)) != len(names):  # a/run and b/run: TensorBoard shows nested folders as a/run, b/run
            names = ["/".join(Path(r).resolve().parts[-2:]) for r in run_dirs]
    names = list(names)
    if len(set(names)) != len(names):
        raise LmlabError(f"two runs share a name ({', '.join(names)}); pass distinct names")
    for run_dir, name in zip(run_dirs, names, strict=True):
        records = _metrics(Path(run_dir))
        folder = out / name
        if folder.is_dir():  # an earlier export's events would double every curve
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        writer = SummaryWriter(str(folder))
        try:
            for record in records:
                step = record["step"]
                if _finite(record.get("val_loss")):
                    writer.add_scalar("val/loss", float(record["val_loss"]), step)
                for key, tag in TRAIN_KEYS.items():
                    if _finite(record.get(key)):
                        writer.add_scalar(tag, float(record[key]), step)
        finally:
            writer.close()
    return out
