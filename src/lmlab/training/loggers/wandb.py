"""Weights & Biases: the logger that keeps a W&B run in RUN/wandb (offline when there is no API key),
continuing the same run id on resume.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from pathlib import Path
from typing import Any

from lmlab.training.loggers.base import Findings, MetricLogger, MissingPackage

log = logging.getLogger(__name__)


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
                 findings: Findings | None = None, project: str | None = None,
                 val_bytes_per_token: float | None = None):
        super().__init__(run_dir, config, findings=findings, val_bytes_per_token=val_bytes_per_token)
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
