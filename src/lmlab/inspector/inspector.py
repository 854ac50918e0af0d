"""The inspector: a training callback that looks inside any `torch.nn.Module` through forward and backward hooks,
with no change to model code. Every `every` steps it hooks exactly one training step (the others pay nothing) and
records per layer activation mean, std, histogram, saturated (tanh/sigmoid) and dead (ReLU/GELU) fractions and
gradient mean and std; per parameter gradient mean and std, grad:data and the update:data ratio log10(std(dw) / std(w))
of the step that really happened (snapshot after backward, compared after the step: right for Adam and SGD); per
attention head (`record_attention`, `last_attention` (B, nh, T, T)) the entropy. Under train.compile a sampled
step runs uncompiled, so adding and removing hooks never recompiles the graph. One-off measurements: probes.py."""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.inspector.probes import (
    _SKIP,
    _default_lr,
    _FunctionWatch,
    causality_probe,
    data_baselines,
    default_interval,
    layer_kind,
)
from lmlab.inspector.stats_file import HIST_BINS, MAX_MAP, STATS_FILE, _r, save_stats
from lmlab.models.base import capability
from lmlab.training.callbacks import Callback

SATURATION = 0.97  # |tanh| above this passes almost no gradient (1 - t^2 < 0.06), as in lecture 3


class Inspector(Callback):
    """Sample per-layer statistics every `every` steps (None: ~50 samples per run, at most every 100)."""

    def __init__(self, every: int | None = None, *, dead_window: int = 3, probe_causality: bool = True):
        if every is not None and every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every = every
        self.dead_window = dead_window
        self.probe_causality = probe_causality
        self.stats: dict[str, Any] = {}
        self._handles: list[Any] = []
        self._snapshots: dict[str, Tensor] = {}
        self._alive: dict[str, deque] = {}
        self._sampling = False
        self._order: list[str] = []
        self._looked_for_functions = False
        self._stack: list[str] = []
        self._mode: _FunctionWatch | None = None

    # -- setup --------------------------------------------------------------------------------------------

    def on_train_begin(self, trainer) -> None:
        model = trainer.model
        self.model = model
        self.every = self.every or default_interval(trainer.config.max_steps)
        self.modules = {name: m for name, m in model.named_modules() if name and self._watch(m)}
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self._kinds = {name: layer_kind(m) for name, m in model.named_modules()}
        config = getattr(model, "config", None)
        vocab = getattr(config, "vocab_size", 0) or 0
        previous = trainer.run_dir / STATS_FILE if trainer.run_dir is not None else None
        if trainer.step > 0 and previous is not None and previous.is_file():  # resuming: keep the history
            self.stats = json.loads(previous.read_text(encoding="utf-8"))
            self.stats["loss"] = [r for r in self.stats["loss"] if r[0] <= trainer.step]
        else:
            self.stats = {
                "version": 1, "every": self.every, "vocab_size": vocab,
                "ln_vocab": _r(math.log(vocab)) if vocab > 1 else None, "initial_loss": None,
                "loss": [], "val": [], "layers": {}, "params": {}, "attention_example": {},
                "feature_maps": {}, "causality": {"checked": False}, "nonfinite_steps": 0,
                "grad_clip": trainer.config.grad_clip,
            }
        self._describe(trainer, model, vocab)
        block = getattr(config, "block_size", 0) or 0
        if self.probe_causality and vocab > 1 and block >= 2 and not capability(model, "counted"):
            self.stats["causality"] = causality_probe(model, vocab, min(block, 16))

    def _describe(self, trainer, model: nn.Module, vocab: int) -> None:
        """What the findings judge against, recorded once (kept on resume)."""
        stats = self.stats
        stats["counted"] = bool(capability(model, "counted"))
        stats["lr"] = trainer.config.lr
        stats["optimizer"] = trainer.config.optimizer
        stats.setdefault("default_lr", _default_lr(model))
        params = dict(model.named_parameters())
        stats["param_count"] = sum(p.numel() for p in params.values())
        stats["frozen"] = {n: p.numel() for n, p in params.items() if not p.requires_grad}
        if "baselines" not in stats:
            try:
                stats["baselines"] = data_baselines(trainer.train_data, vocab)
            except (RuntimeError, ValueError, TypeError):  # a dataset that is not token pairs: no baselines
                stats["baselines"] = None
        fused = {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, nn.RNNBase)}
        stats.setdefault("unwatched", {})
        for name, cls in fused.items():
            stats["unwatched"][name] = f"fused {cls} kernel: its gates and tanh are not visible"

    @staticmethod
    def _watch(module: nn.Module) -> bool:
        if isinstance(module, _SKIP):
            return False
        leaf = next(module.children(), None) is None
        return leaf or layer_kind(module) == "attention"

    # -- one sampled step ---------------------------------------------------------------------------------

    def on_step_begin(self, trainer) -> None:
        if self._sampling:  # the previous sampled step was skipped as non-finite: drop what it gathered
            self._detach()
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
        if any(k == "attention" for k in self._kinds.values()):
            self._handles.append(self.model.register_forward_pre_hook(self._keep_tokens, with_kwargs=True))
        if not self._looked_for_functions:  # once per process: which modules call activation functions
            self._looked_for_functions = True
            self._watch_functions()

    def _keep_tokens(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        if isinstance(ids, Tensor) and ids.dim() == 2:
            self.stats["attention_tokens"] = ids[0, :MAX_MAP].tolist()

    def _watch_functions(self) -> None:
        found: dict[str, str] = {}
        for name, module in self.model.named_modules():
            label = name or "(the model's own forward)"
            self._handles.append(module.register_forward_pre_hook(lambda *_, n=label: self._enter(n)))
            self._handles.append(module.register_forward_hook(lambda *_: self._leave()))
        self._kinds.setdefault("(the model's own forward)", "other")
        self._mode = _FunctionWatch(self._stack, self._kinds, found)
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
            entry = self.stats["layers"].setdefault(name, {"kind": kind, "type": type(module).__name__})
            self._record_activation(name, entry, kind, output.detach())
            if kind == "attention":
                attention = getattr(module, "last_attention", None)
                if attention is None and isinstance(weights, Tensor):
                    attention = weights.detach().unsqueeze(1)  # nn.MultiheadAttention averages heads: (B, 1, T, T)
                if attention is not None:
                    self._record_attention(name, entry, attention.detach().float())
            if kind == "conv" and output.dim() == 3:
                fmap = output.detach()[0, :MAX_MAP, :MAX_MAP].float()  # (C, T) of the first example
                self.stats["feature_maps"][name] = [[_r(v) for v in row] for row in fmap.tolist()]
            if output.requires_grad:
                output.register_hook(self._grad_hook(entry))

        return hook

    def _record_activation(self, name: str, entry: dict[str, Any], kind: str, out: Tensor) -> None:
        x = out.float()
        finite = bool(torch.isfinite(x).all())
        lo, hi = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}.get(kind, (None, None))
        if lo is None:
            lo, hi = (x.min().item(), x.max().item()) if finite and x.numel() else (0.0, 0.0)
            hi = hi if hi > lo else lo + 1e-6
        hist = torch.histc(x, HIST_BINS, lo, hi) if finite else torch.zeros(HIST_BINS)
        entry.setdefault("step", []).append(self._step)
        entry.setdefault("mean", []).append(_r(x.mean().item()))
        entry.setdefault("std", []).append(_r(x.std().item()) if x.numel() > 1 else 0.0)
        entry.setdefault("hist", []).append([int(c) for c in hist.tolist()])
        entry.setdefault("hist_range", []).append([_r(lo), _r(hi)])
        if kind == "tanh":
            entry.setdefault("saturated", []).append(_r((x.abs() > SATURATION).float().mean().item()))
        elif kind == "sigmoid":
            entry.setdefault("saturated", []).append(_r(((x - 0.5).abs() > SATURATION / 2).float().mean().item()))
        if kind in ("relu", "gelu") and x.dim() >= 2:
            alive = (x.reshape(-1, x.size(-1)) > 0).any(0)  # (units,): fired for some example in the batch
            window = self._alive.setdefault(name, deque(maxlen=self.dead_window))
            window.append(alive)
            ever = torch.stack(list(window)).any(0)
            entry.setdefault("dead", []).append(_r(1.0 - ever.float().mean().item()))

    def _record_attention(self, name: str, entry: dict[str, Any], attention: Tensor) -> None:
        p = attention.clamp_min(0)  # (B, nh, T, T)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)  # (B, nh, T): masked zeros add nothing
        entry.setdefault("attn_entropy", []).append([_r(v) for v in entropy.mean(dim=(0, 2)).tolist()])
        example = p[0, :, :MAX_MAP, :MAX_MAP]  # (nh, T, T) of the first example
        self.stats["attention_example"][name] = [[[_r(v) for v in row] for row in head] for head in example.tolist()]

    def _grad_hook(self, entry: dict[str, Any]):
        def hook(grad: Tensor) -> None:
            g = grad.detach().float()
            entry.setdefault("grad_mean", []).append(_r(g.mean().item()))
            entry.setdefault("grad_std", []).append(_r(g.std().item()) if g.numel() > 1 else 0.0)

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
            self.stats.setdefault("unwatched", {})[name] = f"calls {kind} as a function, not as a module"

    def on_after_backward(self, trainer) -> None:
        if not self._sampling:
            return
        self._stop_watching_functions()
        for name, p in self.params.items():
            if p.grad is None:  # not used in the forward pass (or detached): it gets no update
                entry = self.stats["params"].setdefault(name, {"shape": list(p.shape)})
                entry["no_grad"] = entry.get("no_grad", 0) + 1
                continue
            g, w = p.grad.detach().float(), p.detach().float()
            w_std = w.std().item() if w.numel() > 1 else abs(w.item())
            entry = self.stats["params"].setdefault(name, {"shape": list(p.shape)})
            entry.setdefault("step", []).append(self._step)
            entry.setdefault("data_std", []).append(_r(w_std))
            entry.setdefault("grad_mean", []).append(_r(g.mean().item()))
            g_std = g.std().item() if g.numel() > 1 else abs(g.item())
            entry.setdefault("grad_std", []).append(_r(g_std))
            entry.setdefault("grad_data", []).append(_r(g_std / w_std) if w_std > 0 else None)
            self._snapshots[name] = p.detach().clone()

    def on_step_end(self, trainer, record: dict[str, Any]) -> None:
        loss = record["loss"]
        if self.stats["initial_loss"] is None:
            self.stats["initial_loss"] = _r(loss)
        self.stats["loss"].append([record["step"], _r(loss), _r(record["lr"]), _r(record.get("grad_norm", 0.0))])
        if not self._sampling:
            return
        for name, before in self._snapshots.items():
            p = self.params[name]
            update = (p.detach() - before).float()
            w_std = before.float().std().item() if before.numel() > 1 else abs(before.item())
            u_std = update.std().item() if update.numel() > 1 else abs(update.item())
            ratio = math.log10(u_std / w_std) if u_std > 0 and w_std > 0 else None
            entry = self.stats["params"][name]
            entry.setdefault("update_data", []).append(_r(ratio) if ratio is not None else None)
            entry["moved"] = entry.get("moved", False) or bool(update.abs().max().item() > 0)
        self.stats["order"] = list(dict.fromkeys(self._order))  # forward order, for depth comparisons
        self._detach()

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
            self.stats["val"].append([record["step"], _r(record["val_loss"])])

    def on_train_end(self, trainer) -> None:
        self.finish(trainer)

    def on_interrupt(self, trainer) -> None:
        self.finish(trainer)

    def finish(self, trainer) -> dict[str, Any]:
        """Close the record (also after a run that diverged) and save it to the run directory."""
        self._detach()
        self.stats["nonfinite_steps"] = trainer.nonfinite_steps
        self.stats["steps"] = trainer.step
        model = self.model
        config = getattr(model, "config", None)
        vocab, block = getattr(config, "vocab_size", 0) or 0, getattr(config, "block_size", 0) or 0
        if self.probe_causality and vocab > 1 and block >= 2 and self.stats["causality"].get("checked"):
            end = causality_probe(model, vocab, min(block, 16), seed=1)
            if end["max_change"] > self.stats["causality"]["max_change"]:
                self.stats["causality"] = end
        if trainer.run_dir is not None:
            save_stats(self.stats, Path(trainer.run_dir) / STATS_FILE)
        return self.stats
