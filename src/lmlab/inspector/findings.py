"""Health rules over the inspector's statistics. Each finding is a record in plain words:
{"severity": "error" | "warning", "rule", "layer", "what", "numbers", "fix"}. A healthy run gives none.

Thresholds come from Karpathy's lecture 3 (makemore part 3, see REFERENCES.md): healthy tanh layers are
1.7-2.8 % saturated (|t| > 0.97), the update:data ratio sits near 1e-3 (log10 = -3), a well-initialised
27-way model starts at ln 27 = 3.30. Each threshold is set well away from those healthy figures, so a
warning means something is clearly off, not merely unusual.
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
DEPTH_RATIO = 100.0  # activation-gradient std between the first and last layer of a repeated stack
GRAD_SPIKE = 50.0  # a gradient norm this many times the run's median
OVERFIT_GAP = 0.05  # nats of train/val gap gained since the best validation loss
STUCK_FRACTION = 0.02  # final loss within 2 % of ln V either way: the model still predicts the uniform distribution


def _finding(severity: str, rule: str, layer: str | None, what: str, numbers: dict[str, Any], fix: str):
    return {"severity": severity, "rule": rule, "layer": layer, "what": what, "numbers": numbers, "fix": fix}


def _finite(values: list[Any]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _tail_mean(values: list[float], fraction: float = 0.1, least: int = 5) -> float:
    n = max(least, int(len(values) * fraction))
    return statistics.fmean(values[-n:])


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
        {"initial_loss": loss, "ln_vocab": ln_v},
        "scale the output layer's weights down (x0.01-0.1) or zero its bias, so the first logits are nearly equal",
    )]


def saturation(stats: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, layer in stats["layers"].items():
        sat = _finite(layer.get("saturated", []))
        if not sat:
            continue
        start, end = sat[0], statistics.fmean(sat[-3:])
        if start > SATURATED_AT_INIT:
            when, value = "at initialisation", start
            fix = ("shrink the weights feeding it (Kaiming init: std = gain/sqrt(fan_in), gain 5/3 for tanh) or put "
                   "a BatchNorm/LayerNorm before it")
        elif end > SATURATED_LATER and len(sat) > 1:
            when, value = "by the end of training", end
            fix = "put a BatchNorm/LayerNorm before it, lower the learning rate, or add weight decay"
        else:
            continue
        out.append(_finding(
            "warning", "saturation", name,
            f"{value:.0%} of this {layer['kind']} layer's outputs are saturated (|t| > 0.97) {when}; a healthy "
            "layer has a few percent. Saturated units pass almost no gradient, so they barely learn",
            {"saturated_start": start, "saturated_end": end, "threshold": SATURATED_AT_INIT}, fix,
        ))
    return out


def dead_units(stats: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, layer in stats["layers"].items():
        dead = _finite(layer.get("dead", []))
        if not dead or dead[-1] < DEAD_FRACTION:
            continue
        everything = dead[-1] >= 0.99
        out.append(_finding(
            "error" if everything else "warning", "dead_units", name,
            f"{dead[-1]:.0%} of this {layer['kind']} layer's units never fired over the last samples: they output "
            "0 for every input, get no gradient and will never recover",
            {"dead_fraction": dead[-1], "threshold": DEAD_FRACTION},
            "check the biases and init scale feeding this layer (a large negative bias kills ReLUs), lower the "
            "learning rate, or use LeakyReLU/GELU",
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


def _losses(stats: dict[str, Any]) -> list[float]:
    return [r[1] for r in stats.get("loss", [])]


def learning_rate(stats: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    losses = _losses(stats)
    finite = _finite(losses)
    if len(finite) >= 20 and len(finite) == len(losses):
        start, end = finite[0], _tail_mean(finite)  # start: the loss at initialisation
        best = min(start, *(statistics.fmean(finite[i : i + 5]) for i in range(len(finite) - 4)))
        if end > 1.1 * start + 0.05 or end > 2 * best + 0.1:  # worse than at init, or twice its best
            out.append(_finding(
                "error", "lr_too_high", None,
                f"the loss is diverging: it went from {start:.3f} at the start (best {best:.3f}) to {end:.3f} at "
                "the end",
                {"loss_start": round(start, 4), "loss_best": round(best, 4), "loss_end": round(end, 4)},
                "lower the learning rate (try 3-10x lower, or run `lmlab lr-find`), or add warm-up",
            ))
    ratios = _update_ratios(stats)
    if ratios:
        typical = statistics.median(ratios.values())
        numbers = {"log10_update_data": round(typical, 2), "per_layer": {k: round(v, 2) for k, v in ratios.items()}}
        if typical > UPDATE_HIGH and not out:
            out.append(_finding(
                "warning", "lr_too_high", None,
                f"each step changes the weights by 10^{typical:.1f} of their size; the rule of thumb is about 1e-3 "
                "(10^-3), so the learning rate looks much too high",
                numbers, "lower the learning rate by about 10x (or run `lmlab lr-find`)",
            ))
        elif typical < UPDATE_LOW:
            out.append(_finding(
                "warning", "lr_too_low", None,
                f"each step changes the weights by only 10^{typical:.1f} of their size, far below the ~1e-3 "
                "(10^-3) that trains well: the learning rate looks much too low",
                numbers, "raise the learning rate by 10-100x (or run `lmlab lr-find`)",
            ))
    return out


def depth_gradients(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Repeated layers (same kind, same name up to the numbers) compared first against last, in forward order."""
    order = stats.get("order") or list(stats["layers"])
    groups: dict[tuple[str, str], list[str]] = {}
    for name in order:
        layer = stats["layers"].get(name, {})
        if layer.get("kind") in ("linear", "conv", "tanh", "sigmoid", "relu", "gelu") and layer.get("grad_std"):
            groups.setdefault((layer["kind"], re.sub(r"\d+", "#", name)), []).append(name)
    out = []
    for (kind, _), names in groups.items():
        if len(names) < 3:  # two layers can differ for many reasons; a trend needs a stack
            continue
        first = statistics.median(_finite(stats["layers"][names[0]]["grad_std"]) or [0.0])
        last = statistics.median(_finite(stats["layers"][names[-1]]["grad_std"]) or [0.0])
        if first <= 0 or last <= 0:
            continue
        numbers = {"first_layer": names[0], "last_layer": names[-1], "grad_std_first": first, "grad_std_last": last}
        if last / first > DEPTH_RATIO:
            out.append(_finding(
                "warning", "vanishing_gradients", names[0],
                f"gradients vanish with depth: the {kind} outputs' gradient std falls from {last:.2g} at "
                f"{names[-1]} to {first:.2g} at {names[0]} ({last / first:.0f}x smaller), so early layers barely learn",
                numbers, "use Kaiming init with the right gain, add normalisation (BatchNorm/LayerNorm) or "
                "residual connections",
            ))
        elif first / last > DEPTH_RATIO:
            out.append(_finding(
                "warning", "exploding_gradients", names[0],
                f"gradients grow with depth: the {kind} outputs' gradient std rises from {last:.2g} at "
                f"{names[-1]} to {first:.2g} at {names[0]} ({first / last:.0f}x larger)",
                numbers, "reduce the init scale of the weights, add normalisation, or clip gradients",
            ))
    return out


def nonfinite(stats: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    skipped = stats.get("nonfinite_steps", 0)
    losses = _losses(stats)
    bad_loss = [r[0] for r in stats.get("loss", []) if not math.isfinite(r[1])]
    if skipped or bad_loss:
        first_layer = next((n for n in stats.get("order") or stats["layers"]
                            if not all(math.isfinite(v) for v in stats["layers"].get(n, {}).get("std", []))), None)
        where = f"; the first layer with non-finite activations is {first_layer}" if first_layer else ""
        out.append(_finding(
            "error", "nan", first_layer,
            f"the loss or the gradients became NaN/inf ({skipped} step(s) skipped){where}: training is exploding",
            {"nonfinite_steps": skipped, "first_bad_step": bad_loss[0] if bad_loss else None},
            "lower the learning rate, keep gradient clipping on (train.grad_clip=1.0), check the init scale",
        ))
    norms = _finite([r[3] for r in stats.get("loss", [])[max(5, len(losses) // 20):]])
    if len(norms) >= 20:
        median = statistics.median(norms)
        peak = max(norms)
        if median > 0 and peak > GRAD_SPIKE * median:
            out.append(_finding(
                "warning", "exploding_gradients", None,
                f"the gradient norm spiked to {peak:.3g}, {peak / median:.0f}x its median of {median:.3g}",
                {"grad_norm_max": peak, "grad_norm_median": median},
                "keep gradient clipping on (train.grad_clip), lower the learning rate, or add warm-up",
            ))
    return out


def stuck(stats: dict[str, Any]) -> list[dict[str, Any]]:
    losses, ln_v = _finite(_losses(stats)), stats.get("ln_vocab")
    if not ln_v or len(losses) < 50:
        return []
    end = _tail_mean(losses)
    if abs(end - ln_v) > max(STUCK_FRACTION * ln_v, 0.05):  # far above is diverging, another rule's business
        return []
    return [_finding(
        "warning", "not_learning", None,
        f"the loss ends at {end:.3f}, still at ln {stats['vocab_size']} = {ln_v:.3f}: the model predicts the "
        "uniform distribution and is not learning",
        {"loss_end": round(end, 4), "ln_vocab": ln_v},
        "raise the learning rate, check that labels line up with inputs, and that gradients reach the weights",
    )]


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


RULES = (causality, nonfinite, initial_loss, learning_rate, stuck, saturation, dead_units, depth_gradients,
         overfitting)


def find_problems(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule over the statistics; errors first."""
    found = [f for rule in RULES for f in rule(stats)]
    return sorted(found, key=lambda f: f["severity"] != "error")


def format_finding(finding: dict[str, Any]) -> str:
    where = f" {finding['layer']}:" if finding.get("layer") else ""
    return f"[{finding['severity']}]{where} {finding['what']}.\n    fix: {finding['fix']}."
