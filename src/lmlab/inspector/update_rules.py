"""Health rules over the optimizer's steps and what they do to the parameters: the update:data ratio
against 1e-3 (learning rate too high or too low, where each layer group sits), a diverging loss, tensors that
never change, and weight decay that shrinks the weights faster than the gradient grows them.
"""

from __future__ import annotations

import math
import statistics

from lmlab.inspector.finding import Finding, rule
from lmlab.inspector.layer_rules import dead_units, exploding_gradients, saturation
from lmlab.inspector.loss_rules import not_learning, not_learning_because
from lmlab.inspector.rule_helpers import (
    current_lr,
    end_loss,
    finite,
    losses,
    lower_lr,
    lower_lr_text,
    lr_text,
    names_text,
    now_text,
    pattern,
    power_of_ten,
    round_lr,
    short_of_bigram,
    tail_mean,
    times,
    update_ratios,
)
from lmlab.inspector.stats import InspectorStats
from lmlab.inspector.thresholds import (
    BASELINE_MARGIN,
    DECAY_SHRINK,
    EARLY_WINDOW,
    FROZEN_SHARE,
    INIT_LOSS_MARGIN,
    UPDATE_HIGH,
    UPDATE_LOW,
    UPDATE_TARGET,
)


def update_groups(stats: InspectorStats) -> dict[str, list[str]]:
    """Weight matrices grouped by name up to the layer numbers (transformer.h.#.mlp.c_fc.weight), in order."""
    groups: dict[str, list[str]] = {}
    for name, p in stats.params.items():
        if len(p.shape) >= 2 and finite(p.update_data):
            groups.setdefault(pattern(name), []).append(name)
    return groups


@rule(priority=99)
def update_band(stats: InspectorStats) -> list[Finding]:
    """A note: where each group of weight matrices sits against the 1e-3 update:data band, over the second
    half of the run (the first steps of warm-up are their own phase)."""
    groups = update_groups(stats)
    if not groups:
        return []
    placed: dict[str, float] = {}
    for group, names in groups.items():
        late = []
        for name in names:
            values = finite(stats.params[name].update_data)
            late += values[len(values) // 2 :]
        if late:
            placed[group] = round(statistics.median(late), 2)
    off = {g: v for g, v in placed.items() if abs(v - UPDATE_TARGET) > 0.5}
    if not off:
        return []
    worst = sorted(off, key=lambda g: -abs(off[g] - UPDATE_TARGET))
    parts = []
    for g in worst[:4]:
        factor = 10 ** abs(off[g] - UPDATE_TARGET)
        side = "above" if off[g] > UPDATE_TARGET else "below"
        parts.append(f"{g} ({len(groups[g])}) at 10^{off[g]:.1f}, {times(factor)} {side}")
    more = f"; {len(off) - 4} more groups off the band" if len(off) > 4 else ""
    inside = len(placed) - len(off)
    return [update_band.finding(
        "note", None,
        f"update:data over the second half of the run, by layer group, beside the ~1e-3 band that trains well "
        f"(10^-3.5 to 10^-2.5): {'; '.join(parts)}{more}; {inside} of {len(placed)} groups inside it. Above "
        "the band the steps are large for those weights (a lower rate, or a per-group rate, would suit them), "
        "below it they barely move", {"log10_update_data": placed, "target": UPDATE_TARGET})]


def _typical_update(stats: InspectorStats) -> tuple[dict[str, float], float | None]:
    ratios = update_ratios(stats)
    return ratios, (statistics.median(ratios.values()) if ratios else None)


def _diverging(stats: InspectorStats) -> Finding | None:
    """The loss ends worse than at initialisation, or twice its best: the rate is far too high."""
    all_losses = losses(stats)
    values = finite(all_losses)
    if len(values) < 20 or len(values) != len(all_losses):
        return None
    start, end = values[0], tail_mean(values)  # start: the loss at initialisation
    windows = [statistics.fmean(values[i : i + 5]) for i in range(len(values) - 4)]
    best = min(start, *windows)
    if not (end > 1.1 * start + 0.05 or end > 2 * best + 0.1):
        return None
    best_at = stats.loss[windows.index(min(windows))].step if best < start else 0
    lr = current_lr(stats)
    suggestion, why = lower_lr(stats, _typical_update(stats)[1])
    toward = f" toward {lr_text(suggestion)} ({why})" if suggestion else ""
    return lr_too_high.finding(
        "error", None,
        f"the loss is diverging: it went from {start:.3f} at the start (best {best:.3f}) to {end:.3f} at the end",
        {"loss_start": round(start, 4), "loss_best": round(best, 4), "loss_end": round(end, 4), "lr": lr,
         "suggested_lr": suggestion},
        f"lower train.lr{now_text(lr)}{toward}, or add warm-up; `lmlab lr-find` measures a good rate", since=best_at)


_LR_THRESHOLD = (f"median log10 update:data above {UPDATE_HIGH:g} or below {UPDATE_LOW:g} (good: about "
                 f"{UPDATE_TARGET:g}); or the loss ends above its start")


@rule(priority=5, threshold=_LR_THRESHOLD)
def lr_too_high(stats: InspectorStats) -> list[Finding]:
    diverging = _diverging(stats)
    if diverging is not None:
        return [diverging]
    ratios, typical = _typical_update(stats)
    lr = current_lr(stats)
    if typical is None or lr is None or typical <= UPDATE_HIGH:
        return []
    suggestion, why = lower_lr(stats, typical)
    numbers = {"log10_update_data": round(typical, 2), "per_layer": {k: round(v, 2) for k, v in ratios.items()},
               "lr": lr, "threshold": UPDATE_HIGH, "suggested_lr": suggestion}
    return [lr_too_high.finding(
        "warning", None,
        f"each step changes the weights by 10^{typical:.1f} of their size; the rule of thumb is about 1e-3 "
        f"(10^-3), so the learning rate looks {times(10 ** (typical - UPDATE_TARGET))} too high",
        numbers, f"lower train.lr{now_text(lr)} toward {lr_text(suggestion)} ({why}); `lmlab lr-find` measures a good "
        "rate", since=0,
    )]


@rule(priority=5, threshold=_LR_THRESHOLD)
def lr_too_low(stats: InspectorStats) -> list[Finding]:
    ratios, typical = _typical_update(stats)
    lr = current_lr(stats)
    if typical is None or lr is None or typical >= UPDATE_LOW:
        return []
    factor = 10 ** (UPDATE_TARGET - typical)
    suggestion = round_lr(lr * factor)
    default = stats.default_lr
    also = f" (the model's default is {lr_text(default)})" if default and default > lr else ""
    numbers = {"log10_update_data": round(typical, 2), "per_layer": {k: round(v, 2) for k, v in ratios.items()},
               "lr": lr, "threshold": UPDATE_LOW, "suggested_lr": suggestion}
    return [lr_too_low.finding(
        "warning", None,
        f"each step changes the weights by only 10^{typical:.1f} of their size, far below the ~1e-3 "
        "(10^-3) that trains well: the learning rate looks much too low",
        numbers, f"raise train.lr{now_text(lr)} by about {power_of_ten(factor)}, to about {lr_text(suggestion)}{also}; "
        "or check that the optimizer updates these parameters; `lmlab lr-find` measures a good rate", since=0,
    )]


@rule(priority=3, threshold=f">= {FROZEN_SHARE:.0%} of the parameters never updated, or a tensor with a gradient "
                            "that never changes while the rest train")
def frozen_parameters(stats: InspectorStats) -> list[Finding]:
    total = stats.param_count
    if not total or stats.counted:
        return []
    frozen = dict(stats.frozen)
    untrained: dict[str, int] = {}
    for name, p in stats.params.items():
        zero_grad = all(v == 0 for v in p.grad_std + p.grad_mean)
        never_moved = p.moved is False
        if (p.no_grad and not p.grad_std) or zero_grad or never_moved:
            untrained[name] = p.numel
    idle = sum(frozen.values()) + sum(untrained.values())
    if not idle:
        return []
    share = idle / total
    parts = []
    if frozen:
        names = names_text(list(frozen), noun="tensors")
        parts.append(f"{sum(frozen.values()):,} frozen (requires_grad=False: {names})")
    if untrained:
        parts.append(f"{sum(untrained.values()):,} trainable but never changed (no or zero gradient, or not in "
                     f"the optimizer: {names_text(list(untrained), noun='tensors')})")
    end, base = end_loss(stats), stats.baselines
    trivial = ""
    if end is not None and base and base.unigram and end >= base.unigram * (1 - BASELINE_MARGIN):
        trivial = (f"; the loss only reached {end:.3f}, what token frequencies alone give (unigram entropy "
                   f"{base.unigram:.3f})")
    numbers = {"share": round(share, 4), "no_update": idle, "total": total, "frozen": list(frozen),
               "untrained": list(untrained), "threshold": FROZEN_SHARE}
    what = f"{share:.0%} of the parameters ({idle:,} of {total:,}) receive no update: {'; '.join(parts)}{trivial}"
    fix = ("if that is not on purpose, set requires_grad=True and pass them to the optimizer; a parameter with a "
           "zero gradient is not used in forward, sits behind a detach() or dead units")
    # A model that starts near ln V is fresh, not a pretrained one being fine-tuned: its frozen or untrained
    # tensors are random tables that stay random, whatever their share (a frozen embedding makes every token a
    # fixed random vector)
    ln_v, first = stats.ln_vocab, stats.initial_loss
    fresh = bool(ln_v) and first is not None and first >= ln_v - max(INIT_LOSS_MARGIN, 0.15 * ln_v)
    random_tables = [*frozen, *(n for n in untrained if len(stats.params[n].shape) >= 2)]
    severity = "warning" if share >= FROZEN_SHARE or (fresh and random_tables) else "note"
    if fresh and random_tables:
        what += (f"; the model started from scratch (initial loss {first:.2f}, ln V {ln_v:.2f}), so "
                 f"{names_text(random_tables, noun='tensors')} stay at their initialisation")
        numbers["random"] = random_tables
    # A tensor with a gradient that never changes while others do: the optimizer does not update it.
    stuck = [n for n, p in stats.params.items() if p.moved is False and any(v != 0 for v in finite(p.grad_std))]
    if stuck and any(p.moved for p in stats.params.values()):
        severity = "warning"
        numbers["stuck"] = stuck
        what += (f"; {names_text(stuck, noun='tensors')} get a gradient yet never change (update:data exactly 0 "
                 "while the rest train): the optimizer does not update them")
        fix = ("pass every trainable parameter to the optimizer (model.parameters(), not a list made before a "
               "layer was added or replaced) and check that no param group has lr 0; " + fix)
    return [frozen_parameters.finding(severity, None, what, numbers, fix, since=0)]


def _decay_explains(decay: Finding, consequence: Finding) -> Finding:
    return not_learning_because(consequence, "the weight decay, which shrinks the weights faster than the gradient "
                                "grows them", decay.fix)


def _shrink(series: list[float]) -> float | None:
    """How many times smaller the last value is than the largest (None: too few samples)."""
    values = [v for v in finite(series) if v > 0]
    return max(values) / values[-1] if len(values) >= 4 else None


@rule(priority=4, threshold=f"with weight decay on: weights and activations both > {DECAY_SHRINK:g}x smaller "
                            "than at their peak while the loss climbs back", explains={not_learning: _decay_explains})
def weight_decay_too_strong(stats: InspectorStats) -> list[Finding]:
    if stats.weight_decay <= 0:
        return []
    # Decay pulls every weight; the gradient holds some up (the ones the loss needs most), so the most shrunk
    # matrix, and the activations it feeds, show it first
    weights = {n: r for n, p in stats.params.items() if len(p.shape) >= 2 and (r := _shrink(p.data_std)) is not None}
    acts = [r for ly in stats.layers.values() if ly.kind in ("linear", "embedding", "conv")
            and (r := _shrink(ly.std)) is not None]
    values = finite(losses(stats))
    if not weights or not acts or len(values) < 50:
        return []
    shrunk = max(weights, key=weights.get)
    w, a = weights[shrunk], max(acts)
    windows = [statistics.fmean(values[i : i + 10]) for i in range(0, len(values) - 9, 5)]
    best, end = min(windows), tail_mean(values)
    climbed = end - best >= max(0.05, 0.1 * abs((stats.ln_vocab or end) - best))
    short = short_of_bigram(stats)  # held back: not even a table of next-token counts
    if w < DECAY_SHRINK or a < DECAY_SHRINK or not (climbed or short):
        return []
    wd = stats.weight_decay
    loss = (f"the loss climbed back from {best:.3f} to {end:.3f}" if climbed else
            f"the loss ended at {end:.3f}, not clearly below what a table of next-token counts gives (counted "
            f"bigram {short[1]:.3f})")
    return [weight_decay_too_strong.finding(
        "warning", None,
        f"the weights shrank ({shrunk} {times(w)} from its peak) and the layers' activations up to {times(a)} while "
        f"{loss}: weight decay ({wd:g}) pulls the weights toward 0 faster than the gradient grows them",
        {"weight_shrink": round(w, 3), "shrunk": shrunk, "activation_shrink": round(a, 3), "loss_best": round(best, 4),
         "loss_end": round(end, 4), "weight_decay": wd, "threshold": DECAY_SHRINK},
        f"lower train.weight_decay (now {wd:g}) by about 10x, to {wd / 10:g} (AdamW's usual 0.01-0.1 multiplies "
        "the learning rate)")]


def _spike_explains(spike: Finding, consequence: Finding) -> Finding:
    if consequence.rule == not_learning.name:
        return not_learning_because(consequence, "the loss spike in the first steps at full rate", spike.fix)
    return consequence.reworded(
        what=consequence.what + f" — a consequence of the loss spike at step {spike.since_step} (above): the first "
        "steps at full rate threw the weights far off", fix=spike.fix)


@rule(priority=2, threshold=f"in the warm-up and the first {EARLY_WINDOW:.0%} of the run, the loss rises above "
                            f"max(its start, ln V) + max({INIT_LOSS_MARGIN}, 15 % of ln V) and later comes back",
      explains={dead_units: _spike_explains, saturation: _spike_explains, exploding_gradients: _spike_explains,
                lr_too_high: _spike_explains, not_learning: _spike_explains})
def early_loss_spike(stats: InspectorStats) -> list[Finding]:
    """The first updates at full rate: gradients at initialisation are large and the weights random, so a peak
    rate a trained model tolerates throws them far off: the loss jumps above guessing (ln V), units die in the
    jump, and the run spends its steps recovering. A warm-up is what prevents it. (A loss that never comes
    back is diverging: lr_too_high.)"""
    records = [r for r in stats.loss if math.isfinite(r.loss)]
    ln_v = stats.ln_vocab
    if len(records) < 3 or not ln_v:
        return []
    first, total = records[0], stats.steps or records[-1].step
    early = [r for r in records if r.step <= first.step + stats.warmup_steps + max(20, EARLY_WINDOW * total)]
    margin = max(INIT_LOSS_MARGIN, 0.15 * ln_v)
    if first.loss > ln_v + margin:  # a start far above ln V is the initialisation's fault (initial_loss)
        return []
    start = max(first.loss, ln_v)
    peak = max(early, key=lambda r: r.loss)
    values = [r.loss for r in records]
    if peak.loss <= start + margin or tail_mean(values) >= start:
        return []
    lr, warmup = current_lr(stats), stats.warmup_steps
    numbers = {"loss_start": first.loss, "loss_peak": peak.loss, "peak_step": peak.step, "ln_vocab": ln_v,
               "warmup_steps": warmup, "lr": lr}
    what = (f"the loss rose from {first.loss:.3f} at step {first.step} to {peak.loss:.3f} at step {peak.step}, above "
            f"ln V = {ln_v:.3f} (worse than guessing uniformly)")
    if not warmup:
        steps = min(100, max(10, total // 10))
        return [early_loss_spike.finding(
            "warning", None, what + f": the run started at its full rate{now_text(lr)} with no warm-up, and the first "
            "updates on random weights, whose gradients are large, threw them far off; the run spends its steps "
            "recovering, and units that die in the jump stay dead", numbers | {"suggested_warmup": steps},
            f"add a warm-up: train.warmup_steps={steps} (the rate rises linearly from 0 over the first steps, about "
            "5-10 % of the run)", since=peak.step)]
    return [early_loss_spike.finding(
        "warning", None, what + f" even with a {warmup}-step warm-up: the peak rate{now_text(lr)} is too high for "
        "these weights at the start", numbers, f"{lower_lr_text(stats)}, or lengthen the warm-up "
        f"(train.warmup_steps, now {warmup})", since=peak.step)]
