"""Health findings over the inspector's statistics: every rule run in order, problems sorted, notes.
Each finding is a record in plain words:
{"severity": "error" | "warning" | "note", "rule", "layer", "what", "numbers", "fix", "since_step"}.
A healthy run gives no errors or warnings (`find_problems`); notes (`find_notes`) put the numbers in context:
the loss beside the data's own baselines, values close to a threshold, layers the inspector could not watch.

The rules live in layer_rules.py (activations and gradients through the layers) and loss_rules.py (the loss,
the learning rate, the parameters); their thresholds in thresholds.py.
"""

from __future__ import annotations

import statistics
from typing import Any

from lmlab.inspector.layer_rules import _dead_trend, activation_growth, dead_units, depth_gradients, saturation
from lmlab.inspector.loss_rules import (
    _update_ratios,
    causality,
    frozen_parameters,
    initial_loss,
    learning_rate,
    nonfinite,
    overfitting,
    stuck,
)
from lmlab.inspector.rule_helpers import (
    _end_loss,
    _finding,
    _finite,
    _names_text,
)
from lmlab.inspector.thresholds import (
    BASELINE_MARGIN,
    DEAD_FRACTION,
    NEAR,
    PRIORITY,
    SATURATED_AT_INIT,
    SATURATED_LATER,
    SEVERITY_ORDER,
    UPDATE_HIGH,
    UPDATE_LOW,
)

RULES = (causality, nonfinite, activation_growth, frozen_parameters, initial_loss, learning_rate, stuck,
         saturation, dead_units, depth_gradients, overfitting)


def _sort_key(finding: dict[str, Any]) -> tuple[int, int, int]:
    since = finding.get("since_step")
    return (SEVERITY_ORDER.get(finding["severity"], 3), since if isinstance(since, int) else 0,
            PRIORITY.get(finding["rule"], 10))


def _root_causes(found: list[dict[str, Any]]) -> None:
    """An exploding forward pass makes the first loss huge: say so on the consequence, so the user fixes the
    cause (listed before it) rather than the output layer."""
    growth = [f for f in found if f["rule"] == "activation_growth" and "grow with depth" in f["what"]]
    for f in found:
        if growth and f["rule"] == "initial_loss":
            f["what"] = (f"initial loss {f['numbers']['initial_loss']:.2f} is far above ln V = "
                         f"{f['numbers']['ln_vocab']:.2f} because the activations grow with depth "
                         f"({growth[0]['layer']} onwards, above): the huge logits are a consequence, not the cause")
            f["fix"] = "fix the initialisation of the growing layers first; then the first loss comes down by itself"


def find_problems(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule's errors and warnings, ordered by severity, then by when they appeared, causes first."""
    found = [f for rule in RULES for f in rule(stats) if f["severity"] != "note"]
    _root_causes(found)
    return sorted(found, key=_sort_key)


def _baseline_note(stats: dict[str, Any]) -> list[dict[str, Any]]:
    end, base, ln_v = _end_loss(stats), stats.get("baselines") or {}, stats.get("ln_vocab")
    if end is None or not base.get("unigram"):
        return []
    unigram, bigram = base["unigram"], base["bigram"]
    if end < bigram - 0.01:
        verdict = f"{bigram - end:.3f} below the counted bigram: the model uses more than one token of context"
    elif end < unigram * (1 - BASELINE_MARGIN):
        verdict = ("between the two: better than token frequencies, not yet as good as a counted bigram table "
                   "(train longer, or a larger learning rate)")
    elif ln_v and end > ln_v + 0.05:
        verdict = "above even the uniform distribution's ln V"
    else:
        verdict = "no better than token frequencies alone"
    return [_finding(
        "note", "baselines", None,
        f"training loss at the end {end:.3f} nats/token; the data's own baselines: uniform ln V = "
        f"{ln_v if ln_v else float('nan'):.3f}, unigram entropy {unigram:.3f}, counted bigram {bigram:.3f} "
        f"(from {base.get('tokens', 0):,} training tokens): {verdict}",
        {"loss_end": round(end, 4), "ln_vocab": ln_v, "unigram": unigram, "bigram": bigram}, "")]


def _near_notes(stats: dict[str, Any], problems: set[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """Values close to a threshold (but on the healthy side): worth a look, not an alarm."""
    out = []
    flagged_layers = {layer for _, layer in problems}
    for name, layer in stats["layers"].items():
        sat = _finite(layer.get("saturated", []))
        if sat and name not in flagged_layers and ("saturation", name) not in problems:
            end = statistics.fmean(sat[-3:])
            if sat[0] > NEAR * SATURATED_AT_INIT and sat[0] <= SATURATED_AT_INIT:
                out.append(_finding("note", "saturation", name, f"{sat[0]:.0%} of this {layer['kind']} layer's "
                                    f"outputs are saturated at the start, close to the {SATURATED_AT_INIT:.0%} "
                                    "threshold", {"saturated_start": sat[0], "threshold": SATURATED_AT_INIT}, ""))
            elif end > NEAR * SATURATED_LATER and end <= SATURATED_LATER:
                out.append(_finding("note", "saturation", name, f"{end:.0%} of this {layer['kind']} layer's "
                                    f"outputs are saturated at the end, close to the {SATURATED_LATER:.0%} "
                                    "threshold", {"saturated_end": end, "threshold": SATURATED_LATER}, ""))
        dead = _finite(layer.get("dead", []))
        if dead and ("dead_units", name) not in problems and not any(r == "dead_units" for r, _ in problems):
            start, end, early, late = _dead_trend(dead)
            if early >= DEAD_FRACTION and late < DEAD_FRACTION:
                out.append(_finding("note", "dead_units", name, f"{early:.0%} of this {layer['kind']} layer's "
                                    f"units were dead in the early samples, {late:.0%} at the end: it recovered",
                                    {"dead_early": early, "dead_late": late, "threshold": DEAD_FRACTION}, ""))
            elif late > NEAR * DEAD_FRACTION:
                out.append(_finding("note", "dead_units", name, f"{late:.0%} of this {layer['kind']} layer's "
                                    f"units are dead at the end, close to the {DEAD_FRACTION:.0%} threshold",
                                    {"dead_late": late, "threshold": DEAD_FRACTION}, ""))
    ratios = _update_ratios(stats)
    if ratios and not any(r in ("lr_too_high", "lr_too_low") for r, _ in problems):
        typical = statistics.median(ratios.values())
        if typical > UPDATE_HIGH - 0.5 or typical < UPDATE_LOW + 0.5:
            out.append(_finding("note", "update_ratio", None, f"the median update:data ratio is 10^{typical:.1f}, "
                                f"close to the warning thresholds (10^{UPDATE_HIGH:g} and 10^{UPDATE_LOW:g}; "
                                "about 10^-3 trains well)", {"log10_update_data": round(typical, 2)}, ""))
    return out


def find_notes(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """What is worth knowing but not a problem: nothing to inspect, the loss beside the data's baselines,
    values close to a threshold, parameters that get no update, layers the inspector could not watch."""
    if stats.get("counted") or (not stats.get("loss") and not stats.get("layers")):
        why = ("a counted model is fitted in one pass over the data, with no gradient steps and no layers to "
               "watch" if stats.get("counted") else "the run took no training steps")
        notes = [_finding("note", "nothing_to_inspect", None,
                          f"nothing to inspect for a {'counted' if stats.get('counted') else 'run without steps'} "
                          f"model: {why}", {}, "")]
        base = stats.get("baselines") or {}
        if base.get("bigram"):
            notes[0]["what"] += (f"; the data's baselines: unigram entropy {base['unigram']:.3f}, counted bigram "
                                 f"{base['bigram']:.3f} nats/token")
            notes[0]["numbers"] = dict(base)
        return notes
    problems = {(f["rule"], f["layer"]) for rule in RULES for f in rule(stats) if f["severity"] != "note"}
    notes = _baseline_note(stats)
    notes += [f for f in frozen_parameters(stats) if f["severity"] == "note"]
    notes += _near_notes(stats, problems)
    unwatched = stats.get("unwatched") or {}
    if unwatched:
        by_reason: dict[str, list[str]] = {}
        for name, reason in unwatched.items():
            by_reason.setdefault(reason, []).append(name)
        parts = [f"{_names_text(names)} ({reason})" for reason, names in by_reason.items()]
        functional = any("as a function" in reason for reason in by_reason)
        notes.append(_finding("note", "unwatched", None, "the inspector could not watch inside: " + "; ".join(parts)
                              + " (their outputs are still watched)", {"layers": unwatched},
                              "use activation modules (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh) instead of F.relu/F.silu "
                              "so their statistics show" if functional else ""))
    return notes


def inspect_findings(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Problems first (by severity, then when they appeared), then the notes: what findings.json holds."""
    return find_problems(stats) + find_notes(stats)


def is_problem(finding: dict[str, Any]) -> bool:
    return finding.get("severity") in ("error", "warning")


def format_finding(finding: dict[str, Any]) -> str:
    where = f" {finding['layer']}:" if finding.get("layer") else ""
    text = f"[{finding['severity']}]{where} {finding['what']}."
    return text + (f"\n    fix: {finding['fix']}." if finding.get("fix") else "")
