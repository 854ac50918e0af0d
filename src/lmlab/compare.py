"""Compare finished runs side by side: one row per run (model, parameters, train/val/test NLL, bits per
character, tokens/s, training time) read from each run directory's summary.json, config.json and
metrics.jsonl, as a text table, JSON, and a PNG of the validation curves.

Reads files only: it knows nothing of how the runs were trained, so runs from `lmlab train`, `lmlab
ladder` or a script compare alike.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from lmlab.errors import CheckpointError, LmlabError
from lmlab.notebook import Comparison
from lmlab.training.checkpoint.format import read_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val_loss) of every evaluation logged in metrics.jsonl, in order."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {err.start}); corrupted metrics") from None
    points = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise CheckpointError(f"{path}:{n}: not a JSON record") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}:{n}: not a JSON object")
        if "val_loss" in record:
            step, loss = record.get("step"), record["val_loss"]
            if not (isinstance(step, int) and _number(step) and (_number(loss) or loss is None)):
                raise CheckpointError(f"{path}:{n}: step {step!r:.20} or val_loss {loss!r:.20} is not a number")
            if loss is not None:
                points.append((step, float(loss)))
    return points


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """One comparison row for a finished run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    if not (run_dir / "summary.json").is_file():
        raise CheckpointError(f"{run_dir}: no summary.json; the run did not finish (resume it with lmlab train "
                              f"--out {run_dir} --resume)")
    summary = read_json(run_dir / "summary.json", "summary")
    config = read_json(run_dir / "config.json", "config") if (run_dir / "config.json").is_file() else {}
    _check_summary(summary, run_dir / "summary.json")
    nll = {split: summary.get("nll", {}).get(split) for split in SPLITS}
    # A character tokenizer makes one token one character, so bits per token are bits per character.
    held_out = nll["test"] if nll["test"] is not None else nll["val"]
    char_level = config.get("data", {}).get("tokenizer", "char") == "char"
    return {
        "run": str(run_dir),
        "model": str(summary.get("model", config.get("model", {}).get("name", "?"))),
        "parameters": summary.get("parameters"),
        "steps": summary.get("steps"),
        "nll": nll,
        "bits_per_char": held_out / math.log(2) if held_out is not None and char_level else None,
        "tokens_per_s": summary.get("tokens_per_s"),
        "train_seconds": summary.get("train_seconds"),
        "val_curve": val_curve(run_dir),
    }


def _check_summary(summary: Any, path: Path) -> None:
    """CheckpointError unless summary.json holds what `write_summary` writes, with the types the table needs."""
    if not isinstance(summary, dict):
        raise CheckpointError(f"{path}: corrupted summary (not a JSON object)")
    nll = summary.get("nll", {})
    if not isinstance(nll, dict) or not all(_number(nll.get(s)) or nll.get(s) is None for s in SPLITS):
        raise CheckpointError(f"{path}: corrupted summary (nll is not a number per split)")
    for key in ("parameters", "steps", "tokens_per_s", "train_seconds"):
        if not (summary.get(key) is None or _number(summary[key])):
            raise CheckpointError(f"{path}: corrupted summary ({key} is {summary[key]!r:.30}, not a number)")
    if not isinstance(summary.get("model", ""), str):
        raise CheckpointError(f"{path}: corrupted summary (model is not a name)")


def compare_runs(run_dirs: list[str | Path]) -> Comparison:
    """One row per readable run, as a list that shows as a table with the curves in Jupyter. A run that
    cannot be read (unfinished, or a corrupted summary.json, config.json or metrics.jsonl) is left out with a
    warning, so one bad folder does not hide the others; when none can be read, the (first) reason is the
    error."""
    if not run_dirs:
        raise LmlabError("give at least one run directory to compare")
    rows, errors = [], []
    for run_dir in run_dirs:
        try:
            rows.append(summarize_run(run_dir))
        except CheckpointError as err:
            errors.append(err)
    if not rows:
        if len(errors) == 1:
            raise errors[0]
        raise CheckpointError(f"none of the {len(errors)} runs can be compared; the first: {errors[0]}")
    for err in errors:
        log.warning("skipping a run: %s", err)
    return Comparison(rows)


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table; bits/char is from the test split (val when there is no test split)."""
    header = ["run", "model", "params", "train", "val", "test", "bits/char", "tokens/s", "seconds"]
    body = [
        [
            Path(row["run"]).name or row["run"],
            row["model"],
            _cell(row["parameters"], ","),
            *(_cell(row["nll"][s], ".4f") for s in SPLITS),
            _cell(row["bits_per_char"], ".4f"),
            _cell(row["tokens_per_s"], ","),
            _cell(row["train_seconds"], ".1f"),
        ]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False)))
             for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n\nNLL in nats per token; bits/char from the test split.\n"


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"


def _seconds(row: dict[str, Any], step: int) -> float:
    """Training seconds at `step`, from the run's total time spread evenly over its steps (metrics.jsonl
    does not time evaluations)."""
    steps, seconds = row.get("steps") or 0, row.get("train_seconds") or 0.0
    return step / steps * seconds if steps else 0.0


def plot_val_curves(rows: list[dict[str, Any]], path: str | Path, x: str = "step") -> Path:
    """A PNG of validation NLL against step (x="step") or training time (x="time": runs with a time budget
    side by side, where steps would squeeze the slower models to the left), one line per run. A run evaluated
    once (a counted n-gram) is a dashed horizontal line, so the rungs it should be beaten by can be read
    against it."""
    if x not in ("step", "time"):
        raise LmlabError(f"x must be 'step' or 'time', got {x!r}")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(8, 5))  # its own canvas: pyplot's backend (a notebook's inline one) is left alone
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    def at(row: dict[str, Any], step: int) -> float:
        return _seconds(row, step) if x == "time" else step

    last_step = max((at(row, p[0]) for row in rows for p in row["val_curve"]), default=1)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(rows):
        name = Path(row["run"]).name
        label = row["model"] if row["model"] == name else f"{row['model']} ({name})"
        color = colors[i % len(colors)]
        points = row["val_curve"]
        if len(points) == 1:
            ax.axhline(points[0][1], linestyle="--", linewidth=1, color=color, label=label)
        elif points:
            steps, losses = zip(*points, strict=False)
            ax.plot([at(row, st) for st in steps], losses, marker=".", color=color, label=label)
    ax.set_xlim(0, max(last_step, 1e-9 if x == "time" else 1))
    ax.set_xlabel("training time (s)" if x == "time" else "step")
    ax.set_ylabel("validation NLL (nats/token)")
    ax.set_title("validation curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
