"""Health rules that look at the loss, the optimizer's steps and the parameters: the initial loss,
the learning rate (diverging loss, update:data ratio), NaN/inf and gradient-norm spikes, a loss stuck at a
baseline, parameters that never update, overfitting, and the causality probe.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from lmlab.inspector.rule_helpers import (
    _current_lr,
    _end_loss,
    _finding,
    _finite,
    _losses,
    _names_text,
    _power_of_ten,
    _round_lr,
    _tail_mean,
    lr_text,
    times,
)
from lmlab.inspector.thresholds import (
    BASELINE_MARGIN,
    FROZEN_SHARE,
    GRAD_SPIKE,
    INIT_LOSS_MARGIN,
    OVERFIT_GAP,
    STUCK_FRACTION,
    UPDATE_HIGH,
    UPDATE_LOW,
    UPDATE_TARGET,
)


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
