"""Health rules over the inspector's statistics. Each finding is a record in plain words:
{"severity": "error" | "warning" | "note", "rule", "layer", "what", "numbers", "fix", "since_step"}.
A healthy run gives no errors or warnings (`find_problems`); notes (`find_notes`) put the numbers in context:
the loss beside the data's own baselines, values close to a threshold, layers the inspector could not watch.

Thresholds come from Karpathy's lecture 3 (makemore part 3, see REFERENCES.md): healthy tanh layers are
1.7-2.8 % saturated (|t| > 0.97), the update:data ratio sits near 1e-3 (log10 = -3), a well-initialised
27-way model starts at ln 27 = 3.30. Each threshold is set well away from those healthy figures, so a
warning means something is clearly off, not merely unusual. Rules that follow a layer over time judge the
early samples and the late samples separately (a fault at the start is not averaged away by what follows),
and say when it appeared. One finding per cause: the layers of one stack are grouped into one finding.
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Any

INIT_LOSS_MARGIN = 0.5  # nats (or 15 % of ln V if larger) above ln V at step 0: over-confident logits
# Lecture 3's Kaiming-initialised stack: the first tanh layer (fed by the unit-variance embedding) is ~20 %
# saturated, deeper ones 1.7-2.8 %; without the fix most outputs sit at +-1. Trained layers drift upwards.
SATURATED_AT_INIT = 0.30
SATURATED_LATER = 0.50
DEAD_FRACTION = 0.10  # units that never fired over the window
UPDATE_HIGH = -1.0  # log10 update:data; 100x above the 1e-3 rule of thumb
UPDATE_LOW = -5.0  # 100x below it (a cosine decay alone ends ~10x below the peak)
UPDATE_TARGET = -3.0  # what a good learning rate gives (lecture 3)
DEPTH_RATIO = 100.0  # activation-gradient std between the first and last layer of a repeated stack
GROWTH_RATIO = 100.0  # activation std between the first and last layer of a repeated stack, at the start
GRAD_SPIKE = 50.0  # a gradient norm this many times the run's median
OVERFIT_GAP = 0.05  # nats of train/val gap gained since the best validation loss
STUCK_FRACTION = 0.02  # final loss within 2 % of ln V either way: the model still predicts the uniform distribution
BASELINE_MARGIN = 0.01  # a flat final loss within 1 % of the unigram entropy learned only token frequencies
FROZEN_SHARE = 0.5  # at least half the parameters never updated
NEAR = 0.8  # a value past this share of its threshold is shown as a note

# For the report: what each rule compares against, in words.
THRESHOLDS: list[tuple[str, str]] = [
    ("initial_loss", f"loss at step 0 above ln V + max({INIT_LOSS_MARGIN}, 15 % of ln V)"),
    ("saturation", f"tanh/sigmoid |t| > 0.97 in > {SATURATED_AT_INIT:.0%} of outputs at the start or "
                   f"> {SATURATED_LATER:.0%} late (healthy: a few %)"),
    ("dead_units", f"> {DEAD_FRACTION:.0%} of ReLU/GELU units never fire over 3 samples, early or late"),
    ("lr_too_high / lr_too_low", f"median log10 update:data above {UPDATE_HIGH:g} or below {UPDATE_LOW:g} "
                                 f"(good: about {UPDATE_TARGET:g}); or the loss ends above its start"),
    ("vanishing / exploding gradients", f"gradient std differs > {DEPTH_RATIO:g}x between the first and last "
                                        "layer of a stack, early or late"),
    ("activation_growth", f"activation std differs > {GROWTH_RATIO:g}x between the first and last layer of a "
                          "stack at the start"),
    ("frozen_parameters", f">= {FROZEN_SHARE:.0%} of the parameters never updated"),
    ("not_learning", f"the final loss within {STUCK_FRACTION:.0%} of ln V, or flat within "
                     f"{BASELINE_MARGIN:.0%} of the unigram entropy"),
    ("exploding_gradients (norm)", f"a gradient norm > {GRAD_SPIKE:g}x the run's median"),
    ("overfitting", f"validation loss rising while the train/val gap grew by > {OVERFIT_GAP} nats"),
]

SEVERITY_ORDER = {"error": 0, "warning": 1, "note": 2}
# Among findings of one severity that appeared at the same step, causes before consequences.
PRIORITY = {"causality_leak": 0, "nan": 1, "activation_growth": 2, "frozen_parameters": 3,
            "vanishing_gradients": 4, "exploding_gradients": 4, "lr_too_high": 5, "lr_too_low": 5,
            "dead_units": 6, "saturation": 6, "initial_loss": 7, "not_learning": 8, "overfitting": 9}


def _finding(severity: str, rule: str, layer: str | None, what: str, numbers: dict[str, Any], fix: str,
             since: int | None = None):
    return {"severity": severity, "rule": rule, "layer": layer, "what": what, "numbers": numbers, "fix": fix,
            "since_step": since}


def _finite(values: list[Any]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _tail_mean(values: list[float], fraction: float = 0.1, least: int = 5) -> float:
    n = max(least, int(len(values) * fraction))
    return statistics.fmean(values[-n:])


def times(x: float) -> str:
    """A factor people can read: 4.2x, 370x, 3.7e10x."""
    if not math.isfinite(x):
        return "infinitely"
    if x < 10:
        return f"{x:.1f}x"
    if x < 1e4:
        return f"{x:.0f}x"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}x"


def lr_text(lr: float) -> str:
    """A learning rate as a user types it: 3e-3, 1e-6, 0.1, 1, 10."""
    if 0.01 <= lr < 1000:
        return f"{lr:.2g}"
    mantissa, exponent = f"{lr:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _round_lr(lr: float) -> float:
    return float(f"{lr:.0e}")


def _power_of_ten(factor: float) -> str:
    return f"10^{round(math.log10(factor))}" if factor >= 1000 else times(factor).removesuffix("x")


def _names_text(names: list[str], most: int = 3, noun: str = "layers") -> str:
    """A list of layer names, shortened: 'a, b, c' or 'a ... z (14 layers)'."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{names[0]} ... {names[-1]} ({len(names)} {noun})"


def _window(values: list[Any], early: bool) -> list[Any]:
    k = max(1, len(values) // 3)
    return values[:k] if early else values[-k:]


def _pattern(name: str) -> str:
    return re.sub(r"\d+", "#", name)


def _stacks(stats: dict[str, Any], key: str, kinds: tuple[str, ...]) -> dict[tuple[str, str], list[str]]:
    """Repeated layers (same kind, same name up to the numbers) with statistic `key`, in forward order."""
    order = stats.get("order") or list(stats["layers"])
    groups: dict[tuple[str, str], list[str]] = {}
    for name in order:
        layer = stats["layers"].get(name, {})
        if layer.get("kind") in kinds and layer.get(key):
            groups.setdefault((layer["kind"], _pattern(name)), []).append(name)
    return {k: v for k, v in groups.items() if len(v) >= 3}  # two layers can differ for many reasons


def _losses(stats: dict[str, Any]) -> list[float]:
    return [r[1] for r in stats.get("loss", [])]


def _current_lr(stats: dict[str, Any]) -> float | None:
    if stats.get("lr"):
        return stats["lr"]
    rates = _finite([r[2] for r in stats.get("loss", [])])
    return max(rates) if rates else None


# ----------------------------------------------------------------------------------------------------------
# The rules: each takes the statistics and returns a list of findings


def initial_loss(stats: dict[str, Any]) -> list[dict[str, Any]]:
    loss, ln_v, vocab = stats.get("initial_loss"), stats.get("ln_vocab"), stats.get("vocab_size")
    if loss is None or not ln_v or not math.isfinite(loss):
        return []
    margin = max(INIT_LOSS_MARGIN, 0.15 * ln_v)
    if loss <= ln_v + margin:
        return []
    return [_finding(
        "warning", "initial_loss", None,
        f"initial loss {loss:.2f} is far above ln {vocab} = {ln_v:.2f}: the output layer is too confident at "
        "initialisation, so the first steps are spent squashing the logits instead of learning",
        {"initial_loss": loss, "ln_vocab": ln_v, "threshold": round(ln_v + margin, 4)},
        "scale the output layer's weights down (x0.01-0.1) or zero its bias, so the first logits are nearly equal",
        since=0,
    )]


def activation_growth(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The forward pass at the first sample: activations that grow (or die out) layer by layer."""
    worst: dict[str, tuple[float, dict[str, Any]]] = {}
    for (kind, pattern), names in _stacks(stats, "std", ("linear", "conv", "relu", "gelu", "other")).items():
        first, last = stats["layers"][names[0]]["std"][0], stats["layers"][names[-1]]["std"][0]
        if not (isinstance(first, (int, float)) and isinstance(last, (int, float))) or first <= 0 or last <= 0:
            continue
        if not (math.isfinite(first) and math.isfinite(last)):
            continue
        ratio = last / first
        if max(ratio, 1 / ratio) <= GROWTH_RATIO:
            continue
        step = stats["layers"][names[0]]["step"][0]
        grows = ratio > 1
        what = (f"activations {'grow' if grows else 'shrink'} with depth: the {kind} outputs' std goes from "
                f"{first:.3g} at {names[0]} to {last:.3g} at {names[-1]} ({times(max(ratio, 1 / ratio))} "
                f"{'larger' if grows else 'smaller'}) at step {step}, "
                + ("so the logits and the first loss are huge and the gradients explode" if grows else
                   "so the signal dies out before the output and the gradients vanish"))
        finding = _finding(
            "warning", "activation_growth", names[0], what,
            {"first_layer": names[0], "last_layer": names[-1], "std_first": first, "std_last": last,
             "layers": len(names), "threshold": GROWTH_RATIO},
            "initialise each layer so it keeps the variance (Kaiming: std = gain/sqrt(fan_in)), or add "
            "normalisation (BatchNorm/LayerNorm) or residual connections", since=step)
        size = abs(math.log(ratio))
        if pattern not in worst or size > worst[pattern][0]:
            worst[pattern] = (size, finding)
    return [f for _, f in worst.values()]


def saturation(stats: dict[str, Any]) -> list[dict[str, Any]]:
    flagged: dict[str, list[tuple[str, float, str, int]]] = {}
    total: dict[str, int] = {}
    for name, layer in stats["layers"].items():
        sat = _finite(layer.get("saturated", []))
        if not sat:
            continue
        total[layer["kind"]] = total.get(layer["kind"], 0) + 1
        steps = layer.get("step", [])
        start, end = sat[0], statistics.fmean(sat[-3:])
        if start > SATURATED_AT_INIT:
            flagged.setdefault(layer["kind"], []).append((name, start, "at the start", steps[0] if steps else 0))
        elif end > SATURATED_LATER and len(sat) > 1:
            since = next((s for s, v in zip(steps, sat, strict=False) if v > SATURATED_LATER), None)
            flagged.setdefault(layer["kind"], []).append((name, end, "by the end of training", since))
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
                    f"{_names_text(names)}; the worst, {name}, {value:.0%} {when}. Saturated units pass almost "
                    "no gradient, so they barely learn")
        start = _finite(stats["layers"][name].get("saturated", []))
        out.append(_finding(
            "warning", "saturation", names[0], what,
            {"saturated_start": start[0], "saturated_end": statistics.fmean(start[-3:]), "worst_layer": name,
             "layers": names, "threshold": SATURATED_AT_INIT if at_init else SATURATED_LATER}, fix,
            since=min((s for *_, s in layers if s is not None), default=None),
        ))
    return out


def _dead_trend(dead: list[float]) -> tuple[float, float, float, float]:
    early, late = statistics.median(_window(dead, True)), statistics.median(_window(dead, False))
    return dead[0], dead[-1], early, late


def dead_units(stats: dict[str, Any]) -> list[dict[str, Any]]:
    flagged: dict[str, list[tuple[str, list[float], int | None]]] = {}
    total: dict[str, int] = {}
    for name, layer in stats["layers"].items():
        dead = _finite(layer.get("dead", []))
        if not dead:
            continue
        total[layer["kind"]] = total.get(layer["kind"], 0) + 1
        _, _, early, late = _dead_trend(dead)
        if late >= DEAD_FRACTION:  # dead at the end (a recovered layer is only a note)
            since = next((s for s, v in zip(layer.get("step", []), dead, strict=False) if v >= DEAD_FRACTION), None)
            flagged.setdefault(layer["kind"], []).append((name, dead, since))
    out = []
    for kind, layers in flagged.items():
        name, dead, since = max(layers, key=lambda x: _dead_trend(x[1])[3])
        start, end, early, late = _dead_trend(dead)
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
                    f"(never fired over the window): {_names_text(names)}; in the worst, {name}, the dead share "
                    f"{trend}")
        out.append(_finding(
            "error" if everything else "warning", "dead_units", names[0], what,
            {"dead_fraction": dead[-1], "dead_start": start, "dead_end": end, "dead_early": early,
             "dead_late": late, "worst_layer": name, "layers": names, "threshold": DEAD_FRACTION},
            "check the biases and init scale feeding this layer (a large negative bias kills ReLUs), lower the "
            "learning rate, or use LeakyReLU/GELU", since=since,
        ))
    return out


def _update_ratios(stats: dict[str, Any]) -> dict[str, float]:
    """Median log10 update:data ratio of each weight matrix (biases and gains are left out, as in lecture 3)."""
    ratios = {}
    for name, p in stats["params"].items():
        values = _finite(p.get("update_data", []))
        if len(p.get("shape", [])) >= 2 and values:
            ratios[name] = statistics.median(values)
    return ratios


def _lower_lr(stats: dict[str, Any], ratio: float | None) -> tuple[float | None, str]:
    """The rate to try instead of a too-high one, and why: the model's default when the run is above it,
    otherwise the rate that brings the measured update:data ratio to 1e-3."""
    lr, default = _current_lr(stats), stats.get("default_lr")
    if lr is None:
        return None, ""
    if default and default < lr:
        return default, f"the model's default; {lr_text(lr)} is {times(lr / default)} it"
    if ratio is not None and ratio > UPDATE_TARGET:
        return _round_lr(lr * 10 ** (UPDATE_TARGET - ratio)), "where the update:data ratio would be about 1e-3"
    return _round_lr(lr / 10), "10x lower"


def learning_rate(stats: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    losses = _losses(stats)
    finite = _finite(losses)
    lr = _current_lr(stats)
    now = f" (now {lr_text(lr)})" if lr else ""
    ratios = _update_ratios(stats)
    typical = statistics.median(ratios.values()) if ratios else None
    if len(finite) >= 20 and len(finite) == len(losses):
        start, end = finite[0], _tail_mean(finite)  # start: the loss at initialisation
        windows = [statistics.fmean(finite[i : i + 5]) for i in range(len(finite) - 4)]
        best = min(start, *windows)
        if end > 1.1 * start + 0.05 or end > 2 * best + 0.1:  # worse than at init, or twice its best
            best_at = stats["loss"][windows.index(min(windows))][0] if best < start else 0
            suggestion, why = _lower_lr(stats, typical)
            toward = f" toward {lr_text(suggestion)} ({why})" if suggestion else ""
            out.append(_finding(
                "error", "lr_too_high", None,
                f"the loss is diverging: it went from {start:.3f} at the start (best {best:.3f}) to {end:.3f} at "
                "the end",
                {"loss_start": round(start, 4), "loss_best": round(best, 4), "loss_end": round(end, 4), "lr": lr,
                 "suggested_lr": suggestion},
                f"lower train.lr{now}{toward}, or add warm-up; `lmlab lr-find` measures a good rate", since=best_at,
            ))
    if typical is None or lr is None:
        return out
    numbers = {"log10_update_data": round(typical, 2), "per_layer": {k: round(v, 2) for k, v in ratios.items()},
               "lr": lr, "threshold": UPDATE_HIGH if typical > UPDATE_TARGET else UPDATE_LOW}
    if typical > UPDATE_HIGH and not out:
        suggestion, why = _lower_lr(stats, typical)
        numbers["suggested_lr"] = suggestion
        out.append(_finding(
            "warning", "lr_too_high", None,
            f"each step changes the weights by 10^{typical:.1f} of their size; the rule of thumb is about 1e-3 "
            f"(10^-3), so the learning rate looks {times(10 ** (typical - UPDATE_TARGET))} too high",
            numbers, f"lower train.lr{now} toward {lr_text(suggestion)} ({why}); `lmlab lr-find` measures a good "
            "rate", since=0,
        ))
    elif typical < UPDATE_LOW:
        factor = 10 ** (UPDATE_TARGET - typical)
        suggestion = _round_lr(lr * factor)
        default = stats.get("default_lr")
        also = f" (the model's default is {lr_text(default)})" if default and default > lr else ""
        numbers["suggested_lr"] = suggestion
        out.append(_finding(
            "warning", "lr_too_low", None,
            f"each step changes the weights by only 10^{typical:.1f} of their size, far below the ~1e-3 "
            "(10^-3) that trains well: the learning rate looks much too low",
            numbers, f"raise train.lr{now} by about {_power_of_ten(factor)}, to about {lr_text(suggestion)}{also}; "
            "or check that the optimizer updates these parameters; `lmlab lr-find` measures a good rate", since=0,
        ))
    return out


def _depth_ratios(stats: dict[str, Any], first: str, last: str) -> list[float | None]:
    """last/first gradient std per sample: inf when nothing reaches the first layer any more."""
    out: list[float | None] = []
    for f, g in zip(stats["layers"][first]["grad_std"], stats["layers"][last]["grad_std"], strict=False):
        if not (isinstance(f, (int, float)) and isinstance(g, (int, float))) or not (math.isfinite(f) and
                                                                                    math.isfinite(g)) or g <= 0:
            out.append(None)
        else:
            out.append(g / f if f > 0 else math.inf)
    return out


def depth_gradients(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Repeated layers compared first against last in forward order, on the early samples and the late ones
    separately, so a fault at the start is not hidden by what happens after (e.g. the units dying)."""
    worst: dict[str, tuple[float, dict[str, Any]]] = {}
    kinds = ("linear", "conv", "tanh", "sigmoid", "relu", "gelu")
    for (kind, pattern), names in _stacks(stats, "grad_std", kinds).items():
        ratios = _depth_ratios(stats, names[0], names[-1])
        steps = stats["layers"][names[0]].get("step", [])
        judged = []
        for early in (True, False):
            values = [r for r in _window(ratios, early) if r is not None]
            if values:
                judged.append((early, statistics.median(values)))
        bad = [(early, r) for early, r in judged if max(r, 1 / r if r > 0 else math.inf) > DEPTH_RATIO]
        if not bad:
            continue
        early, ratio = max(bad, key=lambda x: abs(math.log(x[1])) if 0 < x[1] < math.inf else math.inf)
        since = next((s for s, r in zip(steps, ratios, strict=False)
                      if r is not None and max(r, 1 / r if r > 0 else math.inf) > DEPTH_RATIO), None)
        window = _window(list(range(len(ratios))), early)
        g_first = statistics.median(_finite([stats["layers"][names[0]]["grad_std"][i] for i in window]) or [0.0])
        g_last = statistics.median(_finite([stats["layers"][names[-1]]["grad_std"][i] for i in window]) or [0.0])
        other = [r for e, r in judged if e != early]
        when = "in the early samples" if early else "in the late samples"
        if other:
            when += f" ({times(max(other[0], 1 / other[0]) if 0 < other[0] < math.inf else math.inf)} "
            when += f"{'late' if early else 'early'})"
        numbers = {"first_layer": names[0], "last_layer": names[-1], "grad_std_first": g_first,
                   "grad_std_last": g_last, "window": "early" if early else "late", "layers": len(names),
                   "threshold": DEPTH_RATIO}
        if ratio > 1:
            gap = f"no gradient at all reaches {names[0]}" if math.isinf(ratio) else f"{times(ratio)} smaller"
            finding = _finding(
                "warning", "vanishing_gradients", names[0],
                f"gradients vanish with depth: the {kind} outputs' gradient std falls from {g_last:.2g} at "
                f"{names[-1]} to {g_first:.2g} at {names[0]} ({gap}) {when}, from step {since}, so early layers "
                "barely learn", numbers,
                "use Kaiming init with the right gain, add normalisation (BatchNorm/LayerNorm) or residual "
                "connections", since=since)
        else:
            finding = _finding(
                "warning", "exploding_gradients", names[0],
                f"gradients grow with depth: the {kind} outputs' gradient std rises from {g_last:.2g} at "
                f"{names[-1]} to {g_first:.2g} at {names[0]} ({times(1 / ratio)} larger) {when}, from step {since}",
                numbers, "reduce the init scale of the weights, add normalisation, or clip gradients", since=since)
        size = abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf
        if pattern not in worst or size > worst[pattern][0]:  # one finding per stack, not per layer kind
            worst[pattern] = (size, finding)
    return [f for _, f in worst.values()]


def nonfinite(stats: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    skipped = stats.get("nonfinite_steps", 0)
    losses = _losses(stats)
    bad_loss = [r[0] for r in stats.get("loss", []) if not math.isfinite(r[1])]
    lr = _current_lr(stats)
    suggestion, why = _lower_lr(stats, None)
    lower = (f"lower train.lr (now {lr_text(lr)}) toward {lr_text(suggestion)} ({why})" if lr and suggestion
             else "lower the learning rate")
    if skipped or bad_loss:
        first_layer = next((n for n in stats.get("order") or stats["layers"]
                            if not all(math.isfinite(v) for v in stats["layers"].get(n, {}).get("std", []))), None)
        where = f"; the first layer with non-finite activations is {first_layer}" if first_layer else ""
        out.append(_finding(
            "error", "nan", first_layer,
            f"the loss or the gradients became NaN/inf ({skipped} step(s) skipped){where}: training is exploding",
            {"nonfinite_steps": skipped, "first_bad_step": bad_loss[0] if bad_loss else None, "lr": lr},
            f"{lower}, keep gradient clipping on (train.grad_clip=1.0), check the init scale; `lmlab lr-find` "
            "measures a good rate", since=bad_loss[0] if bad_loss else None,
        ))
    records = stats.get("loss", [])[max(5, len(losses) // 20):]
    norms = _finite([r[3] for r in records])
    if len(norms) >= 20:
        median = statistics.median(norms)
        peak = max(norms)
        if median > 0 and peak > GRAD_SPIKE * median:
            at = next(r[0] for r in records if r[3] == peak)
            out.append(_finding(
                "warning", "exploding_gradients", None,
                f"the gradient norm spiked to {peak:.3g} at step {at}, {times(peak / median)} its median of "
                f"{median:.3g}",
                {"grad_norm_max": peak, "grad_norm_median": median, "threshold": GRAD_SPIKE},
                f"keep gradient clipping on (train.grad_clip), {lower}, or add warm-up; `lmlab lr-find` measures a "
                "good rate", since=at,
            ))
    return out


def _end_loss(stats: dict[str, Any]) -> float | None:
    losses = _finite(_losses(stats))
    return _tail_mean(losses) if losses else None


def stuck(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Not learning: still at the uniform distribution (ln V), or flat at what token frequencies alone give."""
    losses, ln_v = _finite(_losses(stats)), stats.get("ln_vocab")
    if not ln_v or len(losses) < 50:
        return []
    end = _tail_mean(losses)
    base = stats.get("baselines") or {}
    numbers = {"loss_end": round(end, 4), "ln_vocab": ln_v, "unigram": base.get("unigram"),
               "bigram": base.get("bigram")}
    lr = _current_lr(stats)
    fix = (f"raise the learning rate{f' (now {lr_text(lr)})' if lr else ''}, check that labels line up with inputs "
           "and that gradients reach the weights (requires_grad, the optimizer's parameter list)")
    if abs(end - ln_v) <= max(STUCK_FRACTION * ln_v, 0.05):  # far above is diverging, another rule's business
        return [_finding(
            "warning", "not_learning", None,
            f"the loss ends at {end:.3f}, still at ln {stats['vocab_size']} = {ln_v:.3f}: the model predicts the "
            "uniform distribution and is not learning", numbers | {"threshold": "ln V"}, fix, since=0)]
    unigram = base.get("unigram")
    if not unigram:
        return []
    middle = statistics.fmean(losses[len(losses) // 2 : 3 * len(losses) // 4])
    still_falling = middle - end > 0.02 * unigram
    if end >= unigram * (1 - BASELINE_MARGIN) and end < ln_v and not still_falling:
        return [_finding(
            "warning", "not_learning", None,
            f"the loss flattened at {end:.3f}, no better than token frequencies alone (the training split's "
            f"unigram entropy is {unigram:.3f}, a counted bigram reaches {base.get('bigram', float('nan')):.3f}): "
            "the model learned which tokens are common and nothing about their context",
            numbers | {"threshold": round(unigram * (1 - BASELINE_MARGIN), 4)}, fix, since=0)]
    return []


def frozen_parameters(stats: dict[str, Any]) -> list[dict[str, Any]]:
    total = stats.get("param_count") or 0
    if not total or stats.get("counted"):
        return []
    frozen = dict(stats.get("frozen", {}))
    untrained: dict[str, int] = {}
    for name, p in stats["params"].items():
        numel = math.prod(p.get("shape", [])) if p.get("shape") else 1
        zero_grad = all(v == 0 for v in p.get("grad_std", []) + p.get("grad_mean", []))
        never_moved = "moved" in p and not p["moved"]
        if (p.get("no_grad") and not p.get("grad_std")) or zero_grad or never_moved:
            untrained[name] = numel
    idle = sum(frozen.values()) + sum(untrained.values())
    if not idle:
        return []
    share = idle / total
    parts = []
    if frozen:
        names = _names_text(list(frozen), noun="tensors")
        parts.append(f"{sum(frozen.values()):,} frozen (requires_grad=False: {names})")
    if untrained:
        parts.append(f"{sum(untrained.values()):,} trainable but never changed (no or zero gradient, or not in "
                     f"the optimizer: {_names_text(list(untrained), noun='tensors')})")
    end, base = _end_loss(stats), stats.get("baselines") or {}
    trivial = ""
    if end is not None and base.get("unigram") and end >= base["unigram"] * (1 - BASELINE_MARGIN):
        trivial = (f"; the loss only reached {end:.3f}, what token frequencies alone give (unigram entropy "
                   f"{base['unigram']:.3f})")
    numbers = {"share": round(share, 4), "no_update": idle, "total": total, "frozen": list(frozen),
               "untrained": list(untrained), "threshold": FROZEN_SHARE}
    what = f"{share:.0%} of the parameters ({idle:,} of {total:,}) receive no update: {'; '.join(parts)}{trivial}"
    fix = ("if that is not on purpose, set requires_grad=True and pass them to the optimizer; a parameter with a "
           "zero gradient is not used in forward, sits behind a detach() or dead units")
    severity = "warning" if share >= FROZEN_SHARE else "note"
    return [_finding(severity, "frozen_parameters", None, what, numbers, fix, since=0)]


def overfitting(stats: dict[str, Any]) -> list[dict[str, Any]]:
    val = [(s, v) for s, v in stats.get("val", []) if math.isfinite(v)]
    records = stats.get("loss", [])
    if len(val) < 3 or not records:
        return []

    def train_at(step: int) -> float:
        near = [r[1] for r in records if r[0] <= step][-20:]
        return statistics.fmean(near) if near else float("nan")

    best_step, best = min(val, key=lambda sv: sv[1])
    last_step, last = val[-1]
    gap_best, gap_end = best - train_at(best_step), last - train_at(last_step)
    if last_step == best_step or last < best + max(0.01, 0.005 * best) or gap_end < gap_best + OVERFIT_GAP:
        return []
    return [_finding(
        "warning", "overfitting", None,
        f"validation loss rose from its best {best:.3f} (step {best_step}) to {last:.3f} while the train/val gap "
        f"grew from {gap_best:.3f} to {gap_end:.3f}: the model is memorising the training set",
        {"val_best": best, "val_best_step": best_step, "val_end": last, "gap_best": round(gap_best, 4),
         "gap_end": round(gap_end, 4)},
        "stop earlier (--early-stopping), add dropout or weight decay, use a smaller model or more data",
    )]


def causality(stats: dict[str, Any]) -> list[dict[str, Any]]:
    probe = stats.get("causality", {})
    if not probe.get("leak"):
        return []
    return [_finding(
        "error", "causality_leak", None,
        f"changing the token at position {probe['position']} changed the logits of earlier positions (by up to "
        f"{probe['max_change']:.3g}): the model sees the future, so its training loss is a lie and it cannot generate",
        {"max_change": probe["max_change"], "position": probe["position"]},
        "check the causal mask (lower-triangular), any shift of input_ids, and that no layer mixes positions "
        "(e.g. normalising over time)",
    )]


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
                              "use activation modules (nn.ReLU, nn.GELU, nn.Tanh) instead of F.relu/torch.tanh "
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
