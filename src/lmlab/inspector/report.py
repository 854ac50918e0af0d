"""report.html: one self-contained page (PNG plots embedded as base64) built from the inspector's statistics
and findings: findings first, then the thresholds, then the plots (report_plots.py). Also the steps after
training that write findings.json and report.html into the run directory, and `reinspect` for a finished run.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from lmlab.inspector.finding import RULES, Finding
from lmlab.inspector.findings import inspect_findings
from lmlab.inspector.report_plots import (
    gradients_plot,
    histograms_plot,
    loss_plot,
    maps_plots,
    over_time_plot,
    token_labels,
    update_ratio_plot,
)
from lmlab.inspector.stats import STATS_FILE, InspectorStats, load_stats
from lmlab.inspector.thresholds import DEAD_FRACTION, SATURATED_LATER
from lmlab.run.folder import CONFIG_FILE, FINDINGS_FILE, REPORT_FILE, SUMMARY_FILE, TOKENIZER_FILE, RunDir


def _findings_html(findings: list[Finding]) -> str:
    problems = [f for f in findings if f.is_problem]
    notes = [f for f in findings if not f.is_problem]
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
            layer = f" <code>{html.escape(f.layer)}</code>" if f.layer else ""
            since = f" <small>(from step {f.since_step})</small>" if f.since_step is not None else ""
            fix = f"<br><i>Fix:</i> {html.escape(f.fix)}." if f.fix else ""
            rows.append(f'<li class="{html.escape(f.severity)}"><b>{html.escape(f.severity)}</b>{layer}: '
                        f'{html.escape(f.what)}.{since}{fix}</li>')
        items.append("<ul>" + "".join(rows) + "</ul>")
    return "".join(items)


def _thresholds_html() -> str:
    """One row per threshold text: rules that share one (lr_too_high / lr_too_low) share a row."""
    by_text: dict[str, list[str]] = {}
    for registered in RULES.values():
        if registered.threshold:
            by_text.setdefault(registered.threshold, []).append(registered.name)
    rows = "".join(f"<tr><td><code>{html.escape(' / '.join(names))}</code></td><td>{html.escape(text)}</td></tr>"
                   for text, names in by_text.items())
    return f"<table>{rows}</table>"


def render_report(stats: InspectorStats, findings: list[Finding], title: str = "lmlab run",
                  tokenizer: Any = None) -> str:
    sections: list[tuple[str, str | None]] = [
        ("Loss and learning rate", loss_plot(stats)),
        ("Activation histograms per layer", histograms_plot(stats)),
        ("Saturated tanh/sigmoid outputs (|t| > 0.97)", over_time_plot(stats, "saturated", "saturation",
                                                                       "fraction", SATURATED_LATER)),
        ("Dead units (never fired over the window)", over_time_plot(stats, "dead", "dead units", "fraction",
                                                                    DEAD_FRACTION)),
        ("Update:data ratio (should be near 1e-3)", update_ratio_plot(stats)),
        ("Gradients", gradients_plot(stats)),
    ]
    sections += maps_plots(stats.attention_example, "Attention (first example)", per_head=True,
                           tokens=token_labels(stats, tokenizer), length=stats.attention_length)
    sections += maps_plots(stats.feature_maps, "Conv feature maps (first example)", per_head=False)
    init, ln_v = stats.initial_loss, stats.ln_vocab
    steps = stats.steps if stats.steps is not None else "?"
    summary = (f"steps: {steps}, sampled every {stats.every} steps; initial loss {init} (ln V = {ln_v})"
               if init is not None else "")
    records = [r.loss for r in stats.loss if isinstance(r.loss, (int, float)) and math.isfinite(r.loss)]
    base = stats.baselines
    if records and base is not None and base.unigram:
        end = sum(records[-20:]) / len(records[-20:])
        summary += (f"; final training loss {end:.3f} beside the data's baselines: unigram entropy "
                    f"{base.unigram:.3f}, counted bigram {base.bigram:.3f} nats/token")
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


def write_report(run_dir: str | Path, stats: InspectorStats, findings: list[Finding]) -> Path:
    from lmlab.files import atomic_write_text

    path = Path(run_dir) / REPORT_FILE
    tokenizer = None
    if (Path(run_dir) / TOKENIZER_FILE).is_file():
        from lmlab.errors import LmlabError
        from lmlab.tokenizers import load_tokenizer

        try:
            tokenizer = load_tokenizer(Path(run_dir) / TOKENIZER_FILE)
        except (LmlabError, OSError, ValueError):  # the report still works with token ids
            tokenizer = None
    atomic_write_text(path, render_report(stats, findings, title=f"lmlab run {Path(run_dir).name}",
                                          tokenizer=tokenizer))
    return path


def save_findings(path: Path, findings: list[Finding]) -> None:
    import json

    from lmlab.files import atomic_write_text

    atomic_write_text(path, json.dumps([f.to_dict() for f in findings], indent=2) + "\n")


def load_findings(path: Path) -> list[Finding]:
    from lmlab.files import read_json_file

    return [Finding.from_dict(raw) for raw in read_json_file(path, bad="corrupted findings")]


def write_inspection(run_dir: Path, trainer) -> list[Finding] | None:
    """After training: close the inspector's record, write findings.json and report.html. None if no
    inspector was among the trainer's callbacks."""
    from lmlab.inspector.inspector import Inspector

    inspector = next((c for c in trainer.callbacks if isinstance(c, Inspector)), None)
    if inspector is None or not inspector.started:
        return None
    stats = inspector.stats if inspector.stats.steps is not None else inspector.finish(trainer)
    findings = inspect_findings(stats)
    save_findings(Path(run_dir) / FINDINGS_FILE, findings)
    write_report(run_dir, stats, findings)
    return findings


# summary.json's "inspector": whether the inspector watched the training, and if not, who turned it off.
INSPECTOR_ON = "on"
INSPECTOR_OFF_BY_CALLER = "off: inspect=False"  # lmlab train --no-inspect, the ladder, lmlab.train(inspect=False)
INSPECTOR_OFF_FSDP = "off: FSDP"


def why_no_statistics(run_dir: Path) -> str:
    """Why a run folder holds no inspector statistics, from what the run recorded (summary.json's
    "inspector"), for the error `lmlab inspect` gives: a hint that names a cause the run did not have would
    send the user after the wrong fix."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        summary = None
    except (OSError, ValueError):  # unreadable: the hint that fits any run
        summary = {}
    if summary is None:
        if RunDir(run_dir).is_untrained_import():
            return "it is an imported model, not trained here, and the inspector watches training"
        return "the run has not finished: the inspector writes them when training ends"
    state = summary.get("inspector") if isinstance(summary, dict) else None
    if state == INSPECTOR_OFF_FSDP:
        return "the inspector does not watch FSDP training (its statistics would read one rank's shards)"
    if state == INSPECTOR_OFF_BY_CALLER:
        return ("the inspector was turned off for this run (inspect=False: `lmlab train --no-inspect`, and `lmlab "
                "ladder`, which trains every rung without it)")
    if state == INSPECTOR_ON:
        return f"the inspector watched, but {STATS_FILE} has gone since"
    return ("the inspector did not watch this run (`lmlab train --no-inspect` and `lmlab ladder` turn it off; the "
            "run is older than the record of which)")


def reinspect(run_dir: Path, rebuild_report: bool = False) -> list[Finding]:
    """A finished run's findings, recomputed from inspect.json so older runs get today's rules."""
    from lmlab.errors import CheckpointError
    from lmlab.files import not_a_file

    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir}: not an lmlab run directory ({CONFIG_FILE} is "
                              f"{not_a_file(run_dir / CONFIG_FILE)})")
    if not (run_dir / STATS_FILE).is_file():
        raise CheckpointError(f"{run_dir}: no inspector statistics ({STATS_FILE}): {why_no_statistics(run_dir)}")
    try:
        stats = load_stats(run_dir / STATS_FILE)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise CheckpointError(f"{run_dir / STATS_FILE}: corrupted inspector statistics") from None
    findings = inspect_findings(stats)
    if rebuild_report:
        write_report(run_dir, stats, findings)
    return findings
