"""How lmlab shows in Jupyter: a run, its findings, a comparison or ladder table and the inspector's report as
rich HTML (`_repr_html_`, which IPython calls on the last value of a cell), and training curves that redraw
in place at every evaluation while `lmlab.train` runs.

Nothing here changes the terminal: the HTML is only asked for by a notebook, and `lmlab.train` adds
LiveCurves only when `in_notebook()`. The plots are PNGs drawn on a bare matplotlib Figure (not pyplot), so
no inline backend shows a second copy and no global figure state is left behind. Findings are read by field
name from a dict or an object alike (rule, severity, layer, what, numbers, fix, since_step), whichever form
the inspector hands over.
"""

from __future__ import annotations

import base64
import html
import io
import math
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmlab.training.callbacks import Callback

SEVERITY_COLOURS = {"error": "#a00", "warning": "#a60", "note": "#555"}
LIVE_REDRAW_SECONDS = 1.0  # at most one redraw a second: a tiny model evaluates faster than a PNG draws
TABLE_STYLE = "border-collapse:collapse;font-size:90%;margin:.3em 0"
CELL_STYLE = "border:1px solid #ccc;padding:.15em .5em;text-align:left;vertical-align:top"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (not a terminal IPython). IPython is never imported here:
    a kernel has imported it already."""
    ipython = sys.modules.get("IPython")
    if sys.modules.get("ipykernel") is None or ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


# ----------------------------------------------------------------------------------------------------------
# Pieces: tables, findings, curves


def _field(finding: Any, name: str) -> Any:
    return finding.get(name) if isinstance(finding, dict) else getattr(finding, name, None)


def _number(value: Any, fmt: str) -> str:
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, fmt) if isinstance(value, (int, float)) else html.escape(str(value))


def table_html(header: Sequence[str] | None, rows: Iterable[Sequence[str]]) -> str:
    """A small bordered table (no header row when `header` is None); the cells are HTML already (escape
    text before)."""
    head = "" if header is None else \
        "<tr>" + "".join(f'<th style="{CELL_STYLE}">{html.escape(h)}</th>' for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f'<td style="{CELL_STYLE}">{c}</td>' for c in row) + "</tr>" for row in rows)
    return f'<table style="{TABLE_STYLE}">{head}{body}</table>'


def _numbers_text(numbers: Any) -> str:
    if isinstance(numbers, dict):
        return ", ".join(f"{k} {_number(v, '.4g')}" for k, v in numbers.items())
    return "" if numbers is None else html.escape(str(numbers))


def findings_html(findings: Sequence[Any] | None) -> str:
    """The findings as the report lists them: most severe first, each with its numbers and its fix."""
    if findings is None:
        return "<p><i>The inspector did not watch this run.</i></p>"
    problems = [f for f in findings if _field(f, "severity") != "note"]
    if not findings:
        return '<p style="color:#070">No problems found: every check passed.</p>'
    counted = {s: sum(_field(f, "severity") == s for f in findings) for s in SEVERITY_COLOURS}
    counts = ", ".join(f"{n} {s}{'s' if n > 1 else ''}" for s, n in counted.items() if n)
    lead = "Fix the first one first." if problems else "No problems found; notes put the numbers in context."
    rows = []
    for f in findings:
        severity = str(_field(f, "severity") or "")
        colour = SEVERITY_COLOURS.get(severity, "#000")
        since = _field(f, "since_step")
        what = html.escape(str(_field(f, "what") or "")) + (f" <small>(from step {since})</small>"
                                                            if since is not None else "")
        rows.append([f'<b style="color:{colour}">{html.escape(severity)}</b>',
                     f"<code>{html.escape(str(_field(f, 'rule') or ''))}</code>",
                     f"<code>{html.escape(str(_field(f, 'layer')))}</code>" if _field(f, "layer") else "",
                     what, _numbers_text(_field(f, "numbers")), html.escape(str(_field(f, "fix") or ""))])
    return (f"<p>{counts}. {lead}</p>"
            + table_html(["severity", "rule", "layer", "what", "numbers", "fix"], rows))


def curves_png(series: Sequence[tuple[str, Sequence[tuple[float, float]], str]], *, xlabel: str = "step",
               title: str = "", size: tuple[float, float] = (6.4, 3.4)) -> str | None:
    """A PNG (base64) of loss curves: one (label, [(x, y), ...], style) per line, style "-" for a line, "."
    for points joined by a line, "--" for one horizontal level. None when there is nothing to draw."""
    drawn = [(label, points, style) for label, points, style in series if points]
    if not drawn:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, points, style in drawn:
        xs, ys = zip(*points, strict=True)
        if style == "--" or len(points) == 1:
            ax.axhline(ys[-1], linestyle="--", linewidth=1, label=label, color=None)
        elif style == ".":
            ax.plot(xs, ys, marker=".", label=label)
        else:
            ax.plot(xs, ys, linewidth=1, alpha=0.8, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("NLL (nats/token)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def img_html(png: str | None, alt: str) -> str:
    return "" if png is None else f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def metric_curves(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, list[tuple[float, float]], str]]:
    """The training-loss and validation-loss curves of a run's metrics.jsonl records."""
    train = [(r["step"], r["loss"]) for r in metrics if isinstance(r.get("loss"), (int, float))]
    val = [(r["step"], r["val_loss"]) for r in metrics if isinstance(r.get("val_loss"), (int, float))]
    return [("train", train, "-"), ("val", val, ".")]


# ----------------------------------------------------------------------------------------------------------
# What a run, a comparison and a report show


def run_html(run: Any) -> str:
    """A run (lmlab.Run, read by attribute): what it is, its NLL per split, its curves and its findings."""
    name = Path(run.run_dir.path).name
    summary = run.summary
    title = (f"<h3 style=\"margin:.2em 0\">{html.escape(run.config.model_name)} run "
             f"<code>{html.escape(name)}</code></h3>")
    if summary is None:
        facts = [["status", f"not finished: checkpoint at step {run.step}" + (" (interrupted)" if getattr(
            run, "interrupted", False) else "")]]
    else:
        nll = summary.get("nll") or {}
        facts = [["parameters", _number(summary.get("parameters"), ",")],
                 ["steps", f"{_number(summary.get('steps'), ',')} of {_number(summary.get('planned_steps'), ',')}"],
                 *([f"{split} NLL", _number(nll[split], ".4f")] for split in ("train", "val", "test") if split in nll),
                 ["tokens/s", _number(summary.get("tokens_per_s"), ",")],
                 ["training time", f"{_number(summary.get('train_seconds'), '.1f')} s"]]
    facts.append(["data", html.escape(f"{run.config.data.source} ({run.config.data.mode} mode, vocab "
                                      f"{run.tokenizer.vocab_size})")])
    facts.append(["folder", f"<code>{html.escape(str(run.run_dir.path))}</code>"])
    curves = img_html(curves_png(metric_curves(run.metrics), title="loss"), "loss curves")
    return (f"<div>{title}<div style=\"display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start\">"
            f"{table_html(None, facts)}{curves}</div><h4 style=\"margin:.4em 0\">Findings</h4>"
            f"{findings_html(run.findings)}</div>")


def comparison_html(rows: Sequence[dict[str, Any]]) -> str:
    """Comparison rows (compare.summarize_run's) as a table, best held-out NLL in bold, and their validation
    curves against step."""
    def held_out(row):
        nll = row.get("nll") or {}
        return nll.get("test") if nll.get("test") is not None else nll.get("val")

    scores = [held_out(r) for r in rows if held_out(r) is not None]
    best = min(scores) if scores else None
    body = []
    for row in rows:
        nll = row.get("nll") or {}
        cells = [_number(nll.get(split), ".4f") for split in ("train", "val", "test")]
        if best is not None and held_out(row) == best:
            split = 2 if nll.get("test") is not None else 1
            cells[split] = f"<b>{cells[split]}</b>"
        body.append([f"<code>{html.escape(Path(row['run']).name or row['run'])}</code>", html.escape(row["model"]),
                     _number(row.get("parameters"), ","), *cells, _number(row.get("bits_per_char"), ".4f"),
                     _number(row.get("tokens_per_s"), ","), _number(row.get("train_seconds"), ".1f")])
    table = table_html(["run", "model", "params", "train", "val", "test", "bits/char", "tokens/s", "seconds"], body)
    series = [(f"{row['model']} ({Path(row['run']).name})" if row["model"] != Path(row["run"]).name else row["model"],
               row.get("val_curve") or [], ".") for row in rows]
    curves = img_html(curves_png(series, title="validation NLL"), "validation curves")
    return f"<div>{table}<p><small>NLL in nats per token; the best held-out NLL in bold.</small></p>{curves}</div>"


class Findings(list):
    """The inspector's findings: a plain list, shown in Jupyter as the report's table."""

    def _repr_html_(self) -> str:
        return findings_html(self)


class Comparison(list):
    """Comparison rows (one dict per run): a plain list, shown in Jupyter as a table with the curves. `notes`:
    the lines a ladder writes under its table (the budget compared at, undertrained rungs)."""

    notes: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        return comparison_html(self)


class Report:
    """The inspector's report.html for a run: inline in Jupyter (in a frame, so its styles stay its own),
    its path everywhere else."""

    def __init__(self, path: str | Path, height: int = 900):
        self.path, self.height = Path(path), height

    def __repr__(self) -> str:
        return f"Report({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def _repr_html_(self) -> str:
        page = self.path.read_text(encoding="utf-8")
        return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{self.height}px;'
                f'border:1px solid #ccc" title="{html.escape(self.path.name)}"></iframe>')


# ----------------------------------------------------------------------------------------------------------
# While training


class LiveCurves(Callback):
    """Training and validation loss, redrawn in one place in the cell at every evaluation (at most once a
    LIVE_REDRAW_SECONDS, and once more at the end), with a line saying where the run is. One display is
    updated, never appended to, so a long run does not flood the notebook."""

    name = "live_curves"

    def __init__(self, title: str = ""):
        self.title = title
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.handle: Any = None
        self.last_drawn = -math.inf

    def on_train_begin(self, trainer) -> None:
        if trainer.run_dir is not None and trainer.step:  # resumed: start from the curve the run has so far
            curves = metric_curves(trainer.run_dir.read_metrics())
            self.train, self.val = list(curves[0][1]), list(curves[1][1])

    def on_step_end(self, trainer, record: dict[str, Any]) -> None:
        if trainer.step % trainer.config.log_interval == 0 and isinstance(record.get("loss"), float):
            self.train.append((trainer.step, record["loss"]))

    def on_eval_end(self, trainer, record: dict[str, Any]) -> None:
        self.val.append((record["step"], record["val_loss"]))
        if time.perf_counter() - self.last_drawn >= LIVE_REDRAW_SECONDS:
            self.draw(trainer)

    def on_train_end(self, trainer) -> None:
        self.draw(trainer)

    def html(self, trainer) -> str:
        val = f", val {self.val[-1][1]:.4f}" if self.val else ""
        loss = f": loss {self.train[-1][1]:.4f}" if self.train else ""
        line = f"{self.title} step {trainer.step:,} of {trainer.config.max_steps:,}{loss}{val}".strip()
        png = curves_png([("train", self.train, "-"), ("val", self.val, ".")], title="loss")
        return f"<div><p style=\"margin:.2em 0\">{html.escape(line)}</p>{img_html(png, 'loss curves')}</div>"

    def draw(self, trainer) -> None:
        from IPython.display import HTML, display

        page = HTML(self.html(trainer))
        if self.handle is None:
            self.handle = display(page, display_id=True)
        else:
            self.handle.update(page)
        self.last_drawn = time.perf_counter()
