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
from tqdm.auto import tqdm

from lmlab.config import TrainConfig
from lmlab.data.datasets import IGNORE_INDEX, TokenDataset, next_token_targets
from lmlab.errors import ConfigError, LmlabError
from lmlab.training import checkpoint as ckpt
from lmlab.training import performance as perf
from lmlab.training.budget import BudgetFitter
from lmlab.training.callbacks import Callback
from lmlab.training.checkpointer import CallbackStates, Checkpointer, StateOf
from lmlab.training.distributed import Parallel
from lmlab.training.ema import WeightAverage
from lmlab.training.run_dir import RunDir
from lmlab.training.schedule import lr_at
from lmlab.training.scoring import estimate_nll, mean_loss

log = logging.getLogger(__name__)

# The trainer's own attributes a checkpoint keeps, as the "progress" part.
PROGRESS_ATTRIBUTES = ("step", "tokens_seen", "nonfinite_steps", "train_seconds", "last_val_loss", "lr_scale",
                       "last_eval_step")
MAX_NONFINITE_IN_A_ROW = 5


class TrainingDiverged(LmlabError):
    """The loss or gradients stayed non-finite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LmlabError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def build_optimizer(model: torch.nn.Module, config: TrainConfig, fused: bool = False) -> torch.optim.Optimizer | None:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "muon":
        from lmlab.training.muon import build_muon

        return build_muon(model, lr=config.lr, muon_lr=config.muon_lr, weight_decay=config.weight_decay,
                          betas=(config.beta1, config.beta2), fused=fused)
    # Decay matrices only: decaying biases, norm gains and 1-D parameters only fights the normalisation.
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused or None)


def predicted_tokens(labels: torch.Tensor) -> int:
    """Targets a language-model batch scores: labels are shifted inside the model, -100 is ignored."""
    return int((next_token_targets(labels) != IGNORE_INDEX).sum())


def accumulate_gradients(model: torch.nn.Module, batches, *, total_tokens: float, world_size: int = 1,
                         autocast=None, no_sync=None, count=predicted_tokens) -> torch.Tensor:
    """Backward through each (input_ids, labels) micro-batch; returns the detached loss of this rank's part.

    Each micro-batch's mean loss is weighted by its share of `total_tokens` (the step's predicted tokens,
    over all ranks), so the summed gradient equals that of one batch holding them all, even when micro-
    batches predict different numbers of tokens (padded lines). DDP averages over ranks, so each rank's
    part is multiplied by `world_size` to keep the sum."""
    step_loss = torch.zeros(())
    for i, (input_ids, labels) in enumerate(batches):
        share = count(labels) / total_tokens
        with no_sync(i == len(batches) - 1) if no_sync else contextlib.nullcontext():
            with autocast or contextlib.nullcontext():
                loss = model(input_ids, labels=labels).loss * share
            (loss * world_size).backward()
        step_loss = step_loss.to(loss.device) + loss.detach()
    return step_loss


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
        self.config = config
        self.parallel = parallel or Parallel()
        self.device = self.parallel.device(resolve_device(config.device))
        perf.setup_device(self.device, config.threads)
        self.dtype = perf.resolve_dtype(config.dtype, self.device)
        self.model = model.to(self.device)
        self.train_data = train_data
        self.val_data = val_data if val_data is not None and len(val_data) else None
        self.run_dir = RunDir(run_dir) if run_dir is not None else None
        if self.run_dir is not None:  # from the Python API the folder need not exist yet
            self.run_dir.path.mkdir(parents=True, exist_ok=True)
        self.callbacks = list(callbacks)
        counted = getattr(model, "counted", False)
        # The module the step calls: compiled and/or wrapped for DDP/FSDP (FSDP shards self.model in place).
        self.train_model = self.model if counted else self.parallel.wrap(self.model, self.device, config.compile)
        self.optimizer = build_optimizer(self.model, config, fused=perf.fused_adamw_available(self.device))
        if config.ema_decay and self.parallel.mode == "fsdp" and self.parallel.world_size > 1:
            raise ConfigError("train.ema_decay does not work with FSDP yet (the average would need sharding); "
                              "use train.parallel=ddp or train.ema_decay=0")
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay and not counted else None
        self.data_generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.tokens_seen = 0
        self.nonfinite_steps = 0
        self._consecutive_nonfinite = 0
        self.last_record: dict[str, Any] = {}
        self.last_val_loss: float | None = None
        self.train_seconds = 0.0
        self.lr_scale = 1.0  # callbacks (ReduceLROnPlateau, LearningRateScheduler) scale the scheduled rate
        self._stop = False
        self._interrupted = False
        self.last_eval_step: int | None = None
        self.checkpointer = self._checkpointer()

    # -- control ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end after the current step (EarlyStopping, a signal handler, ...)."""
        self._stop = True

    def interrupt(self) -> None:
        """Like `stop`, for Ctrl-C or SIGTERM: the loop ends after the current step and saves a checkpoint
        without the final evaluation, so a resumed run logs exactly what an uninterrupted one would."""
        self._interrupted = True
        self._stop = True

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)  # a callback need not subclass Callback
            if method is not None:
                method(self, *args)

    # -- metrics and checkpoints --------------------------------------------------------------------------

    def _write_metric(self, record: dict[str, Any]) -> None:
        if self.run_dir is not None and self.parallel.is_main:
            self.run_dir.append_metric(record)

    def _checkpointer(self) -> Checkpointer:
        """The parts a checkpoint's trainer state is made of."""
        parts = Checkpointer()
        parts.register("progress", StateOf(
            lambda: {k: getattr(self, k) for k in PROGRESS_ATTRIBUTES},
            lambda state: [setattr(self, k, state[k]) for k in PROGRESS_ATTRIBUTES if k in state]))
        parts.register("rng", StateOf(lambda: ckpt.rng_state(self.data_generator),
                                      lambda state: ckpt.set_rng_state(state, self.data_generator)))
        if self.optimizer is not None:
            parts.register("optimizer", self.optimizer)
        if self.average is not None:  # the raw weights: the model file holds the average
            parts.register("average", StateOf(self.average.raw_weights, self.average.restore))
        parts.register("callbacks", CallbackStates(self.callbacks))
        return parts

    def state_dict(self) -> dict[str, Any]:
        return self.checkpointer.state_dict(self.step, data_fingerprint=ckpt.data_fingerprint(self.train_data))

    def _averaged(self):
        """The weight average in the model, where there is one: what evaluation and checkpoints see."""
        return self.average.averaged() if self.average is not None else contextlib.nullcontext()

    def save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        self._emit("on_checkpoint")
        if self.parallel.mode == "fsdp" and self.parallel.world_size > 1:
            self._save_sharded_checkpoint()
        elif self.parallel.is_main:
            with self._averaged():  # the file holds the averaged weights that sample/eval/export use
                ckpt.save_checkpoint(self.run_dir.path, self.model, self.state_dict())
        self.parallel.barrier()  # nobody reads or resumes from a checkpoint still being written

    def _save_sharded_checkpoint(self) -> None:
        """FSDP: gather full weights and optimizer state (every rank takes part), rank 0 writes them."""
        model_state, optim_state = self.parallel.full_state(self.model, self.optimizer)
        if self.parallel.is_main:
            ckpt.save_checkpoint(self.run_dir.path, model_state, {**self.state_dict(), "optimizer": optim_state})

    def load_checkpoint(self, run_dir: str | Path) -> None:
        """Restore weights, optimizer, step, RNG and callback state; truncate metrics logged after it."""
        run_dir = RunDir(run_dir)
        sharded = self.parallel.mode == "fsdp" and self.parallel.world_size > 1
        weights: dict[str, torch.Tensor] = {}  # FSDP: full weights, scattered to the shards below
        state = ckpt.load_checkpoint(run_dir.path, weights if sharded else self.model,
                                     None if sharded else self.optimizer)
        if state.get("data_fingerprint") not in (None, ckpt.data_fingerprint(self.train_data)):
            raise ckpt.CheckpointError(
                f"{run_dir}: the training data differ from the data this checkpoint was trained on; resume on "
                "the same data, or start a new run"
            )
        try:
            self.checkpointer.load_state_dict(state, skip=("optimizer",) if sharded or not state.get("optimizer")
                                              else ())
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
            raise ckpt.CheckpointError(f"{run_dir}: the trainer state does not fit this run "
                                       f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                                       ) from None
        if sharded:
            self.parallel.load_full_state(self.model, self.optimizer, weights, state["optimizer"])
        if self.average is not None and state.get("average") is None:
            self.average.restore(None)  # the loaded weights become both the average and the raw weights
        if self.average is None and state.get("average") is not None:
            # Averaged before, not now: train on from the raw weights.
            with torch.no_grad():
                for param, raw in zip((p for p in self.model.parameters() if p.requires_grad),
                                      state["average"], strict=True):
                    param.copy_(raw)
        if self.parallel.is_main:  # drop records written after this checkpoint
            run_dir.truncate_metrics(self.step)

    # -- evaluation ---------------------------------------------------------------------------------------

    def evaluate(self, exact: bool = False) -> dict[str, Any] | None:
        """Validation NLL: estimated on a fixed sample of at most `train.eval_max_tokens` tokens with its
        standard error (periodic evaluations), or over the whole split (`exact`: the final one)."""
        if self.val_data is None:
            self.last_eval_step = self.step
            return None
        batch_size = self.config.batch_size * 4
        with self._averaged():  # callbacks that keep or save the best weights keep the averaged ones
            stderr = None
            if hasattr(self.val_data, "count_targets"):  # not a token dataset (series, images): the model's loss
                val_loss, tokens = mean_loss(self.model, self.val_data, batch_size=batch_size, device=self.device,
                                             max_tokens=None if exact else self.config.eval_max_tokens)
            else:
                cap = self.val_data.num_predictions if exact else self.config.eval_max_tokens
                val_loss, tokens, stderr = estimate_nll(self.model, self.val_data, max_tokens=cap,
                                                        batch_size=batch_size, device=self.device)
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
        if getattr(self.model, "counted", False):
            return self._fit_counts()
        config = self.config
        self._stop = False
        self.model.train()
        if self.average is not None and self.average.swapped:  # fit() again: train the raw weights on
            self.average.swap()
        self._emit("on_train_begin")
        started = time.perf_counter() - self.train_seconds
        checkpoint_every = config.checkpoint_interval or config.eval_interval
        bar = tqdm(total=config.max_steps, initial=self.step, desc="train", unit="step",
                   disable=None if self.parallel.is_main else True, dynamic_ncols=True, leave=False)
        world = self.parallel.world_size
        log.info("effective batch: %d sequences (batch_size %d x grad_accum_steps %d x %d rank(s)); %s; "
                 "compile %s", config.batch_size * config.grad_accum_steps * world, config.batch_size,
                 config.grad_accum_steps, world, str(self.dtype).removeprefix("torch."), config.compile)
        flops = perf.flops_per_token(self.model, self.train_data.block_size)
        peak = perf.peak_flops(self.device, self.dtype, config.peak_tflops)
        window_tokens, window_start = 0, time.perf_counter()
        threads = perf.ThreadChooser.for_config(config.threads, self.device)  # train.threads=auto
        # train.time_budget: fit the schedule to it (one process: ranks' clocks would disagree on the plan)
        budget = BudgetFitter.for_config(config) if self.parallel.world_size == 1 else None
        try:
            while self.step < config.max_steps and not self.parallel.any(self._stop):
                out_of_time = config.time_budget and time.perf_counter() - started >= config.time_budget
                if self.parallel.any(bool(out_of_time)):
                    log.info("time budget of %.0f s reached at step %d", config.time_budget, self.step)
                    break
                if threads is not None:
                    threads.before_step()
                step_started = time.perf_counter()
                record = self._train_step(lr_at(self.step, config) * self.lr_scale)
                self.train_seconds = time.perf_counter() - started
                step_seconds = self.train_seconds + started - step_started
                if threads is not None:
                    threads.after_step(step_seconds)
                if budget is not None and record is not None and not (threads and threads.measuring):
                    fitted = budget.after_step(self.step, step_seconds, self.train_seconds)
                    if fitted is not None:  # the same run, fewer steps
                        config = self.config = fitted
                        checkpoint_every = config.checkpoint_interval or config.eval_interval
                        bar.total = config.max_steps
                        bar.refresh()
                if record is None:
                    continue
                window_tokens += record["tokens"]
                if self.step % config.log_interval == 0 or self.step == config.max_steps:
                    now = time.perf_counter()
                    record["tokens_per_s"] = round(window_tokens / max(now - window_start, 1e-9))
                    window_tokens, window_start = 0, now
                    self._write_metric({k: v for k, v in record.items() if k != "tokens_per_s"})
                    postfix = {"loss": f"{record['loss']:.4f}", "val": _fmt(self.last_val_loss),
                               "lr": f"{record['lr']:.2e}", "tok_s": record["tokens_per_s"]}
                    if peak:  # model FLOPs utilisation, per device
                        record["mfu"] = float(f"{record['tokens_per_s'] * flops / (peak * world):.3g}")
                        postfix["mfu"] = f"{record['mfu']:.1%}"
                    bar.set_postfix(postfix)
                bar.update(1)
                self.last_record = record
                self._emit("on_step_end", record)
                at_end = self.step == config.max_steps
                if self.step % config.eval_interval == 0 or at_end:
                    val = self.evaluate(exact=at_end)
                    log.info("step %d: loss %.4f, val %s", self.step, record["loss"],
                             _fmt(val["val_loss"] if val else None))
                if self.step % checkpoint_every == 0 or at_end:
                    self.save_checkpoint()
        finally:
            bar.close()
        if not self._interrupted and self.last_eval_step != self.step:
            self.evaluate(exact=True)
        self.save_checkpoint()
        if self.average is not None:  # as Keras' use_ema: after fit() the model holds the average
            self.average.swap()
        self._emit("on_train_end")
        return self

    def _train_step(self, lr: float) -> dict[str, Any] | None:
        """One optimizer step; returns its record, or None if the step was skipped as non-finite."""
        self._emit("on_step_begin")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = [self.parallel.local_batch(self.train_data, self.config.batch_size, self.data_generator)
                   for _ in range(self.config.grad_accum_steps)]
        batches = [(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
                   for x, y in batches]
        # Datasets that are not token streams (series, images) say how many targets a batch holds.
        count = getattr(self.train_data, "count_targets", predicted_tokens)
        local_tokens = sum(count(y) for _, y in batches)
        tokens = int(self.parallel.sum(torch.tensor(float(local_tokens), device=self.device)))
        train_model = self.train_model
        loss = accumulate_gradients(
            train_model, batches, total_tokens=tokens, world_size=self.parallel.world_size,
            autocast=perf.autocast(self.device, self.dtype),
            no_sync=lambda sync: self.parallel.no_sync(train_model, sync), count=count)
        loss = self.parallel.sum(loss)  # the mean over the whole step's tokens, on every rank
        self._emit("on_after_backward")
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        )
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a sharded DTensor
            grad_norm = grad_norm.full_tensor()
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
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
        return {"step": self.step, "loss": round(loss.item(), 6), "lr": lr,
                "grad_norm": round(float(grad_norm), 6), "tokens": tokens}

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


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
