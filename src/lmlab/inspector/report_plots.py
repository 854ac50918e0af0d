"""The plots of report.html, each a PNG as base64 text (None when the statistics have nothing to show):
loss and LR, activation histograms at the start and the end, saturated and dead fractions over time, the
update:data ratio against the 1e-3 line (lecture 3's plot), gradient norms, attention maps (labelled with the
example's tokens) and conv feature maps. matplotlib is imported lazily, only when a figure is drawn.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
from typing import Any

from lmlab.inspector.rule_helpers import pattern
from lmlab.inspector.stats import InspectorStats
from lmlab.inspector.thresholds import UPDATE_HIGH, UPDATE_LOW, UPDATE_TARGET

MAX_LINES = 10  # layers per plot drawn one by one; past that, the worst are named and the rest grouped
MAX_NAMED = 3  # the worst layers named when there are more than MAX_LINES
ACTIVATIONS = ("tanh", "sigmoid", "relu", "gelu", "norm", "attention")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(ncols: int = 1, nrows: int = 1, height: float = 3.2):
    """A bare Figure on its own Agg canvas: pyplot's backend (a notebook's inline one) is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * ncols, height * nrows))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _legend(ax, fontsize: int = 7) -> None:
    """Beside the plot, not over the curves."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)


def _lines(ax, series: dict[str, tuple[list, list]], badness, transform=None) -> None:
    """One line per layer while they fit a legend; past MAX_LINES the MAX_NAMED worst (by `badness` of their
    values) are named and the others drawn as one median line and min-max band per layer group (the name
    with its layer numbers as #), so a 12-layer model's legend stays readable."""
    transform = transform or (lambda ys: ys)
    series = {n: _finite(xs, ys) for n, (xs, ys) in series.items()}
    series = {n: xy for n, xy in series.items() if xy[1]}
    if len(series) <= MAX_LINES:
        for name, (xs, ys) in series.items():
            ax.plot(xs, transform(ys), label=name)
        return
    worst = sorted(series, key=lambda n: badness(series[n][1]), reverse=True)[:MAX_NAMED]
    groups: dict[str, list[str]] = {}
    for name in series:
        if name not in worst:
            groups.setdefault(pattern(name), []).append(name)
    for group, names in groups.items():
        by_step: dict[Any, list[float]] = {}
        for name in names:
            for x, y in zip(*series[name], strict=True):
                by_step.setdefault(x, []).append(y)
        steps = sorted(by_step)
        median = transform([statistics.median(by_step[x]) for x in steps])
        lines = ax.plot(steps, median, lw=0.9, alpha=0.8, label=f"{group} ({len(names)}, median and range)")
        ax.fill_between(steps, transform([min(by_step[x]) for x in steps]), transform([max(by_step[x]) for x in steps]),
                        color=lines[0].get_color(), alpha=0.15, lw=0)
    for name in worst:
        xs, ys = series[name]
        ax.plot(xs, transform(ys), lw=1.6, label=f"{name} (worst)")


def _finite(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False) if isinstance(y, (int, float)) and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def loss_plot(stats: InspectorStats) -> str | None:
    records = stats.loss
    if not records:
        return None
    fig, axes = _figure(2)
    fig.subplots_adjust(wspace=0.6)
    ax, lr_ax = axes[0]
    ax.plot(*_finite([r[0] for r in records], [r[1] for r in records]), lw=0.7, alpha=0.6, label="train")
    if stats.val:
        ax.plot(*_finite(*zip(*stats.val, strict=True)), "o-", label="val")
    if stats.ln_vocab:
        ax.axhline(stats.ln_vocab, color="gray", ls="--", lw=0.8, label="ln V (uniform)")
    base = stats.baselines
    if base is not None and base.unigram:
        ax.axhline(base.unigram, color="tab:red", ls=":", lw=0.9, label="unigram entropy")
        ax.axhline(base.bigram, color="tab:green", ls=":", lw=0.9, label="counted bigram")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="loss")
    _legend(ax)
    lr_ax.plot([r[0] for r in records], [r[2] for r in records])
    lr_ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    return _png(fig)


def histograms_plot(stats: InspectorStats) -> str | None:
    layers = [(n, ly) for n, ly in stats.layers.items() if ly.kind in ACTIVATIONS and ly.hist]
    if not layers:
        return None
    fig, axes = _figure(2)
    for ax, index, title in ((axes[0][0], 0, "at the start"), (axes[0][1], -1, "at the end")):
        for name, layer in layers[:MAX_LINES]:
            counts, (lo, hi) = layer.hist[index], layer.hist_range[index]
            total = sum(counts) or 1
            width = (hi - lo) / len(counts)
            centres = [lo + (i + 0.5) * width for i in range(len(counts))]
            ax.plot(centres, [c / total for c in counts], label=f"{name} ({layer.kind})")
        ax.set(xlabel="activation value", ylabel="fraction", title=f"activations {title} (step "
               f"{layers[0][1].step[index]})")
    _legend(axes[0][1])
    return _png(fig)


def over_time_plot(stats: InspectorStats, key: str, title: str, ylabel: str,
                   threshold: float | None = None) -> str | None:
    layers = [(n, ly) for n, ly in stats.layers.items() if getattr(ly, key)]
    if not layers:
        return None
    fig, axes = _figure()
    _lines(axes[0][0], {n: (ly.step, getattr(ly, key)) for n, ly in layers}, badness=lambda ys: ys[-1])
    if threshold is not None:
        axes[0][0].axhline(threshold, color="black", ls="--", lw=1, label=f"warning at {threshold:.0%}")
    axes[0][0].set(xlabel="step", ylabel=ylabel, title=title, ylim=(0, 1))
    _legend(axes[0][0])
    return _png(fig)


def update_ratio_plot(stats: InspectorStats) -> str | None:
    params = [(n, p) for n, p in stats.params.items() if len(p.shape) >= 2 and p.update_data]
    if not params:
        return None
    fig, axes = _figure(height=3.6)
    ax = axes[0][0]
    _lines(ax, {n: (p.step, p.update_data) for n, p in params},
           badness=lambda ys: abs(statistics.median(ys) - UPDATE_TARGET))
    ax.axhspan(UPDATE_TARGET - 0.5, UPDATE_TARGET + 0.5, color="tab:green", alpha=0.12, lw=0,
               label="the ~1e-3 band that trains well")
    ax.axhline(UPDATE_TARGET, color="black", ls="--", lw=1, label="1e-3 (good)")
    for level in (UPDATE_HIGH, UPDATE_LOW):
        ax.axhline(level, color="tab:red", ls=":", lw=1)
    ax.set(xlabel="step", ylabel="log10 update:data", title="update:data ratio per weight matrix (red: warnings)")
    _legend(ax)
    return _png(fig)


def gradients_plot(stats: InspectorStats) -> str | None:
    records = stats.loss
    params = [(n, p) for n, p in stats.params.items() if len(p.shape) >= 2 and p.grad_data]
    if not records and not params:
        return None
    fig, axes = _figure(2)
    fig.subplots_adjust(wspace=0.35)
    ax, ratio_ax = axes[0]
    steps, norms = _finite([r[0] for r in records], [r[3] for r in records])
    ax.plot(steps, norms, lw=0.7)
    if stats.grad_clip:
        ax.axhline(stats.grad_clip, color="gray", ls="--", lw=0.8, label="clip")
        _legend(ax)
    ax.set(xlabel="step", ylabel="global gradient norm (before clipping)", title="gradient norm", yscale="log")
    _lines(ratio_ax, {n: (p.step, p.grad_data) for n, p in params}, badness=lambda ys: max(ys),
           transform=lambda ys: [max(y, 1e-12) for y in ys])
    ratio_ax.set(xlabel="step", ylabel="std(grad) / std(weight)", title="grad:data ratio", yscale="log")
    _legend(ratio_ax)
    return _png(fig)


def maps_plots(maps: dict[str, Any], title: str, per_head: bool, tokens: list[str] | None = None,
               length: int = 0) -> list[tuple[str, str]]:
    """`length`: the example's real tokens; attention maps are cut there (a padded lines-mode example's
    padding would otherwise fill half the map)."""
    out = []
    for name, value in list(maps.items())[:4]:
        heads = value if per_head else [value]
        if per_head and length >= 2:
            heads = [[row[:length] for row in head[:length]] for head in heads]
        fig, axes = _figure(min(len(heads), 4), math.ceil(len(heads) / 4), height=3.4)
        flat = [ax for row in axes for ax in row]
        for i, ax in enumerate(flat):
            if i < len(heads):
                ax.imshow(heads[i], cmap="viridis", aspect="auto")
                ax.set(title=f"head {i}" if per_head else "channels x time", xlabel="key" if per_head else "time")
                if i % 4 == 0:
                    ax.set_ylabel("query" if per_head else "channel")
                if per_head and tokens and len(tokens) >= len(heads[i]):
                    labels = tokens[: len(heads[i])]
                    ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90)
                    ax.set_yticks(range(len(labels)), labels, fontsize=6)
            else:
                ax.axis("off")
        out.append((f"{title}: {name}", _png(fig)))
    return out


def token_labels(stats: InspectorStats, tokenizer: Any) -> list[str] | None:
    """The attention example's tokens as text (their ids when there is no tokenizer)."""
    ids = stats.attention_tokens
    if not ids:
        return None
    if tokenizer is None:
        return [str(i) for i in ids]
    labels = []
    for i in ids:
        try:
            text = tokenizer.decode([i], skip_special_tokens=False)
        except Exception:  # a special id some tokenizers refuse to decode on its own
            text = ""
        labels.append(repr(text)[1:-1] or f"<{i}>")
    return labels
