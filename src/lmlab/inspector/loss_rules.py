"""Health rules that look at the loss, the optimizer's steps and the parameters: the initial loss,
the learning rate (diverging loss, update:data ratio), NaN/inf and gradient-norm spikes, a loss stuck at a
baseline, parameters that never update, overfitting, and the causality probe.
"""

from __future__ import annotations

import math
import statistics

from lmlab.inspector.finding import Finding, rule
from lmlab.inspector.rule_helpers import (
    current_lr,
    end_loss,
    finite,
    losses,
    lr_text,
    names_text,
    pattern,
    power_of_ten,
    round_lr,
    tail_mean,
    times,
)
from lmlab.inspector.stats import InspectorStats
from lmlab.inspector.thresholds import (
    BASELINE_MARGIN,
    DECAY_SHRINK,
    FROZEN_SHARE,
    GRAD_SPIKE,
    INIT_LOSS_MARGIN,
    OVERFIT_GAP,
    STUCK_FRACTION,
    UPDATE_HIGH,
    UPDATE_LOW,
    UPDATE_TARGET,
)


@rule(priority=7, threshold=f"loss at step 0 above ln V + max({INIT_LOSS_MARGIN}, 15 % of ln V)")
def initial_loss(stats: InspectorStats) -> list[Finding]:
    loss, ln_v, vocab = stats.initial_loss, stats.ln_vocab, stats.vocab_size
    if loss is None or not ln_v or not math.isfinite(loss):
        return []
    margin = max(INIT_LOSS_MARGIN, 0.15 * ln_v)
    if loss <= ln_v + margin:
        return []
    return [initial_loss.finding(
        "warning", None,
        f"initial loss {loss:.2f} is far above ln {vocab} = {ln_v:.2f}: the output layer is too confident at "
        "initialisation, so the first steps are spent squashing the logits instead of learning",
        {"initial_loss": loss, "ln_vocab": ln_v, "threshold": round(ln_v + margin, 4)},
        "scale the output layer's weights down (x0.01-0.1) or zero its bias, so the first logits are nearly equal",
        since=0,
    )]


def update_ratios(stats: InspectorStats) -> dict[str, float]:
    """Median log10 update:data ratio of each weight matrix (biases and gains are left out, as in lecture 3)."""
    ratios = {}
    for name, p in stats.params.items():
        values = finite(p.update_data)
        if len(p.shape) >= 2 and values:
            ratios[name] = statistics.median(values)
    return ratios


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


def _lower_lr(stats: InspectorStats, ratio: float | None) -> tuple[float | None, str]:
    """The rate to try instead of a too-high one, and why: the model's default when the run is above it,
    otherwise the rate that brings the measured update:data ratio to 1e-3."""
    lr, default = current_lr(stats), stats.default_lr
    if lr is None:
        return None, ""
    if default and default < lr:
        return default, f"the model's default; {lr_text(lr)} is {times(lr / default)} it"
    if ratio is not None and ratio > UPDATE_TARGET:
        return round_lr(lr * 10 ** (UPDATE_TARGET - ratio)), "where the update:data ratio would be about 1e-3"
    return round_lr(lr / 10), "10x lower"


def _now(lr: float | None) -> str:
    return f" (now {lr_text(lr)})" if lr else ""


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
    suggestion, why = _lower_lr(stats, _typical_update(stats)[1])
    toward = f" toward {lr_text(suggestion)} ({why})" if suggestion else ""
    return lr_too_high.finding(
        "error", None,
        f"the loss is diverging: it went from {start:.3f} at the start (best {best:.3f}) to {end:.3f} at the end",
        {"loss_start": round(start, 4), "loss_best": round(best, 4), "loss_end": round(end, 4), "lr": lr,
         "suggested_lr": suggestion},
        f"lower train.lr{_now(lr)}{toward}, or add warm-up; `lmlab lr-find` measures a good rate", since=best_at)


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
    suggestion, why = _lower_lr(stats, typical)
    numbers = {"log10_update_data": round(typical, 2), "per_layer": {k: round(v, 2) for k, v in ratios.items()},
               "lr": lr, "threshold": UPDATE_HIGH, "suggested_lr": suggestion}
    return [lr_too_high.finding(
        "warning", None,
        f"each step changes the weights by 10^{typical:.1f} of their size; the rule of thumb is about 1e-3 "
        f"(10^-3), so the learning rate looks {times(10 ** (typical - UPDATE_TARGET))} too high",
        numbers, f"lower train.lr{_now(lr)} toward {lr_text(suggestion)} ({why}); `lmlab lr-find` measures a good "
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
        numbers, f"raise train.lr{_now(lr)} by about {power_of_ten(factor)}, to about {lr_text(suggestion)}{also}; "
        "or check that the optimizer updates these parameters; `lmlab lr-find` measures a good rate", since=0,
    )]


def _lower_lr_text(stats: InspectorStats) -> str:
    lr = current_lr(stats)
    suggestion, why = _lower_lr(stats, None)
    return (f"lower train.lr (now {lr_text(lr)}) toward {lr_text(suggestion)} ({why})" if lr and suggestion
            else "lower the learning rate")


@rule(priority=1, threshold="any NaN/inf loss or gradient (the trainer skips such steps)")
def nan(stats: InspectorStats) -> list[Finding]:
    skipped = stats.nonfinite_steps
    bad_loss = [r.step for r in stats.loss if not math.isfinite(r.loss)]
    if not skipped and not bad_loss:
        return []
    first_layer = next((n for n in stats.order or stats.layers
                        if n in stats.layers and not all(math.isfinite(v) for v in stats.layers[n].std)), None)
    where = f"; the first layer with non-finite activations is {first_layer}" if first_layer else ""
    return [nan.finding(
        "error", first_layer,
        f"the loss or the gradients became NaN/inf ({skipped} step(s) skipped){where}: training is exploding",
        {"nonfinite_steps": skipped, "first_bad_step": bad_loss[0] if bad_loss else None, "lr": current_lr(stats)},
        f"{_lower_lr_text(stats)}, keep gradient clipping on (train.grad_clip=1.0), check the init scale; "
        "`lmlab lr-find` measures a good rate", since=bad_loss[0] if bad_loss else None,
    )]


def _spike(records: list, least: int = 20) -> tuple[float, float, int] | None:
    """(peak, median, step) when a gradient norm in `records` is GRAD_SPIKE times their median."""
    norms = finite([r.grad_norm for r in records])
    if len(norms) < least:
        return None
    median, peak = statistics.median(norms), max(norms)
    if median <= 0 or peak <= GRAD_SPIKE * median:
        return None
    return peak, median, next(r.step for r in records if r.grad_norm == peak)


def gradient_norm_spike(stats: InspectorStats, rule_name: str) -> Finding | None:
    """A gradient norm far above its phase's median. The first steps (the warm-up, at least the first 5 % of
    the run) are their own phase: norms there fall from their value at initialisation, and a spike the clip
    caught, after which the loss went on falling, is a note; after warm-up a spike is judged against the
    rest of the run's median."""
    records = stats.loss
    if not records:
        return None
    first = records[0].step
    warm_up = max(5, len(records) // 20, stats.warmup_steps)
    early = [r for r in records if first + 5 <= r.step <= first + warm_up - 1]  # the first 5: initialisation
    later = [r for r in records if r.step >= first + warm_up]
    fix = (f"keep gradient clipping on (train.grad_clip), {_lower_lr_text(stats)}, or add warm-up; `lmlab "
           "lr-find` measures a good rate")
    spike = _spike(later)
    if spike is not None:
        peak, median, at = spike
        return Finding(
            "warning", rule_name, None,
            f"the gradient norm spiked to {peak:.3g} at step {at}, {times(peak / median)} its median of {median:.3g}",
            {"grad_norm_max": peak, "grad_norm_median": median, "threshold": GRAD_SPIKE}, fix, at)
    spike = _spike(early)
    if spike is None:
        return None
    peak, median, at = spike
    after = finite([r.loss for r in records if r.step > at])
    at_spike = next(r.loss for r in records if r.step == at)
    recovered = bool(after) and tail_mean(after) < at_spike and bool(stats.grad_clip)
    numbers = {"grad_norm_max": peak, "grad_norm_median": median, "threshold": GRAD_SPIKE, "phase": "warm-up",
               "warmup_steps": warm_up}
    if recovered:
        return Finding(
            "note", rule_name, None,
            f"the gradient norm spiked to {peak:.3g} at step {at}, in the first {warm_up} steps (warm-up), "
            f"{times(peak / median)} that phase's median of {median:.3g}; the clip at {stats.grad_clip:g} held it "
            "and the loss went on falling: a transient of the first steps, not a fault", numbers, "", at)
    return Finding(
        "warning", rule_name, None,
        f"the gradient norm spiked to {peak:.3g} at step {at}, in the first {warm_up} steps (warm-up), "
        f"{times(peak / median)} that phase's median of {median:.3g}, and the loss did not recover", numbers, fix, at)


@rule(priority=8, threshold=f"the final loss within {STUCK_FRACTION:.0%} of ln V, or flat within "
                            f"{BASELINE_MARGIN:.0%} of the unigram entropy")
def not_learning(stats: InspectorStats) -> list[Finding]:
    """Still at the uniform distribution (ln V), or flat at what token frequencies alone give."""
    values, ln_v = finite(losses(stats)), stats.ln_vocab
    if not ln_v or len(values) < 50:
        return []
    end = tail_mean(values)
    base = stats.baselines
    unigram, bigram = (base.unigram, base.bigram) if base else (None, None)
    numbers = {"loss_end": round(end, 4), "ln_vocab": ln_v, "unigram": unigram, "bigram": bigram}
    lr = current_lr(stats)
    fix = (f"raise the learning rate{_now(lr)}, check that labels line up with inputs "
           "and that gradients reach the weights (requires_grad, the optimizer's parameter list)")
    if abs(end - ln_v) <= max(STUCK_FRACTION * ln_v, 0.05):  # far above is diverging, another rule's business
        return [not_learning.finding(
            "warning", None,
            f"the loss ends at {end:.3f}, still at ln {stats.vocab_size} = {ln_v:.3f}: the model predicts the "
            "uniform distribution and is not learning", numbers | {"threshold": "ln V"}, fix, since=0)]
    if not unigram:
        return []
    middle = statistics.fmean(values[len(values) // 2 : 3 * len(values) // 4])
    still_falling = middle - end > 0.02 * unigram
    if end >= unigram * (1 - BASELINE_MARGIN) and end < ln_v and not still_falling:
        return [not_learning.finding(
            "warning", None,
            f"the loss flattened at {end:.3f}, no better than token frequencies alone (the training split's "
            f"unigram entropy is {unigram:.3f}, a counted bigram reaches {bigram if bigram else float('nan'):.3f}): "
            "the model learned which tokens are common and nothing about their context",
            numbers | {"threshold": round(unigram * (1 - BASELINE_MARGIN), 4)}, fix, since=0)]
    return []


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
    severity = "warning" if share >= FROZEN_SHARE else "note"
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
    return consequence.reworded(what=consequence.what + " — a consequence of the weight decay above, which shrinks "
                                "the weights faster than the gradient grows them", fix=decay.fix)


def _shrink(series: list[float]) -> float | None:
    """How many times smaller the last value is than the largest (None: too few samples)."""
    values = [v for v in finite(series) if v > 0]
    return max(values) / values[-1] if len(values) >= 4 else None


@rule(priority=4, threshold=f"with weight decay on: weights and activations both > {DECAY_SHRINK:g}x smaller "
                            "than at their peak while the loss climbs back", explains={not_learning: _decay_explains})
def weight_decay_too_strong(stats: InspectorStats) -> list[Finding]:
    if stats.weight_decay <= 0:
        return []
    weights = [r for p in stats.params.values() if len(p.shape) >= 2 and (r := _shrink(p.data_std)) is not None]
    acts = [r for ly in stats.layers.values() if ly.kind == "linear" and (r := _shrink(ly.std)) is not None]
    values = finite(losses(stats))
    if not weights or not acts or len(values) < 50:
        return []
    w, a = statistics.median(weights), max(acts)  # the output layer's bias can hold its activations up
    windows = [statistics.fmean(values[i : i + 10]) for i in range(0, len(values) - 9, 5)]
    best, end = min(windows), tail_mean(values)
    climbed = end - best >= max(0.05, 0.1 * abs((stats.ln_vocab or end) - best))
    unigram = stats.baselines.unigram if stats.baselines else None
    flat = unigram is not None and end >= unigram * (1 - BASELINE_MARGIN)
    if w < DECAY_SHRINK or a < DECAY_SHRINK or not (climbed or flat):
        return []
    wd = stats.weight_decay
    loss = (f"the loss climbed back from {best:.3f} to {end:.3f}" if climbed else
            f"the loss stayed at {end:.3f}, what token frequencies alone give (unigram entropy {unigram:.3f})")
    return [weight_decay_too_strong.finding(
        "warning", None,
        f"the weight matrices shrank {times(w)} from their peak and the layers' activations up to {times(a)} while "
        f"{loss}: weight decay ({wd:g}) pulls the weights toward 0 faster than the gradient grows them",
        {"weight_shrink": round(w, 3), "activation_shrink": round(a, 3), "loss_best": round(best, 4),
         "loss_end": round(end, 4), "weight_decay": wd, "threshold": DECAY_SHRINK},
        f"lower train.weight_decay (now {wd:g}) by about 10x, to {wd / 10:g} (AdamW's usual 0.01-0.1 multiplies "
        "the learning rate)")]


def _val_at(val: list, step: int | None) -> float | None:
    return next((v for s, v in val if s == step), None)


@rule(priority=9, threshold=f"validation loss rising while the train/val gap grew by > {OVERFIT_GAP} nats "
                            "(a note when early stopping kept the best step)")
def overfitting(stats: InspectorStats) -> list[Finding]:
    val = [(s, v) for s, v in stats.val if math.isfinite(v)]
    records = stats.loss
    control = stats.run
    stopped = control is not None and control.stopped_step is not None
    if len(val) < 3 or not records:
        return []

    def train_at(step: int) -> float:
        near = [r.loss for r in records if r.step <= step][-20:]
        return statistics.fmean(near) if near else float("nan")

    best_step, best = min(val, key=lambda sv: sv[1])
    last_step, last = val[-1]
    gap_best, gap_end = best - train_at(best_step), last - train_at(last_step)
    numbers = {"val_best": best, "val_best_step": best_step, "val_end": last, "gap_best": round(gap_best, 4),
               "gap_end": round(gap_end, 4)}
    rising = not (last_step == best_step or last < best + max(0.01, 0.005 * best) or gap_end < gap_best + OVERFIT_GAP)
    kept = control.best_step if control is not None and control.restored else None
    if kept is not None:
        kept_val = _val_at(val, kept) or control.best
        numbers |= {"kept_step": kept, "val_kept": kept_val, "stopped_step": control.stopped_step}
        ended = (f"stopped the run at step {control.stopped_step:,} and " if stopped else "")
        if rising:
            return [overfitting.finding(
                "note", None,
                f"early stopping {ended}kept step {kept:,} (val {kept_val:.3f}); validation loss had risen to "
                f"{last:.3f} by step {last_step:,} while the train/val gap grew from {gap_best:.3f} to {gap_end:.3f}: "
                "training on would have memorised the training set", numbers)]
        if stopped:
            return [overfitting.finding(
                "note", None,
                f"early stopping {ended}kept step {kept:,} (val {kept_val:.3f}), its best validation loss: the "
                "evaluations after it did not improve on it", numbers)]
        return []
    if not rising:
        return []
    if stopped:  # stopped, but the best weights are not the model's (restoring was off or the run interrupted)
        return [overfitting.finding(
            "warning", None,
            f"validation loss rose from its best {best:.3f} (step {best_step:,}) to {last:.3f} while the train/val "
            f"gap grew from {gap_best:.3f} to {gap_end:.3f}: early stopping ended the run at step "
            f"{control.stopped_step:,}, but the model holds that step's weights, not the best ones", numbers,
            "keep the best weights (train.early_stopping restores them when the run ends), or sample from the "
            f"step-{best_step} checkpoint")]
    return [overfitting.finding(
        "warning", None,
        f"validation loss rose from its best {best:.3f} (step {best_step}) to {last:.3f} while the train/val gap "
        f"grew from {gap_best:.3f} to {gap_end:.3f}: the model is memorising the training set", numbers,
        "stop earlier (--early-stopping), add dropout or weight decay, use a smaller model or more data",
    )]


@rule(priority=99)
def run_control(stats: InspectorStats) -> list[Finding]:
    """Notes on what the callbacks and the trainer did to the schedule: learning-rate scaling by a callback
    (ReduceLROnPlateau) and a time budget that cut the planned steps."""
    control = stats.run
    if control is None:
        return []
    out = []
    if control.lr_scales:
        steps = ", ".join(f"x{scale:.3g} at step {int(step):,}" for step, scale in control.lr_scales)
        out.append(run_control.finding(
            "note", None, f"a callback scaled the learning rate during the run ({steps}; ReduceLROnPlateau does "
            "when the monitored loss plateaus): the update:data ratios after that step are smaller by as much",
            {"lr_scales": control.lr_scales}))
    if control.time_budget and control.fitted_steps and control.fitted_steps < control.planned_steps:
        out.append(run_control.finding(
            "note", None, f"the time budget ({control.time_budget:g} s) fitted the schedule to "
            f"{control.fitted_steps:,} of the {control.planned_steps:,} planned steps; the run took {control.steps:,}",
            {"time_budget": control.time_budget, "planned_steps": control.planned_steps,
             "fitted_steps": control.fitted_steps, "steps": control.steps}))
    return out


@rule(priority=0, threshold="changing a later token moves an earlier position's logits by more than 1e-4 of "
                            "their scale")
def causality_leak(stats: InspectorStats) -> list[Finding]:
    probe = stats.causality
    if not probe.leak:
        return []
    return [causality_leak.finding(
        "error", None,
        f"changing the token at position {probe.position} changed the logits of earlier positions (by up to "
        f"{probe.max_change:.3g}): the model sees the future, so its training loss is a lie and it cannot generate",
        {"max_change": probe.max_change, "position": probe.position},
        "check the causal mask (lower-triangular), any shift of input_ids, and that no layer mixes positions "
        "(e.g. normalising over time)",
    )]
