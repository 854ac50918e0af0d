"""The training loop. It drives a model, an optimizer and two datasets; it knows nothing of the inspector
or the CLI, which plug in through callbacks and the run directory.

One step: sample `grad_accum_steps` micro-batches -> forward (bf16 autocast on CUDA) and backward each,
weighted by its share of the step's tokens -> callbacks see the gradients -> clip -> optimizer step at the
scheduled learning rate. Under torchrun each rank takes its slice of every batch (see distributed.py).
Every `eval_interval` steps: validation NLL under `model.eval()` and `torch.no_grad()`, then a checkpoint.
Counted models (n-grams) take one counting pass.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmlab.config import TrainConfig, parse_budget
from lmlab.data.datasets import TokenDataset
from lmlab.errors import TrainingDiverged
from lmlab.models.base import capability
from lmlab.run.folder import RunDir
from lmlab.training import performance as perf
from lmlab.training.budget import TimeBudget
from lmlab.training.callbacks import Callback
from lmlab.training.checkpoint import trainer_state
from lmlab.training.distributed import Parallel
from lmlab.training.ema import WeightAverage
from lmlab.training.progress import Progress, fmt
from lmlab.training.schedule import Schedule, lr_at
from lmlab.training.scoring import SplitScore, mean_loss, score_split
from lmlab.training.step import accumulate_gradients, batch_to, build_optimizer, predicted_tokens, resolve_device

log = logging.getLogger(__name__)

MAX_NONFINITE_IN_A_ROW = 5


__all__ = ["MAX_NONFINITE_IN_A_ROW", "Trainer", "TrainingDiverged"]


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        train_data: TokenDataset,
        val_data: TokenDataset | None,
        config: TrainConfig,
        *,
        run_dir: str | Path | None = None,
        callbacks: Sequence[Callback] = (),
        parallel: Parallel | None = None,
    ):
        self.config = config  # and self.schedule, the steps it plans
        self.parallel = parallel or Parallel()
        self.device = self.parallel.device(resolve_device(config.device))
        self.dtype = perf.resolve_dtype(config.dtype, self.device)
        self.model = model.to(self.device)
        self.train_data = train_data
        # train.threads=auto: from the step's work and the cores, never from the load, so the count, and with
        # it the order of floating-point sums, is the same on every run of this config on this machine
        step_flops = perf.flops_per_token(model, train_data.block_size) * config.batch_size * train_data.block_size
        self.threads = perf.setup_device(self.device, config.threads, step_flops * config.grad_accum_steps)
        self.val_data = val_data if val_data is not None and len(val_data) else None
        self.run_dir = RunDir(run_dir) if run_dir is not None else None
        if self.run_dir is not None:  # from the Python API the folder need not exist yet
            self.run_dir.path.mkdir(parents=True, exist_ok=True)
        self.callbacks = list(callbacks)
        counted = capability(model, "counted")
        # Lines-mode batches packed several examples a row (data.packing) for a model that keeps them apart;
        # the same examples as a padded batch, so the same loss, at a fraction of the positions.
        self.packing = bool(getattr(train_data, "packing", False)) and capability(model, "packs_examples")
        if self.packing:
            train_data.pack_width(config.batch_size)  # chosen once, here, outside the time budget's clock
        # The module the step calls: compiled and/or wrapped for DDP/FSDP (FSDP shards self.model in place).
        self.train_model = self.model if counted else self.parallel.wrap(self.model, self.device, config.compile)
        self.optimizer = build_optimizer(self.model, config, fused=perf.fused_adamw_available(self.device))
        # Under FSDP the average is kept shard by shard, beside the shards it averages.
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay and not counted else None
        self.data_generator = torch.Generator().manual_seed(config.seed)  # the same global batches on every rank
        self.parallel.seed_rank(config.seed)
        self.step = 0
        self.tokens_seen = 0
        self.nonfinite_steps = 0
        self._consecutive_nonfinite = 0
        self.last_record: dict[str, Any] = {}
        self.last_val_loss: float | None = None
        self.train_seconds = 0.0
        self.clock = time.perf_counter  # what a time budget reads (a test may pass a fake one)
        self.lr_scale = 1.0  # callbacks (ReduceLROnPlateau, LearningRateScheduler) scale the scheduled rate
        self._stop = False
        self._interrupted = False
        self._looping = False  # an interrupt counts only while steps are being taken
        self._uncompiled_step = False
        self._final_val: tuple[SplitScore, int] | None = None  # the last exact val score and its step
        self._final_val_stamp: tuple[int, ...] | None = None  # the weights it scored, once fit() ended
        self.last_eval_step: int | None = None
        self.checkpointer = trainer_state.parts(self)

    @property
    def config(self) -> TrainConfig:
        return self._config

    @config.setter
    def config(self, config: TrainConfig) -> None:
        """A new config (fit() again for more steps) plans anew. A time budget never sets it: it re-fits
        `self.schedule`, the trainer's state that checkpoints keep."""
        self._config = config
        self.schedule = Schedule.of(config)

    # -- control ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end after the current step (EarlyStopping, a signal handler, ...)."""
        self._stop = True

    def interrupt(self) -> None:
        """Like `stop`, for Ctrl-C or SIGTERM: the loop ends after the current step and saves the state it
        was in, without the final evaluation and without the callbacks' end of training (`on_interrupt`
        instead of `on_train_end`), so a resumed run logs and saves exactly what an uninterrupted one would.
        Once the loop is over, training has ended and an interrupt changes nothing."""
        if self._looping:
            self._interrupted = True
            self._stop = True

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def run_this_step_uncompiled(self) -> None:
        """From `on_step_begin`: run this one step's forward and backward without torch.compile. Dynamo
        guards on hooks, so a callback that adds and removes them (the inspector) would otherwise force a
        recompile each time. The same wrapped module runs: DDP and FSDP still synchronise gradients."""
        self._uncompiled_step = True

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)  # a callback need not subclass Callback
            if method is not None:
                method(self, *args)

    # -- metrics and checkpoints --------------------------------------------------------------------------

    def _write_metric(self, record: dict[str, Any]) -> None:
        if self.run_dir is not None and self.parallel.is_main:
            self.run_dir.append_metric(record)

    def state_dict(self) -> dict[str, Any]:
        return trainer_state.state_dict(self)

    def averaged_weights(self):
        """The weight average in the model, where there is one: what evaluation and checkpoints see."""
        return self.average.averaged() if self.average is not None else contextlib.nullcontext()

    def full_weights(self) -> dict[str, torch.Tensor]:
        """The model's whole state dict on the CPU; under FSDP every rank must call this (it gathers)."""
        return self.parallel.full_weights(self.model)

    def load_full_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Put a whole state dict (full_weights') into the model; under FSDP on every rank."""
        self.parallel.load_full_weights(self.model, weights)

    def save_checkpoint(self) -> None:
        """Weights (the average, where there is one) and trainer state into the run folder, as one unit."""
        if self.run_dir is not None:
            trainer_state.save(self)
            self._emit("on_checkpoint")

    def load_checkpoint(self, run_dir: str | Path) -> None:
        """Restore weights, optimizer, step, RNG and callback state; truncate metrics logged after it."""
        trainer_state.load(self, RunDir(run_dir))

    # -- evaluation ---------------------------------------------------------------------------------------

    def final_eval_cap(self, dataset: Any) -> int:
        """The most tokens a final evaluation scores exactly (train.final_eval_max_tokens; 0: all of them)."""
        return self.config.final_eval_max_tokens or dataset.num_predictions

    def final_val_score(self) -> SplitScore | None:
        """The final evaluation's val score while the model still holds the weights it scored (the average
        swapped in counts as the same; best weights restored after it do not), else None."""
        if self._final_val_stamp is None or self._final_val_stamp != _weights_stamp(self.model):
            return None
        return self._final_val[0]

    def evaluate(self, exact: bool = False) -> dict[str, Any] | None:
        """Validation NLL: estimated on a fixed sample of at most `train.eval_max_tokens` tokens with its
        standard error (periodic evaluations), or the final one (`exact`): the whole split up to
        `train.final_eval_max_tokens` tokens, a fixed sample of that many beyond."""
        if self.val_data is None:
            self.last_eval_step = self.step
            return None
        batch_size = self.config.batch_size * 4
        with self.averaged_weights():  # callbacks that keep or save the best weights keep the averaged ones
            stderr = None
            if hasattr(self.val_data, "count_targets"):  # not a token dataset (series, images): the model's loss
                val_loss, tokens = mean_loss(self.model, self.val_data, batch_size=batch_size, device=self.device,
                                             max_tokens=None if exact else self.config.eval_max_tokens)
            else:
                cap = self.final_eval_cap(self.val_data) if exact else self.config.eval_max_tokens
                score = score_split(self.model, self.val_data, max_tokens=cap, batch_size=batch_size,
                                    device=self.device)
                val_loss, tokens, stderr = score.nll, score.tokens, score.stderr
                if exact:  # split_scores reuses it (final_val_score) while the model holds these weights
                    self._final_val, self._final_val_stamp = (score, self.step), None
            self.last_val_loss = val_loss
            self.last_eval_step = self.step
            record = {"step": self.step, "val_loss": round(val_loss, 6), "val_tokens": tokens}
            if stderr is not None:
                record["val_stderr"] = round(stderr, 6)
            self._write_metric(record)
            self._emit("on_eval_end", record)
        return record

    # -- the loop -----------------------------------------------------------------------------------------

    def fit(self) -> Trainer:
        if capability(self.model, "counted"):
            return self._fit_counts()
        config = self.config
        self._stop = self._interrupted = False
        self.model.train()
        if self.average is not None and self.average.swapped:  # fit() again: train the raw weights on
            self.average.swap()
        self._emit("on_train_begin")
        schedule = self.schedule
        # before the clock starts: it measures the CPU's peak, which is no part of the time budget
        progress = Progress(self.model, config, step=self.step, block_size=self.train_data.block_size,
                            device=self.device, dtype=self.dtype, world_size=self.parallel.world_size,
                            show=self.parallel.is_main, unit=getattr(self.train_data, "unit", "tokens"))
        progress.replan(schedule.max_steps)
        clock = self.clock
        started = clock() - self.train_seconds
        checkpoint_every = config.checkpoint_interval or schedule.eval_interval
        budget = parse_budget(config.budget)
        # A work budget became max_steps before the run (run/plan.py); a time budget runs on the clock. Its
        # decay is fixed on one process only: ranks' clocks would disagree on the plan.
        timed = TimeBudget(config, schedule, budget.amount) if budget is not None and budget.is_time else None
        if budget is not None and not budget.is_time:
            log.warning("train.budget=%s is turned into steps by lmlab.train's plan; this Trainer trains "
                        "train.max_steps=%d", budget, config.max_steps)
        self._looping = True
        try:
            while self.step < schedule.max_steps and not self.parallel.any(self._stop):
                if self.parallel.any(bool(timed and timed.out_of_time(clock() - started))):
                    log.info("time budget of %s reached at step %d", budget, self.step)
                    break
                record = self._train_step(lr_at(self.step, config, schedule) * self.lr_scale)
                self.train_seconds = clock() - started
                if timed is not None and record is not None and self.parallel.world_size == 1:
                    fitted = timed.after_step(self.step, self.train_seconds)
                    if fitted is not None:  # the decay starts now, once
                        schedule = self.schedule = fitted
                        checkpoint_every = config.checkpoint_interval or schedule.eval_interval
                        progress.replan(schedule.max_steps)
                if record is None:
                    continue
                progress.step_done(record["tokens"])
                if self.step % config.log_interval == 0 or self.step == schedule.max_steps:
                    self._write_metric(dict(record))  # before the timings: metrics.jsonl is deterministic
                    progress.logged(record, self.last_val_loss)
                self.last_record = record
                self._emit("on_step_end", record)
                at_end = self.step == schedule.max_steps
                if self.step % schedule.eval_interval == 0 or at_end:
                    val = self.evaluate(exact=at_end)
                    log.info("step %d: loss %.4f, val %s%s", self.step, record["loss"],
                             fmt(val["val_loss"] if val else None), progress.speed(self.last_record))
                if self.step % checkpoint_every == 0 or at_end:
                    self.save_checkpoint()
        finally:
            self._looping = False
            progress.close()
        if not self._interrupted and self.last_eval_step != self.step:
            self.evaluate(exact=True)
        self.save_checkpoint()
        if self.average is not None:  # as Keras' use_ema: after fit() the model holds the average
            self.average.swap()
        # The model now holds the weights the final evaluation scored (the average was swapped out and in
        # again since): any later change to them (best weights restored) makes that score stale.
        if self._final_val is not None and self._final_val[1] == self.step and not self._interrupted:
            self._final_val_stamp = _weights_stamp(self.model)
        # Training ends only when it really ended: after an interrupt the saved state is the one the loop
        # was in, and end-of-training actions (restoring the best weights) would save over it.
        self._emit("on_interrupt" if self._interrupted else "on_train_end")
        return self

    def _train_step(self, lr: float) -> dict[str, Any] | None:
        """One optimizer step; returns its record, or None if the step was skipped as non-finite."""
        self._uncompiled_step = False
        self._emit("on_step_begin")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = [self.parallel.local_batch(self.train_data, self.config.batch_size, self.data_generator,
                                             packed=self.packing)
                   for _ in range(self.config.grad_accum_steps)]
        # Datasets that are not token streams (series, images) say how many targets a batch holds. Counted
        # before the batches go to the device: counting there would make the host wait for the GPU.
        count = getattr(self.train_data, "count_targets", predicted_tokens)
        counts = [count(batch[1]) for batch in batches]
        local_tokens = sum(counts)
        batches = [batch_to(batch, self.device) for batch in batches]
        tokens = (local_tokens if self.parallel.world_size == 1
                  else int(self.parallel.sum(torch.tensor(float(local_tokens), device=self.device))))
        train_model = self.train_model
        eager = torch.compiler.set_stance("force_eager") if self._uncompiled_step else contextlib.nullcontext()
        with eager:  # compiled graphs stay cached, untouched, for the next step
            loss = accumulate_gradients(
                train_model, batches, total_tokens=tokens, world_size=self.parallel.world_size,
                autocast=perf.autocast(self.device, self.dtype),
                no_sync=lambda sync: self.parallel.no_sync(train_model, sync), counts=counts)
        loss = self.parallel.sum(loss)  # the mean over the whole step's tokens, on every rank
        self._emit("on_after_backward")
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        )
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a sharded DTensor
            grad_norm = grad_norm.full_tensor()
        # One wait for the device a step: both numbers come back together, before the optimizer's kernels
        # are queued, so the host never waits for those.
        loss_value, norm_value = torch.stack([loss.float(), grad_norm.float().to(loss.device)]).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_steps += 1
            self._consecutive_nonfinite += 1
            log.warning("step %d: non-finite loss or gradient, step skipped", self.step)
            if self._consecutive_nonfinite >= MAX_NONFINITE_IN_A_ROW:
                raise TrainingDiverged(
                    f"loss or gradients were non-finite for {MAX_NONFINITE_IN_A_ROW} steps in a row at step "
                    f"{self.step}; training stopped, the last good checkpoint is kept (lower train.lr?)"
                )
            return None
        self._consecutive_nonfinite = 0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.average is not None:
            self.average.update(self.step)
        self.tokens_seen += tokens
        return {"step": self.step, "loss": round(loss_value, 6), "lr": lr,
                "grad_norm": round(norm_value, 6), "tokens": tokens}

    def _fit_counts(self) -> Trainer:
        """Counted models: one pass over the training set, no optimizer."""
        self._emit("on_train_begin")
        started = time.perf_counter()
        rows = max(1024, (1 << 20) // max(self.train_data.block_size, 1))  # ~1M tokens a batch
        for input_ids, labels in self.train_data.iter_batches(rows):
            self.model.fit_counts(input_ids.to(self.device), labels.to(self.device))
        self.train_seconds = time.perf_counter() - started
        self.tokens_seen = self.train_data.num_predictions
        self.step = 1
        self.evaluate(exact=True)
        self.save_checkpoint()
        self._emit("on_train_end")
        return self


def _weights_stamp(model: torch.nn.Module) -> tuple[int, ...]:
    """The version counters of the model's parameters and buffers: every in-place change (an optimizer
    step, load_state_dict, a swap) moves one, so an equal stamp means the same weights, at no cost."""
    return tuple(t._version for t in (*model.parameters(), *model.buffers()))
