"""The inspector's statistics record: what the callback collects, what the health rules, the report's plots
and the metric loggers read. Per layer and per parameter, short lists (one value per sampled step) of compact
floats; histograms of HIST_BINS bins; maps cut to MAX_MAP rows and columns. Saved to and read from the run
folder's inspect.json in the same JSON shape as always, so older runs still read (fields a file lacks take
their defaults).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from lmlab.run.folder import INSPECTION_FILE

STATS_FILE = INSPECTION_FILE
HIST_BINS = 40
MAX_MAP = 32  # attention maps and conv feature maps are cut to this many rows/columns for the report
VERSION = 1


def compact(x: float) -> float:
    """Compact float for JSON: 5 significant digits. NaN and inf are kept (Python's json writes them as
    NaN/Infinity and reads them back), because a non-finite statistic is itself a finding."""
    return float(f"{x:.5g}")


class LossPoint(NamedTuple):
    """One training step as the inspector saw it (a JSON list [step, loss, lr, grad_norm])."""

    step: int
    loss: float
    lr: float
    grad_norm: float


class ValPoint(NamedTuple):
    step: int
    loss: float


@dataclass(slots=True, kw_only=True)
class LayerStats:
    """One watched module, one value per sampled step in each list (gradients only when one reached it)."""

    kind: str
    type: str
    step: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    hist: list[list[int]] = field(default_factory=list)
    hist_range: list[list[float]] = field(default_factory=list)
    saturated: list[float] = field(default_factory=list)  # tanh/sigmoid: share of |t| > SATURATION
    dead: list[float] = field(default_factory=list)  # relu/gelu: share of units that never fired over the window
    attn_entropy: list[list[float]] = field(default_factory=list)  # attention: mean entropy per head (nats)
    attn_uniform: list[float] = field(default_factory=list)  # the entropy a uniform map over the same keys has
    grad_mean: list[float] = field(default_factory=list)
    grad_std: list[float] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ParamStats:
    """One trainable parameter: its gradient and the step that really happened, per sampled step."""

    shape: list[int]
    step: list[int] = field(default_factory=list)
    data_std: list[float] = field(default_factory=list)
    grad_mean: list[float] = field(default_factory=list)
    grad_std: list[float] = field(default_factory=list)
    grad_data: list[float | None] = field(default_factory=list)
    update_data: list[float | None] = field(default_factory=list)  # log10 std(dw) / std(w); None: no change
    moved: bool | None = None  # None until a sampled step was compared with the one before it
    no_grad: int = 0  # sampled steps on which it got no gradient at all

    @property
    def numel(self) -> int:
        return math.prod(self.shape) if self.shape else 1


@dataclass(slots=True, kw_only=True)
class Baselines:
    """What trivial models reach on the training split, in nats per token."""

    unigram: float
    bigram: float
    tokens: int


@dataclass(slots=True, kw_only=True)
class Causality:
    """The causality probe: how far earlier positions' logits move when a later token changes."""

    checked: bool = False
    length: int = 0
    max_change: float = 0.0
    position: int = -1
    leak: bool = False
    # How far position j's own logits move when token j changes, the smallest over j (a next-token model's
    # prediction at j must read token j); None: not measured (files written before this field)
    own_change: float | None = None


@dataclass(slots=True, kw_only=True)
class Invariants:
    """Eval-mode probes of what every causal next-token model computes, on random tokens at the start: the
    same input twice gives the same logits, a prefix run alone gives the logits it has inside the longer
    sequence (what generation relies on), and the outputs are logits, not probabilities."""

    checked: bool = False
    scale: float = 1.0  # 1 + the largest |logit|: the changes below are judged against it
    repeat_change: float = 0.0  # the same batch twice
    prefix_change: float = 0.0  # the first half of the sequence alone, against the same positions in the whole
    probabilities: bool = False  # every row already in [0, 1] and summing to 1


@dataclass(slots=True, kw_only=True)
class TargetsProbe:
    """One training batch at the end of training, in eval mode: the model's own loss beside the next-token
    loss its logits give on the labels the trainer passed, and which targets the model appears to score."""

    checked: bool = False
    positions: int = 0  # scored targets in the batch
    model_loss: float | None = None  # what the model's forward returned
    label_loss: float | None = None  # cross-entropy of logits at t against labels at t+1 (padding ignored)
    unshifted_loss: float | None = None  # ... against labels at t: a model that forgot the shift
    unmasked_loss: float | None = None  # ... against input_ids at t+1, padding included
    copy_share: float = 0.0  # positions whose prediction (argmax) is their own input token
    repeat_share: float = 0.0  # scored targets equal to the token before them: the data's own copy rate
    padded_share: float = 0.0  # padding after padding among the input's targets (what a mask-less loss scores)
    scored_padding: float = 0.0  # padding after padding among the targets the labels score
    pad_id: int | None = None


@dataclass(slots=True, kw_only=True)
class BatchCoupling:
    """Eval mode: how far one example's logits move when the other rows of its batch change."""

    checked: bool = False
    max_change: float = 0.0
    coupled: bool = False


@dataclass(slots=True, kw_only=True)
class DataOverlap:
    """Training examples that are also validation examples: whole rows, and windows of `window` tokens."""

    checked: bool = False
    split: str = "val"
    rows: int = 0  # validation rows compared
    exact: int = 0  # of them, equal to a training row
    examples: list[list[int]] = field(default_factory=list)  # a few of those, as token ids
    window: int = 0
    windows: int = 0  # validation windows compared
    shared: int = 0  # of them, found in the training split


@dataclass(slots=True, kw_only=True)
class RunControl:
    """What the run's callbacks and the trainer did to the run, read at its end: early stopping (the step it
    stopped at, the best step and whether its weights became the model), learning-rate scales set by a
    callback (ReduceLROnPlateau), and a time budget that stopped the run before its schedule ended."""

    planned_steps: int = 0  # max_steps when training began
    fitted_steps: int = 0  # the schedule's steps when it ended (a time budget fixes its decay while training)
    steps: int = 0
    time_budget: float = 0.0
    stopped_step: int | None = None  # early stopping ended the run here
    best_step: int | None = None  # early stopping's best evaluation
    best: float | None = None
    monitor: str | None = None
    restored: bool = False  # the best step's weights are the run's final model
    lr_scales: list[list[float]] = field(default_factory=list)  # [step, scale] each time the scale changed


@dataclass(slots=True, kw_only=True)
class InspectorStats:
    """Everything the inspector recorded about one run."""

    version: int = VERSION
    every: int = 0
    vocab_size: int = 0
    ln_vocab: float | None = None
    initial_loss: float | None = None
    loss: list[LossPoint] = field(default_factory=list)
    val: list[ValPoint] = field(default_factory=list)
    layers: dict[str, LayerStats] = field(default_factory=dict)
    params: dict[str, ParamStats] = field(default_factory=dict)
    attention_example: dict[str, list[list[list[float]]]] = field(default_factory=dict)  # (nh, T, T) per layer
    feature_maps: dict[str, list[list[float]]] = field(default_factory=dict)  # (C, T) per conv layer
    causality: Causality = field(default_factory=Causality)
    nonfinite_steps: int = 0
    grad_clip: float = 0.0
    counted: bool = False
    lr: float | None = None
    warmup_steps: int = 0
    weight_decay: float = 0.0
    optimizer: str | None = None
    default_lr: float | None = None
    param_count: int = 0
    frozen: dict[str, int] = field(default_factory=dict)  # requires_grad=False: numel per tensor
    baselines: Baselines | None = None
    unwatched: dict[str, str] = field(default_factory=dict)  # module name -> why its inside is not seen
    attention_tokens: list[int] = field(default_factory=list)  # the tokens of the attention example
    attention_length: int = 0  # its real tokens (a padded lines-mode example ends before the map does); 0: all
    order: list[str] = field(default_factory=list)  # watched layers in forward order
    steps: int | None = None  # set when the record is closed at the end of training
    run: RunControl | None = None
    targets: TargetsProbe = field(default_factory=TargetsProbe)
    batch_coupling: BatchCoupling = field(default_factory=BatchCoupling)
    overlap: DataOverlap = field(default_factory=DataOverlap)
    invariants: Invariants = field(default_factory=Invariants)
    batch_tokens: int = 0  # tokens in a sampled batch: the loss is their mean, so a gradient times this is per token
    max_context: int | None = None  # the model's declared context (1: a bigram, which cannot beat the bigram)

    # -- JSON -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("layers", "params"):
                value = {name: _entry_dict(entry) for name, entry in value.items()}
            elif f.name == "causality":
                value = _plain(value) if value.checked else {"checked": False}
            elif f.name in ("targets", "batch_coupling", "overlap", "invariants"):
                if not value.checked:
                    continue  # not probed: absent, as in files written before these probes
                value = _plain(value)
            elif f.name in ("baselines", "run"):
                value = _plain(value) if value is not None else None
                if value is None and f.name == "run":
                    continue
            elif f.name in ("loss", "val"):
                value = [list(r) for r in value]
            elif f.name in ("attention_tokens", "attention_length", "order") and not value:
                continue  # absent until recorded, as before
            elif f.name == "steps" and value is None:
                continue
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> InspectorStats:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["loss"] = [LossPoint(*r[:4]) for r in raw.get("loss", [])]
        values["val"] = [ValPoint(*r[:2]) for r in raw.get("val", [])]
        values["layers"] = {n: _from(LayerStats, e) for n, e in (raw.get("layers") or {}).items()}
        values["params"] = {n: _from(ParamStats, e) for n, e in (raw.get("params") or {}).items()}
        values["causality"] = _from(Causality, raw.get("causality") or {})
        base = raw.get("baselines")
        values["baselines"] = _from(Baselines, base) if base else None
        values["run"] = _from(RunControl, raw["run"]) if raw.get("run") else None
        values["targets"] = _from(TargetsProbe, raw.get("targets") or {})
        values["batch_coupling"] = _from(BatchCoupling, raw.get("batch_coupling") or {})
        values["overlap"] = _from(DataOverlap, raw.get("overlap") or {})
        values["invariants"] = _from(Invariants, raw.get("invariants") or {})
        for key in ("frozen", "unwatched", "attention_example", "feature_maps"):
            values[key] = dict(raw.get(key) or {})
        return cls(**values)


def _plain(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _entry_dict(entry: LayerStats | ParamStats) -> dict[str, Any]:
    """Lists that hold nothing and counters at zero are left out, so each entry says only what was seen."""
    out = {}
    for f in fields(entry):
        value = getattr(entry, f.name)
        if value is None or (f.name != "shape" and not isinstance(value, bool) and value in ([], 0)):
            continue
        out[f.name] = value
    return out


def _from(cls, raw: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in raw.items() if k in known}
    if cls is LayerStats:
        values.setdefault("type", values.get("kind", "other"))
        values.setdefault("kind", "other")
    if cls is ParamStats:
        values.setdefault("shape", [])
    if cls is Baselines:
        values.setdefault("tokens", 0)
    return cls(**values)


def save_stats(stats: InspectorStats, path: Path) -> None:
    from lmlab.files import atomic_write_text

    atomic_write_text(path, json.dumps(stats.to_dict(), separators=(",", ":")) + "\n")


def load_stats(path: str | Path) -> InspectorStats:
    from lmlab.files import read_json_file

    return InspectorStats.from_dict(read_json_file(path, bad="corrupted inspector statistics"))
