"""What a training run shows while it runs: the progress bar (whose ETA follows a schedule the time budget
refits), and the throughput of each logged window: tokens/s, useful FLOP/s (the tokens predicted, so padding
excluded) and their share of the device's peak: model FLOPs utilisation where a table gives it, a measured
single-thread matmul rate on a CPU (performance.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from lmlab.config import TrainConfig
from lmlab.training import performance as perf

log = logging.getLogger(__name__)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class Progress:
    """`unit`: what the data counts, tokens for text; a dataset of windows or images names its own (its
    `unit`). FLOP/s are shown for tokens only: 6 x parameters per token is a language model's estimate, and a
    convolution, which reuses its weights at every position, does many times that per image."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, *, step: int, block_size: int,
                 device: torch.device, dtype: torch.dtype, world_size: int, show: bool, unit: str = "tokens"):
        self.bar = tqdm(total=config.max_steps, initial=step, desc="train", unit="step",
                        disable=None if show else True, dynamic_ncols=True, leave=False)
        self.world_size, self.unit = world_size, unit
        self.flops = perf.flops_per_token(model, block_size) if unit == "tokens" else None
        self.peak = perf.peak_flops(device, dtype, config.peak_tflops) if self.flops else None
        # no table gives a CPU's peak: its share of one thread's measured matmul rate per thread in use
        self.cpu_peak = perf.cpu_matmul_peak() if self.flops and device.type == "cpu" and not self.peak else None
        self.window_tokens, self.window_start = 0, time.perf_counter()
        log.info("effective batch: %d sequences (batch_size %d x grad_accum_steps %d x %d rank(s)); %s; "
                 "compile %s", config.batch_size * config.grad_accum_steps * world_size, config.batch_size,
                 config.grad_accum_steps, world_size, str(dtype).removeprefix("torch."), config.compile)

    def replan(self, max_steps: int) -> None:
        """The time budget refitted the schedule: the bar's total (and so its ETA) follows."""
        self.bar.total = max_steps
        self.bar.refresh()

    def step_done(self, tokens: int) -> None:
        self.window_tokens += tokens
        self.bar.update(1)

    def logged(self, record: dict[str, Any], val_loss: float | None) -> None:
        """Add tokens/s (and MFU) of the window since the last logged step to `record`, and show them. The
        key stays tokens_per_s whatever the unit (metrics.jsonl's one name for the rate of counted targets)."""
        now = time.perf_counter()
        record["tokens_per_s"] = round(self.window_tokens / max(now - self.window_start, 1e-9))
        self.window_tokens, self.window_start = 0, now
        postfix = {"loss": f"{record['loss']:.4f}", "val": fmt(val_loss), "lr": f"{record['lr']:.2e}",
                   "tok_s" if self.unit == "tokens" else f"{self.unit}_s": record["tokens_per_s"]}
        if self.flops:
            record["flops_per_s"] = float(f"{record['tokens_per_s'] * self.flops:.3g}")  # useful: padding excluded
            postfix["GFLOP_s"] = f"{record['flops_per_s'] / 1e9:.1f}"
        if self.peak:  # model FLOPs utilisation, per device
            record["mfu"] = float(f"{record['flops_per_s'] / (self.peak * self.world_size):.3g}")
            postfix["mfu"] = f"{record['mfu']:.1%}"
        elif self.cpu_peak:
            record["cpu_peak_share"] = float(f"{record['flops_per_s'] / (self.cpu_peak * torch.get_num_threads()):.3g}")
            postfix["of_peak"] = f"{record['cpu_peak_share']:.0%}"
        self.bar.set_postfix(postfix)

    def speed(self, record: dict[str, Any]) -> str:
        """The last logged window's throughput for a log line: tokens/s (or the data's own unit), useful
        GFLOP/s where they are known and its share of the peak."""
        if "tokens_per_s" not in record:
            return ""
        rate = f"; {record['tokens_per_s']:,} {self.unit}/s"
        if "flops_per_s" not in record:
            return rate
        share = record.get("mfu", record.get("cpu_peak_share"))
        return (f"{rate}, {record['flops_per_s'] / 1e9:.1f} GFLOP/s"
                + (f" ({share:.0%} of peak)" if share is not None else ""))

    def close(self) -> None:
        self.bar.close()
