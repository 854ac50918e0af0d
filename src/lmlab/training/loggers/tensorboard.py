"""TensorBoard: the logger that writes event files into RUN/tensorboard while a run trains, and
`write_tensorboard_runs`, which gathers finished runs' metrics.jsonl into one TensorBoard folder to overlay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError
from lmlab.run.folder import METRICS_FILE, RunDir
from lmlab.training.loggers.base import (
    FLUSH_SECONDS,
    TRAIN_KEYS,
    Findings,
    MetricLogger,
    MissingPackage,
    is_finite_number,
)

TENSORBOARD_DIR = "tensorboard"  # inside the run directory


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
                 findings: Findings | None = None, log_dir: str | Path | None = None,
                 val_bytes_per_token: float | None = None):
        super().__init__(run_dir, config, findings=findings, val_bytes_per_token=val_bytes_per_token)
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
                if is_finite_number(record.get("val_loss")):
                    writer.add_scalar("val/loss", float(record["val_loss"]), step)
                for key, tag in TRAIN_KEYS.items():
                    if is_finite_number(record.get(key)):
                        writer.add_scalar(tag, float(record[key]), step)
        finally:
            writer.close()
    return out
