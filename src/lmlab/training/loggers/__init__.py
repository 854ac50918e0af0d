"""Metric loggers for the tools people already watch training in: TensorBoard and Weights & Biases.
train.log's names ('tensorboard,wandb') become logger callbacks here; what they log and when is described in
base.py, each backend in tensorboard.py and wandb.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmlab.config import TrainConfig
from lmlab.training.callbacks import Callback
from lmlab.training.loggers.base import Findings, MetricLogger
from lmlab.training.loggers.tensorboard import TensorBoardLogger
from lmlab.training.loggers.wandb import WandbLogger

LOGGERS: dict[str, type[MetricLogger]] = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}


def logger_names(value: str) -> list[str]:
    """train.log ('tensorboard,wandb') -> ['tensorboard', 'wandb'] (TrainConfig has checked the names)."""
    return [n.strip() for n in value.split(",") if n.strip()]


def loggers_for(train_config: TrainConfig, run_dir: str | Path, run_config_dict: dict[str, Any], *,
                findings: Findings | None = None, val_bytes_per_token=None) -> list[Callback]:
    """The loggers train.log names, for the trainer's callbacks (after the Inspector, so each sampled step
    goes out as soon as it is complete, and the findings see the inspector's closing statistics). A missing
    package is one MissingPackage line naming the extra. `val_bytes_per_token()` (called only when a logger
    is named) gives the validation split's UTF-8 bytes per predicted token, for val/bits_per_byte."""
    names = logger_names(train_config.log)
    ratio = val_bytes_per_token() if names and val_bytes_per_token is not None else None
    return [LOGGERS[name](run_dir, run_config_dict, findings=findings, val_bytes_per_token=ratio) for name in names]
