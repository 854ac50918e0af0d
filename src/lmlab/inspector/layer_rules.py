"""Health rules that look at the layers: activations growing with depth, saturated tanh/sigmoid
outputs, dead ReLU units, and gradients vanishing or exploding through a stack. Rules that follow a layer over
time judge the early samples and the late samples separately (a fault at the start is not averaged away by what
follows), and say when it appeared. One finding per cause: the layers of one stack are grouped into one finding.
"""

from __future__ import annotations

import math
import statistics

from lmlab.inspector.finding import Finding, rule
from lmlab.inspector.loss_rules import gradient_norm_spike, initial_loss
from lmlab.inspector.rule_helpers import finite, names_text, stacks, times, window
from lmlab.inspector.stats import InspectorStats, compact
from lmlab.inspector.thresholds import (
    DEAD_FRACTION,
    DEPTH_RATIO,
    GRAD_SPIKE,
    GROWTH_RATIO,
    SATURATED_AT_INIT,
    SATURATED_LATER,
    VANISHED,
)


def _initial_loss_from_growth(growth: Finding, first_loss: Finding) -> Finding | None:
    """An exploding forward pass makes the first loss huge: say so on the consequence, so the user fixes the
    cause (listed before it) rather than the output layer."""
    if growth.numbers["std_last"] <= growth.numbers["std_first"]:  # shrinking activations make small logits
        return None
    return first_loss.reworded(
        what=f"initial loss {first_loss.numbers['initial_loss']:.2f} is far above ln V = "
             f"{first_loss.numbers['ln_vocab']:.2f} because the activations grow with depth ({growth.layer} "
             "onwards, above): the huge logits are a consequence, not the cause",
        fix="fix the initialisation of the growing layers first; then the first loss comes down by itself")


@rule(priority=2, threshold=f"activation std differs > {GROWTH_RATIO:g}x between the first and last layer of a "
                            "stack at the start", explains={initial_loss: _initial_loss_from_growth})
def activation_growth(stats: InspectorStats) -> list[Finding]:
    """The forward pass at the first sample: activations that grow (or die out) layer by layer."""
    worst: dict[str, tuple[float, Finding]] = {}
    for (kind, pattern), names in stacks(stats, "std", ("linear", "conv", "relu", "gelu", "other")).items():
        first, last = stats.layers[names[0]].std[0], stats.layers[names[-1]].std[0]
        if not (isinstance(first, (int, float)) and isinstance(last, (int, float))) or first <= 0 or last <= 0:
            continue
        if not (math.isfinite(first) and math.isfinite(last)):
            continue
        ratio = last / first
        if max(ratio, 1 / ratio) <= GROWTH_RATIO:
            continue
        step = stats.layers[names[0]].step[0]
        grows = ratio > 1
        what = (f"activations {'grow' if grows else 'shrink'} with depth: the {kind} outputs' std goes from "
                f"{first:.3g} at {names[0]} to {last:.3g} at {names[-1]} ({times(max(ratio, 1 / ratio))} "
                f"{'larger' if grows else 'smaller'}) at step {step}, "
                + ("so the logits and the first loss are huge and the gradients explode" if grows else
                   "so the signal dies out before the output and the gradients vanish"))
        finding = activation_growth.finding(
            "warning", names[0], what,
            {"first_layer": names[0], "last_layer": names[-1], "std_first": first, "std_last": last,
             "layers": len(names), "threshold": GROWTH_RATIO},
            "initialise each layer so it keeps the variance (Kaiming: std = gain/sqrt(fan_in)), or add "
            "normalisation (BatchNorm/LayerNorm) or residual connections", since=step)
        size = abs(math.log(ratio))
        if pattern not in worst or size > worst[pattern][0]:
            worst[pattern] = (size, finding)
    return [f for _, f in worst.values()]


@rule(priority=6, threshold=f"tanh/sigmoid |t| > 0.97 in > {SATURATED_AT_INIT:.0%} of outputs at the start or "
                            f"> {SATURATED_LATER:.0%} late (healthy: a few %)")
def saturation(stats: InspectorStats) -> list[Finding]:
    flagged: dict[str, list[tuple[str, float, str, int]]] = {}
    total: dict[str, int] = {}
    for name, layer in stats.layers.items():
        sat = finite(layer.saturated)
        if not sat:
            continue
        total[layer.kind] = total.get(layer.kind, 0) + 1
        steps = layer.step
        start, end = sat[0], statistics.fmean(sat[-3:])
        if start > SATURATED_AT_INIT:
            flagged.setdefault(layer.kind, []).append((name, start, "at the start", steps[0] if steps else 0))
        elif end > SATURATED_LATER and len(sat) > 1:
            since = next((s for s, v in zip(steps, sat, strict=False) if v > SATURATED_LATER), None)
            flagged.setdefault(layer.kind, []).append((name, end, "by the end of training", since))
    out = []
    for kind, layers in flagged.items():
        name, value, when, since = max(layers, key=lambda x: x[1])
        at_init = any(w == "at the start" for _, _, w, _ in layers)
        fix = ("shrink the weights feeding it (Kaiming init: std = gain/sqrt(fan_in), gain 5/3 for tanh) or put a "
               "BatchNorm/LayerNorm before it" if at_init else
               "put a BatchNorm/LayerNorm before it, lower the learning rate, or add weight decay")
        names = [n for n, *_ in layers]
        if len(layers) == 1:
            what = (f"{value:.0%} of this {kind} layer's outputs are saturated (|t| > 0.97) {when}; a healthy "
                    "layer has a few percent. Saturated units pass almost no gradient, so they barely learn")
        else:
            what = (f"{len(layers)} of {total[kind]} {kind} layers are saturated (|t| > 0.97 in more than "
                    f"{SATURATED_AT_INIT:.0%} of outputs at the start or {SATURATED_LATER:.0%} later): "
                    f"{names_text(names)}; the worst, {name}, {value:.0%} {when}. Saturated units pass almost "
                    "no gradient, so they barely learn")
        start = finite(stats.layers[name].saturated)
        out.append(saturation.finding(
            "warning", names[0], what,
            {"saturated_start": start[0], "saturated_end": statistics.fmean(start[-3:]), "worst_layer": name,
             "layers": names, "threshold": SATURATED_AT_INIT if at_init else SATURATED_LATER}, fix,
            since=min((s for *_, s in layers if s is not None), default=None),
        ))
    return out


def dead_trend(dead: list[float]) -> tuple[float, float, float, float]:
    early, late = statistics.median(window(dead, True)), statistics.median(window(dead, False))
    return dead[0], dead[-1], early, late


@rule(priority=6, threshold=f"> {DEAD_FRACTION:.0%} of ReLU/GELU units never fire over 3 samples, early or late")
def dead_units(stats: InspectorStats) -> list[Finding]:
    flagged: dict[str, list[tuple[str, list[float], int | None]]] = {}
    total: dict[str, int] = {}
    for name, layer in stats.layers.items():
        dead = finite(layer.dead)
        if not dead:
            continue
        total[layer.kind] = total.get(layer.kind, 0) + 1
        _, _, early, late = dead_trend(dead)
        if late >= DEAD_FRACTION:  # dead at the end (a recovered layer is only a note)
            since = next((s for s, v in zip(layer.step, dead, strict=False) if v >= DEAD_FRACTION), None)
            flagged.setdefault(layer.kind, []).append((name, dead, since))
    out = []
    for kind, layers in flagged.items():
        name, dead, since = max(layers, key=lambda x: dead_trend(x[1])[3])
        start, end, early, late = dead_trend(dead)
        everything = late >= 0.99
        if end < start - 0.05:
            trend = (f"fell from {start:.0%} to {end:.0%} over the run: some units came back, but "
                     f"{end:.0%} still output 0 for every input")
        elif end > start + 0.05:
            trend = (f"rose from {start:.0%} to {end:.0%} over the run: units are dying as it trains (large "
                     "updates push ReLUs' inputs negative for good)")
        else:
            trend = (f"stayed at {end:.0%} from the start to the end: they output 0 for every input, get no "
                     "gradient and do not recover by themselves")
        names = [n for n, *_ in layers]
        if len(layers) == 1:
            what = f"units of this {kind} layer that never fired over the window {trend}"
        else:
            what = (f"{len(layers)} of {total[kind]} {kind} layers have more than {DEAD_FRACTION:.0%} dead units "
                    f"(never fired over the window): {names_text(names)}; in the worst, {name}, the dead share "
                    f"{trend}")
        out.append(dead_units.finding(
            "error" if everything else "warning", names[0], what,
            {"dead_fraction": dead[-1], "dead_start": start, "dead_end": end, "dead_early": early,
             "dead_late": late, "worst_layer": name, "layers": names, "threshold": DEAD_FRACTION},
            "check the biases and init scale feeding this layer (a large negative bias kills ReLUs), lower the "
            "learning rate, or use LeakyReLU/GELU", since=since,
        ))
    return out


def _depth_ratios(stats: InspectorStats, first: str, last: str) -> list[float | None]:
    """last/first gradient std per sample: inf when nothing reaches the first layer any more."""
    out: list[float | None] = []
    for f, g in zip(stats.layers[first].grad_std, stats.layers[last].grad_std, strict=False):
        if not (isinstance(f, (int, float)) and isinstance(g, (int, float))) or not (math.isfinite(f) and
                                                                                    math.isfinite(g)) or g <= 0:
            out.append(None)
        else:
            out.append(g / f if f > 0 else math.inf)
    return out


def depth_gradients(stats: InspectorStats) -> list[Finding]:
    """Repeated layers compared first against last in forward order, on the early samples and the late ones
    separately, so a fault at the start is not hidden by what happens after (e.g. the units dying). One
    finding per stack: vanishing or exploding, whichever is worse."""
    worst: dict[str, tuple[float, Finding]] = {}
    kinds = ("linear", "conv", "tanh", "sigmoid", "relu", "gelu")
    for (kind, pattern), names in stacks(stats, "grad_std", kinds).items():
        ratios = _depth_ratios(stats, names[0], names[-1])
        steps = stats.layers[names[0]].step
        judged = []
        for early in (True, False):
            values = [r for r in window(ratios, early) if r is not None]
            if values:
                judged.append((early, statistics.median(values)))
        bad = [(early, r) for early, r in judged if max(r, 1 / r if r > 0 else math.inf) > DEPTH_RATIO]
        if not bad:
            continue
        # Cause before symptom: what the stack does from the start is what training on it then makes worse
        early, ratio = bad[0]
        since = next((s for s, r in zip(steps, ratios, strict=False)
                      if r is not None and max(r, 1 / r if r > 0 else math.inf) > DEPTH_RATIO), None)
        picked = window(list(range(len(ratios))), early)
        g_first = statistics.median(finite([stats.layers[names[0]].grad_std[i] for i in picked]) or [0.0])
        g_last = statistics.median(finite([stats.layers[names[-1]].grad_std[i] for i in picked]) or [0.0])
        other = [r for e, r in judged if e != early]
        when = "in the early samples" if early else "in the late samples"
        if other:
            when += f" ({times(max(other[0], 1 / other[0]) if 0 < other[0] < math.inf else math.inf)} "
            when += f"{'late' if early else 'early'})"
        numbers = {"first_layer": names[0], "last_layer": names[-1], "grad_std_first": g_first,
                   "grad_std_last": g_last, "window": "early" if early else "late", "layers": len(names),
                   "threshold": DEPTH_RATIO}
        # A ratio says which end is larger, not whether either is large: gradients tiny everywhere (per token
        # of the batch, as the mean loss divides them by its size) vanish whichever way they slope
        per_token = max(g_first, g_last) * (stats.batch_tokens or 1)
        tiny = bool(stats.batch_tokens) and per_token < VANISHED
        numbers["grad_per_token_max"] = compact(per_token)
        if ratio > 1 or tiny:
            gap = f"no gradient at all reaches {names[0]}" if math.isinf(ratio) else f"{times(max(ratio, 1 / ratio))} "
            gap += "" if math.isinf(ratio) else ("smaller" if ratio > 1 else "larger, yet tiny everywhere")
            finding = Finding(
                "warning", vanishing_gradients.name, names[0],
                f"gradients vanish through the stack: the {kind} outputs' gradient std is {g_last:.2g} at "
                f"{names[-1]} and {g_first:.2g} at {names[0]} ({gap}) {when}, from step {since}, so the layers "
                "barely learn: each layer passes on a smaller signal than it gets, and nothing carries it past them",
                numbers, "add residual connections (x = x + layer(x)) so the signal and its gradient skip each layer, "
                "and normalisation (LayerNorm/BatchNorm) before the layers; or Kaiming init with the right gain",
                since_step=since)
        else:
            finding = Finding(
                "warning", exploding_gradients.name, names[0],
                f"gradients grow with depth: the {kind} outputs' gradient std rises from {g_last:.2g} at "
                f"{names[-1]} to {g_first:.2g} at {names[0]} ({times(1 / ratio)} larger) {when}, from step {since}",
                numbers, "reduce the init scale of the weights, add normalisation, or clip gradients", since_step=since)
        size = abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf
        if pattern not in worst or size > worst[pattern][0]:  # one finding per stack, not per layer kind
            worst[pattern] = (size, finding)
    return [f for _, f in worst.values()]


_DEPTH_THRESHOLD = (f"gradient std differs > {DEPTH_RATIO:g}x between the first and last layer of a stack, early "
                    "or late")


@rule(priority=4, threshold=_DEPTH_THRESHOLD)
def vanishing_gradients(stats: InspectorStats) -> list[Finding]:
    return [f for f in depth_gradients(stats) if f.rule == vanishing_gradients.name]


@rule(priority=4, threshold=f"{_DEPTH_THRESHOLD}; or a gradient norm > {GRAD_SPIKE:g}x the run's median")
def exploding_gradients(stats: InspectorStats) -> list[Finding]:
    spike = gradient_norm_spike(stats, exploding_gradients.name)
    return [f for f in depth_gradients(stats) if f.rule == exploding_gradients.name] + ([spike] if spike else [])
