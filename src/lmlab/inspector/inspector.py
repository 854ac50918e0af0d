"""The inspector: a training callback that looks inside any `torch.nn.Module` through forward and backward hooks,
with no change to model code. Every `every` steps it hooks exactly one training step (the others pay nothing) and
records, per layer and per parameter, what measure.py measures; per attention head (`record_attention`,
`last_attention` (B, nh, T, T), or, in any other module, the softmax over a square score map or the SDPA that
the function watch sees on the first sample) the entropy. Under train.compile a sampled step runs uncompiled,
so adding and removing hooks never recompiles the graph. At the start and the end it runs the one-off probes
(probes.py), and at the end it reads what the run's callbacks did (early stopping, learning-rate scaling, a
time budget). Everything goes into one `InspectorStats` record (stats.py), saved to the run folder.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.config import parse_budget
from lmlab.data.datasets import IGNORE_INDEX
from lmlab.inspector.layer_kinds import FunctionWatch, is_watched, layer_kind
from lmlab.inspector.measure import (
    record_activation,
    record_attention,
    record_gradient,
    record_parameter,
    record_update,
)
from lmlab.inspector.probes import (
    batch_coupling_probe,
    causality_probe,
    data_baselines,
    data_overlap,
    default_interval,
    default_lr,
    invariants_probe,
    targets_probe,
)
from lmlab.inspector.stats import (
    MAX_MAP,
    STATS_FILE,
    InspectorStats,
    LayerStats,
    LossPoint,
    ParamStats,
    RunControl,
    ValPoint,
    compact,
    load_stats,
    save_stats,
)
from lmlab.models.base import capability
from lmlab.training.callbacks import Callback, EarlyStopping

MODEL_FORWARD = "(the model's own forward)"
SAMPLING_SHARE = 0.02  # the default interval widens until the sampled steps cost at most this share of the run
# ... but never beyond max_steps // MIN_SAMPLES: the rules compare early and late samples (a weight's shrink
# from its peak is judged on 4)
MIN_SAMPLES = 4


class Inspector(Callback):
    """Sample per-layer statistics every `every` steps. None: ~50 samples per run, at most every 100 steps,
    and fewer when a sampled step costs so much more than a plain one (a small model's) that they would take
    more than SAMPLING_SHARE of the training time."""

    def __init__(self, every: int | None = None, *, dead_window: int = 3, probe_causality: bool = True):
        if every is not None and every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every = every
        self._adaptive = every is None
        self._plain_seconds: deque = deque(maxlen=20)  # recent unsampled steps' wall time
        self._sample_extra: float | None = None  # what the last sampled step cost beyond a plain one
        self._first_sample_seconds: float | None = None
        self._step_started = 0.0
        self.dead_window = dead_window
        self.probe_causality = probe_causality
        self.stats = InspectorStats()
        self.started = False  # on_train_begin ran: the record describes a run
        self._handles: list[Any] = []
        self._snapshots: dict[str, Tensor] = {}
        self._alive: dict[str, deque] = {}
        self._sampling = False
        self._order: list[str] = []
        self._looked_for_functions = False
        self._stack: list[str] = []
        self._mode: FunctionWatch | None = None
        self._attention_seen: dict[str, list[Tensor]] = {}  # module -> the attention maps its own code made
        self._lr_scale = 1.0

    # -- setup --------------------------------------------------------------------------------------------

    def on_train_begin(self, trainer) -> None:
        model = trainer.model
        self.model = model
        self.every = self.every or default_interval(trainer.config.max_steps)
        self._widest = max(self.every, trainer.config.max_steps // MIN_SAMPLES)
        self.modules = {name: m for name, m in model.named_modules() if name and is_watched(m)}
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self._kinds = {name: layer_kind(m) for name, m in model.named_modules()}
        config = getattr(model, "config", None)
        vocab = getattr(config, "vocab_size", 0) or 0
        previous = trainer.run_dir / STATS_FILE if trainer.run_dir is not None else None
        if trainer.step > 0 and previous is not None and previous.is_file():  # resuming: keep the history
            self.stats = load_stats(previous)
            self.stats.loss = [r for r in self.stats.loss if r.step <= trainer.step]
        else:
            self.stats = InspectorStats(every=self.every, vocab_size=vocab,
                                        ln_vocab=compact(math.log(vocab)) if vocab > 1 else None,
                                        grad_clip=trainer.config.grad_clip)
        self.started = True
        self._lr_scale = trainer.lr_scale
        self._planned_steps = trainer.config.max_steps
        self._describe(trainer, model, vocab)
        if self._probes_apply(model):
            block = min(model.config.block_size, 16)
            self.stats.causality = causality_probe(model, vocab, block)
            self.stats.batch_coupling = batch_coupling_probe(model, vocab, block)
            self.stats.invariants = self._probe(invariants_probe, model, vocab, block) or self.stats.invariants
            if not self.stats.overlap.checked:
                self.stats.overlap = (self._probe(data_overlap, trainer.train_data, trainer.val_data)
                                      or self.stats.overlap)

    def _probes_apply(self, model: nn.Module) -> bool:
        """The probes feed token ids to a language model with a context (not a counted one)."""
        config = getattr(model, "config", None)
        vocab, block = getattr(config, "vocab_size", 0) or 0, getattr(config, "block_size", 0) or 0
        return self.probe_causality and vocab > 1 and block >= 2 and not capability(model, "counted")

    @staticmethod
    def _probe(probe, *args):
        """A probe that cannot read this model or dataset (a user's own) is skipped, never fails the run."""
        try:
            return probe(*args)
        except (RuntimeError, ValueError, TypeError, AttributeError, IndexError, StopIteration):
            return None

    def _describe(self, trainer, model: nn.Module, vocab: int) -> None:
        """What the findings judge against, recorded once (kept on resume)."""
        stats = self.stats
        stats.counted = bool(capability(model, "counted"))
        stats.max_context = capability(model, "max_context")
        stats.lr = trainer.config.lr
        stats.warmup_steps = trainer.config.warmup_steps
        stats.weight_decay = trainer.config.weight_decay
        stats.optimizer = trainer.config.optimizer
        if stats.default_lr is None:
            stats.default_lr = default_lr(model)
        params = dict(model.named_parameters())
        stats.param_count = sum(p.numel() for p in params.values())
        stats.frozen = {n: p.numel() for n, p in params.items() if not p.requires_grad}
        if stats.baselines is None:
            try:
                stats.baselines = data_baselines(trainer.train_data, vocab)
            except (RuntimeError, ValueError, TypeError):  # a dataset that is not token pairs: no baselines
                stats.baselines = None
        for name, m in model.named_modules():
            if isinstance(m, nn.RNNBase):
                stats.unwatched[name] = f"fused {type(m).__name__} kernel: its gates and tanh are not visible"

    # -- one sampled step ---------------------------------------------------------------------------------

    def _widen(self) -> None:
        """Space the samples so that their extra cost stays within SAMPLING_SHARE of the training time."""
        if not self._adaptive or len(self._plain_seconds) < 3:
            return
        plain = statistics.median(self._plain_seconds)
        extra = self._sample_extra
        if extra is None and self._first_sample_seconds is not None:
            extra = max(0.0, self._first_sample_seconds - plain)  # step 0 also paid the one-off set-up
        if extra is None or plain <= 0:
            return
        needed = math.ceil(extra / (SAMPLING_SHARE * plain))
        if needed > self.every:
            self.every = min(needed, self._widest)
            self.stats.every = self.every

    def on_step_begin(self, trainer) -> None:
        self._step_started = time.perf_counter()
        if self._sampling:  # the previous sampled step was skipped as non-finite: drop what it gathered
            self._detach()
        if trainer.step % self.every == 0 and trainer.step > 0:
            self._widen()
        if trainer.step % self.every:
            return
        self._sampling = True
        self._step = trainer.step
        trainer.run_this_step_uncompiled()  # hooks on a compiled module would force a recompile each time
        self._order = []
        for name, module in self.modules.items():
            if hasattr(module, "record_attention"):
                module.record_attention = True
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))
        self._handles.append(self.model.register_forward_pre_hook(self._keep_tokens, with_kwargs=True))
        if not self._looked_for_functions:  # once per process: which modules call activation functions
            self._looked_for_functions = True
            self._watch_functions()

    def _keep_tokens(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        labels = args[1] if len(args) > 1 else kwargs.get("labels")
        if isinstance(ids, Tensor) and ids.dim() == 2 and not ids.is_floating_point():  # token ids, not a series
            self.stats.batch_tokens = ids.numel()
            self.stats.attention_tokens = ids[0, :MAX_MAP].tolist()
            if isinstance(labels, Tensor) and labels.shape == ids.shape:
                scored = (labels[0] != IGNORE_INDEX).nonzero()
                # The example ends at its last scored target: the padding after it would fill the map.
                self.stats.attention_length = min(int(scored.max()) + 1, MAX_MAP) if len(scored) else 0

    def _watch_functions(self) -> None:
        found: dict[str, str] = {}
        for name, module in self.model.named_modules():
            label = name or MODEL_FORWARD
            self._handles.append(module.register_forward_pre_hook(lambda *_, n=label: self._enter(n)))
            self._handles.append(module.register_forward_hook(lambda *_: self._leave()))
        self._kinds.setdefault(MODEL_FORWARD, "other")
        self._mode = FunctionWatch(self._stack, self._kinds, found, self._attention_seen)
        self._mode.__enter__()
        self._functions_found = found

    def _forward_hook(self, name: str):
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            weights = None
            if isinstance(output, tuple):
                output, weights = output[0], (output[1] if len(output) > 1 else None)
            if not isinstance(output, Tensor) or not output.is_floating_point():
                return
            self._order.append(name)
            kind = layer_kind(module)
            entry = self.stats.layers.setdefault(name, LayerStats(kind=kind, type=type(module).__name__))
            alive = (self._alive.setdefault(name, deque(maxlen=self.dead_window))
                     if kind in ("relu", "gelu") else None)
            record_activation(entry, output.detach(), self._step, alive)
            if kind == "attention":
                attention = getattr(module, "last_attention", None)
                if attention is None and isinstance(weights, Tensor):
                    attention = weights.detach().unsqueeze(1)  # nn.MultiheadAttention averages heads: (B, 1, T, T)
                if attention is not None:
                    self.stats.attention_example[name] = record_attention(entry, attention.detach())
            if kind == "conv" and output.dim() == 3:
                fmap = output.detach()[0, :MAX_MAP, :MAX_MAP].float()  # (C, T) of the first example
                self.stats.feature_maps[name] = [[compact(v) for v in row] for row in fmap.tolist()]
            if output.requires_grad:
                output.register_hook(lambda grad: record_gradient(entry, grad))

        return hook

    def _enter(self, name: str) -> None:  # hooks return None: a returned value would replace the module's
        self._stack.append(name)

    def _leave(self) -> None:
        if self._stack:
            self._stack.pop()

    def _stop_watching_functions(self) -> None:
        if self._mode is None:
            return
        self._mode.__exit__(None, None, None)
        self._mode = None
        self._stack.clear()
        for name, kind in self._functions_found.items():
            self.stats.unwatched[name] = f"calls {kind} as a function, not as a module"
        for name, maps in self._attention_seen.items():
            self._record_own_attention(name, maps)
        self._attention_seen.clear()

    def _record_own_attention(self, name: str, maps: list[Tensor]) -> None:
        """Attention a module computes in its own code (seen by the function watch, on the first sample): every
        map it made in this forward pass, as heads of one layer, measured as lmlab's attention modules are."""
        T = maps[0].size(-1)
        heads = [m.reshape(m.size(0), -1, T, T) for m in maps if m.shape[-2:] == maps[0].shape[-2:]
                 and m.size(0) == maps[0].size(0)]  # (B, heads, T, T) each
        module = self.model.get_submodule(name) if name != MODEL_FORWARD else self.model
        entry = self.stats.layers.setdefault(name, LayerStats(kind="attention", type=type(module).__name__))
        if not entry.step or entry.step[-1] != self._step:
            entry.step.append(self._step)
        self.stats.attention_example[name] = record_attention(entry, torch.cat(heads, dim=1))

    def on_after_backward(self, trainer) -> None:
        if not self._sampling:
            return
        self._stop_watching_functions()
        for name, p in self.params.items():
            entry = self.stats.params.setdefault(name, ParamStats(shape=list(p.shape)))
            if p.grad is None:  # not used in the forward pass (or detached): it gets no update
                entry.no_grad += 1
                continue
            record_parameter(entry, p, self._step)
            self._snapshots[name] = p.detach().clone()

    def on_step_end(self, trainer, record: dict[str, Any]) -> None:
        loss = record["loss"]
        if self.stats.initial_loss is None:
            self.stats.initial_loss = compact(loss)
        self.stats.loss.append(LossPoint(record["step"], compact(loss), compact(record["lr"]),
                                         compact(record.get("grad_norm", 0.0))))
        if trainer.lr_scale != self._lr_scale:  # a callback (ReduceLROnPlateau) scaled the schedule
            self._lr_scale = trainer.lr_scale
            self._control(trainer).lr_scales.append([trainer.step, compact(trainer.lr_scale)])
        if not self._sampling:
            self._plain_seconds.append(time.perf_counter() - self._step_started)
            return
        for name, before in self._snapshots.items():
            record_update(self.stats.params[name], before, self.params[name])
        self.stats.order = list(dict.fromkeys(self._order))  # forward order, for depth comparisons
        self._detach()
        if self._plain_seconds:
            took = time.perf_counter() - self._step_started
            self._sample_extra = max(0.0, took - statistics.median(self._plain_seconds))
        else:  # the first sample (step 0, with the one-off set-up): measured against the steps after it
            self._first_sample_seconds = time.perf_counter() - self._step_started

    def _detach(self) -> None:
        self._stop_watching_functions()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._snapshots.clear()
        for module in self.modules.values():
            if hasattr(module, "record_attention"):
                module.record_attention = False
        self._sampling = False

    # -- evaluation and the end ---------------------------------------------------------------------------

    def on_eval_end(self, trainer, record: dict[str, Any]) -> None:
        if "val_loss" in record:
            self.stats.val.append(ValPoint(record["step"], compact(record["val_loss"])))

    def on_train_end(self, trainer) -> None:
        self.finish(trainer)

    def on_interrupt(self, trainer) -> None:
        self.finish(trainer)

    def _control(self, trainer) -> RunControl:
        if self.stats.run is None:
            self.stats.run = RunControl(planned_steps=self._planned_steps)
        return self.stats.run

    def _read_run_control(self, trainer) -> None:
        """What the callbacks and the trainer did to the run, from their public state: the inspector sees the
        trainer's callbacks like any other callback does; the trainer knows nothing of the inspector."""
        control = self._control(trainer)
        control.planned_steps = max(control.planned_steps, getattr(self, "_planned_steps", 0))
        control.steps = trainer.step
        control.fitted_steps = trainer.schedule.max_steps
        budget = parse_budget(trainer.config.budget)
        control.time_budget = budget.amount if budget is not None and budget.is_time else 0.0
        stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        if stopper is not None:
            control.monitor, control.best, control.best_step = stopper.monitor, stopper.best, stopper.best_step
            control.stopped_step = stopper.stopped_step
            # EarlyStopping's own end (after this one's) makes the best step's weights the model's, unless
            # the run was interrupted: then it keeps the last weights, to resume from.
            control.restored = bool(stopper.restore_best_weights and stopper.best_step is not None
                                    and not trainer.interrupted)

    def finish(self, trainer) -> InspectorStats:
        """Close the record (also after a run that diverged) and save it to the run directory."""
        self._detach()
        self.stats.nonfinite_steps = trainer.nonfinite_steps
        self.stats.steps = trainer.step
        self._read_run_control(trainer)
        model = self.model
        if self._probes_apply(model) and self.stats.causality.checked:
            vocab, block = model.config.vocab_size, min(model.config.block_size, 16)
            end = causality_probe(model, vocab, block, seed=1)
            # A zero-initialised output layer ignores every token at the start: the newest token's effect is
            # judged at its largest, trained, value
            own = max((c for c in (self.stats.causality.own_change, end.own_change) if c is not None), default=None)
            if end.max_change > self.stats.causality.max_change:
                self.stats.causality = end
            self.stats.causality.own_change = own
            coupling = batch_coupling_probe(model, vocab, block, seed=1)
            if coupling.max_change > self.stats.batch_coupling.max_change:
                self.stats.batch_coupling = coupling
            self.stats.targets = self._probe(targets_probe, model, trainer.train_data, vocab) or self.stats.targets
        if trainer.run_dir is not None:
            save_stats(self.stats, Path(trainer.run_dir) / STATS_FILE)
        return self.stats
