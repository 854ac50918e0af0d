"""report.html: one self-contained page (PNG plots embedded as base64) built from the inspector's statistics
and findings: findings first, then the thresholds, then the plots (report_plots.py). Also the steps after
training that write findings.json and report.html into the run directory, and `reinspect` for a finished run.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from lmlab.inspector.report_plots import (
    _gradients,
    _histograms,
    _loss_plot,
    _maps,
    _over_time,
    _token_labels,
    _update_ratio,
)
from lmlab.inspector.thresholds import DEAD_FRACTION, SATURATED_LATER, THRESHOLDS

REPORT_FILE = "report.html"


def _findings_html(findings: list[dict[str, Any]]) -> str:
    problems = [f for f in findings if f["severity"] != "note"]
    notes = [f for f in findings if f["severity"] == "note"]
    items = []
    if not problems:
        items.append('<p class="ok">No problems found: every check passed (thresholds below).</p>')
    else:
        items.append('<p>Fix the first one first: the list runs from the most severe and earliest to the least.</p>')
    for group in (problems, notes):
        if not group:
            continue
        rows = []
        for f in group:
            layer = f" <code>{html.escape(f['layer'])}</code>" if f.get("layer") else ""
            since = f" <small>(from step {f['since_step']})</small>" if f.get("since_step") is not None else ""
            fix = f"<br><i>Fix:</i> {html.escape(f['fix'])}." if f.get("fix") else ""
            rows.append(f'<li class="{html.escape(f["severity"])}"><b>{html.escape(f["severity"])}</b>{layer}: '
                        f'{html.escape(f["what"])}.{since}{fix}</li>')
        items.append("<ul>" + "".join(rows) + "</ul>")
    return "".join(items)


def _thresholds_html() -> str:
    rows = "".join(f"<tr><td><code>{html.escape(rule)}</code></td><td>{html.escape(text)}</td></tr>"
                   for rule, text in THRESHOLDS)
    return f"<table>{rows}</table>"


def render_report(stats: dict[str, Any], findings: list[dict[str, Any]], title: str = "lmlab run",
                  tokenizer: Any = None) -> str:
    sections: list[tuple[str, str | None]] = [
        ("Loss and learning rate", _loss_plot(stats)),
        ("Activation histograms per layer", _histograms(stats)),
        ("Saturated tanh/sigmoid outputs (|t| > 0.97)", _over_time(stats, "saturated", "saturation", "fraction",
                                                                   SATURATED_LATER)),
        ("Dead units (never fired over the window)", _over_time(stats, "dead", "dead units", "fraction",
                                                                DEAD_FRACTION)),
        ("Update:data ratio (should be near 1e-3)", _update_ratio(stats)),
        ("Gradients", _gradients(stats)),
    ]
    sections += _maps(stats.get("attention_example", {}), "Attention (first example)", per_head=True,
                      tokens=_token_labels(stats, tokenizer))
    sections += _maps(stats.get("feature_maps", {}), "Conv feature maps (first example)", per_head=False)
    init = stats.get("initial_loss")
    ln_v = stats.get("ln_vocab")
    summary = (f"steps: {stats.get('steps', '?')}, sampled every {stats.get('every')} steps; initial loss "
               f"{init} (ln V = {ln_v})" if init is not None else "")
    records = [r[1] for r in stats.get("loss", []) if isinstance(r[1], (int, float)) and math.isfinite(r[1])]
    base = stats.get("baselines") or {}
    if records and base.get("unigram"):
        end = sum(records[-20:]) / len(records[-20:])
        summary += (f"; final training loss {end:.3f} beside the data's baselines: unigram entropy "
                    f"{base['unigram']:.3f}, counted bigram {base['bigram']:.3f} nats/token")
    body = "".join(f"<h2>{html.escape(name)}</h2><img alt=\"{html.escape(name)}\" src=\"data:image/png;base64,{png}\">"
                   for name, png in sections if png)
    style = ("body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em}"
             "li{margin:.4em 0}li.error{color:#a00}li.warning{color:#a60}li.note{color:#444}.ok{color:#070}"
             "img{max-width:100%}table{border-collapse:collapse;font-size:90%}td{border:1px solid #ccc;"
             "padding:.2em .5em}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"
            f"<h2>Findings</h2>{_findings_html(findings)}<h2>Thresholds</h2>{_thresholds_html()}{body}"
            "</body></html>\n")


def write_report(run_dir: str | Path, stats: dict[str, Any], findings: list[dict[str, Any]]) -> Path:
    from lmlab.files import atomic_write_text

    path = Path(run_dir) / REPORT_FILE
    tokenizer = None
    if (Path(run_dir) / "tokenizer.json").is_file():
        from lmlab.errors import LmlabError
        from lmlab.tokenizers import load_tokenizer

        try:
            tokenizer = load_tokenizer(Path(run_dir) / "tokenizer.json")
        except (LmlabError, OSError, ValueError):  # the report still works with token ids
            tokenizer = None
    atomic_write_text(path, render_report(stats, findings, title=f"lmlab run {Path(run_dir).name}",
                                          tokenizer=tokenizer))
    return path


def write_inspection(run_dir: Path, trainer) -> list[dict[str, Any]] | None:
    """After training: close the inspector's record, write findings.json and report.html. None if no
    inspector was among the trainer's callbacks."""
    import json

    from lmlab.files import atomic_write_text
    from lmlab.inspector import FINDINGS_FILE, Inspector
    from lmlab.inspector.findings import inspect_findings

    inspector = next((c for c in trainer.callbacks if isinstance(c, Inspector)), None)
    if inspector is None or not inspector.stats:
        return None
    stats = inspector.stats if "steps" in inspector.stats else inspector.finish(trainer)
    findings = inspect_findings(stats)
    atomic_write_text(Path(run_dir) / FINDINGS_FILE, json.dumps(findings, indent=2) + "\n")
    write_report(run_dir, stats, findings)
    return findings


def reinspect(run_dir: Path, rebuild_report: bool = False) -> list[dict[str, Any]]:
    """A finished run's findings, recomputed from inspect.json so older runs get today's rules."""
    from lmlab.errors import CheckpointError
    from lmlab.inspector import STATS_FILE, load_stats
    from lmlab.inspector.findings import inspect_findings

    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir}: not an lmlab run directory (config.json is missing)")
    if not (run_dir / STATS_FILE).is_file():
        raise CheckpointError(f"{run_dir}: no inspector statistics ({STATS_FILE}); was it trained with --no-inspect?")
    try:
        stats = load_stats(run_dir / STATS_FILE)
    except ValueError:
        raise CheckpointError(f"{run_dir / STATS_FILE}: corrupted inspector statistics") from None
    findings = inspect_findings(stats)
    if rebuild_report:
        write_report(run_dir, stats, findings)
    return findings
