"""The plots of report.html, each a PNG as base64 text (None when the statistics have nothing to show):
loss and LR, activation histograms at the start and the end, saturated and dead fractions over time, the
update:data ratio against the 1e-3 line (lecture 3's plot), gradient norms, attention maps (labelled with the
example's tokens) and conv feature maps. matplotlib is imported lazily, only when a figure is drawn.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from lmlab.inspector.thresholds import UPDATE_HIGH, UPDATE_LOW

MAX_LINES = 10  # layers per plot, so legends stay readable
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


def _finite(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False) if isinstance(y, (int, float)) and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _loss_plot(stats: dict[str, Any]) -> str | None:
    records = stats.get("loss", [])
    if not records:
        return None
    fig, axes = _figure(2)
    fig.subplots_adjust(wspace=0.6)
    ax, lr_ax = axes[0]
    ax.plot(*_finite([r[0] for r in records], [r[1] for r in records]), lw=0.7, alpha=0.6, label="train")
    if stats.get("val"):
        ax.plot(*_finite(*zip(*stats["val"], strict=True)), "o-", label="val")
    if stats.get("ln_vocab"):
        ax.axhline(stats["ln_vocab"], color="gray", ls="--", lw=0.8, label="ln V (uniform)")
    base = stats.get("baselines") or {}
    if base.get("unigram"):
        ax.axhline(base["unigram"], color="tab:red", ls=":", lw=0.9, label="unigram entropy")
        ax.axhline(base["bigram"], color="tab:green", ls=":", lw=0.9, label="counted bigram")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="loss")
    _legend(ax)
    lr_ax.plot([r[0] for r in records], [r[2] for r in records])
    lr_ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    return _png(fig)


def _histograms(stats: dict[str, Any]) -> str | None:
    layers = [(n, ly) for n, ly in stats["layers"].items() if ly["kind"] in ACTIVATIONS and ly.get("hist")]
    if not layers:
        return None
    fig, axes = _figure(2)
    for ax, index, title in ((axes[0][0], 0, "at the start"), (axes[0][1], -1, "at the end")):
        for name, layer in layers[:MAX_LINES]:
            counts, (lo, hi) = layer["hist"][index], layer["hist_range"][index]
            total = sum(counts) or 1
            width = (hi - lo) / len(counts)
            centres = [lo + (i + 0.5) * width for i in range(len(counts))]
            ax.plot(centres, [c / total for c in counts], label=f"{name} ({layer['kind']})")
        ax.set(xlabel="activation value", ylabel="fraction", title=f"activations {title} (step "
               f"{layers[0][1]['step'][index]})")
    _legend(axes[0][1])
    return _png(fig)


def _over_time(stats: dict[str, Any], key: str, title: str, ylabel: str, threshold: float | None = None) -> str | None:
    layers = [(n, ly) for n, ly in stats["layers"].items() if ly.get(key)]
    if not layers:
        return None
    fig, axes = _figure()
    for name, layer in layers[:MAX_LINES]:
        ax = axes[0][0]
        ax.plot(*_finite(layer["step"], layer[key]), label=name)
    if threshold is not None:
        axes[0][0].axhline(threshold, color="black", ls="--", lw=1, label=f"warning at {threshold:.0%}")
    axes[0][0].set(xlabel="step", ylabel=ylabel, title=title, ylim=(0, 1))
    _legend(axes[0][0])
    return _png(fig)


def _update_ratio(stats: dict[str, Any]) -> str | None:
    params = [(n, p) for n, p in stats["params"].items() if len(p.get("shape", [])) >= 2 and p.get("update_data")]
    if not params:
        return None
    fig, axes = _figure(height=3.6)
    ax = axes[0][0]
    for name, p in params[:MAX_LINES]:
        ax.plot(*_finite(p["step"], p["update_data"]), label=name)
    ax.axhline(-3, color="black", ls="--", lw=1, label="1e-3 (good)")
    for level in (UPDATE_HIGH, UPDATE_LOW):
        ax.axhline(level, color="tab:red", ls=":", lw=1)
    ax.set(xlabel="step", ylabel="log10 update:data", title="update:data ratio per weight matrix (red: warnings)")
    _legend(ax)
    return _png(fig)


def _gradients(stats: dict[str, Any]) -> str | None:
    records = stats.get("loss", [])
    params = [(n, p) for n, p in stats["params"].items() if len(p.get("shape", [])) >= 2 and p.get("grad_data")]
    if not records and not params:
        return None
    fig, axes = _figure(2)
    fig.subplots_adjust(wspace=0.35)
    ax, ratio_ax = axes[0]
    steps, norms = _finite([r[0] for r in records], [r[3] for r in records])
    ax.plot(steps, norms, lw=0.7)
    if stats.get("grad_clip"):
        ax.axhline(stats["grad_clip"], color="gray", ls="--", lw=0.8, label="clip")
        _legend(ax)
    ax.set(xlabel="step", ylabel="global gradient norm (before clipping)", title="gradient norm", yscale="log")
    for name, p in params[:MAX_LINES]:
        xs, ys = _finite(p["step"], p["grad_data"])
        ratio_ax.plot(xs, [max(y, 1e-12) for y in ys], label=name)
    ratio_ax.set(xlabel="step", ylabel="std(grad) / std(weight)", title="grad:data ratio", yscale="log")
    _legend(ratio_ax)
    return _png(fig)


def _maps(maps: dict[str, Any], title: str, per_head: bool, tokens: list[str] | None = None) -> list[tuple[str, str]]:
    out = []
    for name, value in list(maps.items())[:4]:
        heads = value if per_head else [value]
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


def _token_labels(stats: dict[str, Any], tokenizer: Any) -> list[str] | None:
    """The attention example's tokens as text (their ids when there is no tokenizer)."""
    ids = stats.get("attention_tokens")
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
