"""Health findings over the inspector's statistics: every registered rule run, problems ordered by cause,
then the notes. A healthy run gives no errors or warnings (`find_problems`); notes (`find_notes`) put the
numbers in context: the loss beside the data's own baselines, values close to a threshold, what the run's
callbacks did, layers the inspector could not watch.

The rules live in layer_rules.py (activations and gradients through the layers), loss_rules.py (the loss and
what the run did with it), update_rules.py (the optimizer's steps and the parameters) and probe_rules.py (the
one-off probes of the model and the data); each is registered once with `@rule` (finding.py), its thresholds
in thresholds.py. A new rule is one decorated function in one of them (and a threshold constant).
"""

from __future__ import annotations

import statistics

from lmlab.inspector import layer_rules, loss_rules, probe_rules, update_rules  # noqa: F401  (they register)
from lmlab.inspector.finding import RULES, SEVERITY_ORDER, Finding, note_rule
from lmlab.inspector.layer_rules import dead_trend, dead_units, saturation
from lmlab.inspector.rule_helpers import end_loss, finite, names_text, update_ratios
from lmlab.inspector.stats import InspectorStats
from lmlab.inspector.thresholds import (
    BASELINE_MARGIN,
    DEAD_FRACTION,
    NEAR,
    SATURATED_AT_INIT,
    SATURATED_LATER,
    UPDATE_HIGH,
    UPDATE_LOW,
)
from lmlab.inspector.update_rules import lr_too_high, lr_too_low

BASELINES = note_rule("baselines")
UPDATE_RATIO = note_rule("update_ratio")
UNWATCHED = note_rule("unwatched")
NOTHING_TO_INSPECT = note_rule("nothing_to_inspect")


def _sort_key(finding: Finding) -> tuple[int, int, int]:
    since = finding.since_step
    rule = RULES.get(finding.rule)
    return (SEVERITY_ORDER.get(finding.severity, 3), since if isinstance(since, int) else 0,
            rule.priority if rule is not None else 10)


def _by_cause(found: list[Finding]) -> list[Finding]:
    """Findings ordered by severity, then when they appeared, causes first; a finding another one explains
    is worded as its consequence and listed right after its cause."""
    ranked = sorted(found, key=_sort_key)
    after: dict[int, list[Finding]] = {}
    explained: set[int] = set()
    for i, cause in enumerate(ranked):
        for j, consequence in enumerate(ranked):
            how = RULES[cause.rule].explains.get(consequence.rule) if cause.rule in RULES else None
            if how is None or j in explained or i == j or i in explained:
                continue
            worded = how(cause, consequence)
            if worded is not None:
                explained.add(j)
                after.setdefault(i, []).append(worded)
    out = []
    for i, finding in enumerate(ranked):
        if i not in explained:
            out.append(finding)
            out += after.get(i, [])
    return out


def find_problems(stats: InspectorStats) -> list[Finding]:
    """Every rule's errors and warnings, ordered by severity, then by when they appeared, causes first."""
    return _by_cause([f for rule in RULES.values() for f in rule(stats) if f.is_problem])


def _baseline_note(stats: InspectorStats) -> list[Finding]:
    end, base, ln_v = end_loss(stats), stats.baselines, stats.ln_vocab
    if end is None or base is None or not base.unigram:
        return []
    unigram, bigram = base.unigram, base.bigram
    if end < bigram - 0.01:
        verdict = f"{bigram - end:.3f} below the counted bigram: the model uses more than one token of context"
    elif end < unigram * (1 - BASELINE_MARGIN):
        verdict = ("between the two: better than token frequencies, not yet as good as a counted bigram table "
                   "(train longer, or a larger learning rate)")
    elif ln_v and end > ln_v + 0.05:
        verdict = "above even the uniform distribution's ln V"
    else:
        verdict = "no better than token frequencies alone"
    return [BASELINES.finding(
        "note", None,
        f"training loss at the end {end:.3f} nats/token; the data's own baselines: uniform ln V = "
        f"{ln_v if ln_v else float('nan'):.3f}, unigram entropy {unigram:.3f}, counted bigram {bigram:.3f} "
        f"(from {base.tokens:,} training tokens): {verdict}",
        {"loss_end": round(end, 4), "ln_vocab": ln_v, "unigram": unigram, "bigram": bigram})]


def _near_notes(stats: InspectorStats, problems: set[tuple[str, str | None]]) -> list[Finding]:
    """Values close to a threshold (but on the healthy side): worth a look, not an alarm."""
    out = []
    flagged_layers = {layer for _, layer in problems}
    for name, layer in stats.layers.items():
        sat = finite(layer.saturated)
        if sat and name not in flagged_layers and (saturation.name, name) not in problems:
            end = statistics.fmean(sat[-3:])
            if sat[0] > NEAR * SATURATED_AT_INIT and sat[0] <= SATURATED_AT_INIT:
                out.append(saturation.finding("note", name, f"{sat[0]:.0%} of this {layer.kind} layer's "
                                              f"outputs are saturated at the start, close to the "
                                              f"{SATURATED_AT_INIT:.0%} threshold",
                                              {"saturated_start": sat[0], "threshold": SATURATED_AT_INIT}))
            elif end > NEAR * SATURATED_LATER and end <= SATURATED_LATER:
                out.append(saturation.finding("note", name, f"{end:.0%} of this {layer.kind} layer's "
                                              f"outputs are saturated at the end, close to the "
                                              f"{SATURATED_LATER:.0%} threshold",
                                              {"saturated_end": end, "threshold": SATURATED_LATER}))
        dead = finite(layer.dead)
        if dead and (dead_units.name, name) not in problems and not any(r == dead_units.name for r, _ in problems):
            _, _, early, late = dead_trend(dead)
            if early >= DEAD_FRACTION and late < DEAD_FRACTION:
                out.append(dead_units.finding("note", name, f"{early:.0%} of this {layer.kind} layer's "
                                              f"units were dead in the early samples, {late:.0%} at the end: it "
                                              "recovered",
                                              {"dead_early": early, "dead_late": late, "threshold": DEAD_FRACTION}))
            elif late > NEAR * DEAD_FRACTION:
                out.append(dead_units.finding("note", name, f"{late:.0%} of this {layer.kind} layer's "
                                              f"units are dead at the end, close to the {DEAD_FRACTION:.0%} "
                                              "threshold", {"dead_late": late, "threshold": DEAD_FRACTION}))
    ratios = update_ratios(stats)
    if ratios and not any(r in (lr_too_high.name, lr_too_low.name) for r, _ in problems):
        typical = statistics.median(ratios.values())
        if typical > UPDATE_HIGH - 0.5 or typical < UPDATE_LOW + 0.5:
            out.append(UPDATE_RATIO.finding("note", None, f"the median update:data ratio is 10^{typical:.1f}, "
                                            f"close to the warning thresholds (10^{UPDATE_HIGH:g} and "
                                            f"10^{UPDATE_LOW:g}; about 10^-3 trains well)",
                                            {"log10_update_data": round(typical, 2)}))
    return out


def _nothing_to_inspect(stats: InspectorStats) -> list[Finding]:
    why = ("a counted model is fitted in one pass over the data, with no gradient steps and no layers to "
           "watch" if stats.counted else "the run took no training steps")
    what = (f"nothing to inspect for a {'counted' if stats.counted else 'run without steps'} model: {why}")
    numbers = {}
    base = stats.baselines
    if base is not None and base.bigram:
        what += (f"; the data's baselines: unigram entropy {base.unigram:.3f}, counted bigram "
                 f"{base.bigram:.3f} nats/token")
        numbers = {"unigram": base.unigram, "bigram": base.bigram, "tokens": base.tokens}
    return [NOTHING_TO_INSPECT.finding("note", None, what, numbers)]


def _unwatched_note(stats: InspectorStats) -> list[Finding]:
    if not stats.unwatched:
        return []
    by_reason: dict[str, list[str]] = {}
    for name, reason in stats.unwatched.items():
        by_reason.setdefault(reason, []).append(name)
    parts = [f"{names_text(names)} ({reason})" for reason, names in by_reason.items()]
    functional = any("as a function" in reason for reason in by_reason)
    return [UNWATCHED.finding(
        "note", None, "the inspector could not watch inside: " + "; ".join(parts) + " (their outputs are still "
        "watched)", {"layers": dict(stats.unwatched)},
        "use activation modules (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh) instead of F.relu/F.silu so their "
        "statistics show" if functional else "")]


def find_notes(stats: InspectorStats) -> list[Finding]:
    """What is worth knowing but not a problem: nothing to inspect, the loss beside the data's baselines,
    values close to a threshold, parameters that get no update, layers the inspector could not watch, and
    the rules' own notes (what the run's callbacks did, where the layers sit against the 1e-3 band)."""
    if stats.counted or (not stats.loss and not stats.layers):
        return _nothing_to_inspect(stats)
    found = [f for rule in RULES.values() for f in rule(stats)]
    problems = {(f.rule, f.layer) for f in found if f.is_problem}
    notes = _baseline_note(stats)
    notes += [f for f in found if not f.is_problem]
    notes += _near_notes(stats, problems)
    notes += _unwatched_note(stats)
    return notes


def inspect_findings(stats: InspectorStats) -> list[Finding]:
    """Problems first (by cause, severity and when they appeared), then the notes: what findings.json holds."""
    return find_problems(stats) + find_notes(stats)
