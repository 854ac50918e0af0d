"""Health rules that look at the loss and what the run did with it: the initial loss, NaN/inf and
gradient-norm spikes (a warm-up judged as its own phase), a loss stuck at a baseline, over-fitting (and what
early stopping made of it), what callbacks and the time budget did to the schedule, and the causality probe.
"""

from __future__ import annotations

import math
import statistics

from lmlab.inspector.finding import Finding, rule
from lmlab.inspector.rule_helpers import (
    current_lr,
    finite,
    losses,
    lower_lr_text,
    now_text,
    short_of_bigram,
    tail_mean,
    times,
    typical_update,
)
from lmlab.inspector.stats import InspectorStats
from lmlab.inspector.thresholds import (
    BASELINE_MARGIN,
    GRAD_SPIKE,
    INIT_LOSS_MARGIN,
    LEARNED_MARGIN,
    OVERFIT_GAP,
    STUCK_FRACTION,
    UPDATE_HIGH,
    UPDATE_LOW,
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
        f"{lower_lr_text(stats)}, keep gradient clipping on (train.grad_clip=1.0), check the init scale; "
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
    fix = (f"keep gradient clipping on (train.grad_clip), {lower_lr_text(stats)}, or add warm-up; `lmlab "
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


def _still_falling(values: list[float]) -> float:
    """How much the loss fell over the last third of the run (0 when it rose or held)."""
    third = max(1, len(values) // 3)
    if len(values) < 6:
        return max(0.0, values[0] - tail_mean(values, least=2))
    return max(0.0, statistics.fmean(values[-2 * third : -third]) - statistics.fmean(values[-third:]))


def why_not_learned(stats: InspectorStats) -> tuple[str, str, dict]:
    """The most likely reason a run ended without learning, from what the run itself knows: stopped inside
    its warm-up, stopped before its planned steps, too few steps while the loss was still falling, or a rate
    whose steps are far off 1e-3 of the weights; else a model that does not use its context. (cause, fix,
    numbers)"""
    control, warmup = stats.run, stats.warmup_steps
    steps = stats.steps if stats.steps is not None else (stats.loss[-1].step if stats.loss else 0)
    planned = max(control.fitted_steps, control.planned_steps) if control is not None else 0
    stopped = control.stopped_step if control is not None else None
    numbers = {"steps": steps, "planned_steps": planned, "warmup_steps": warmup}
    values = finite(losses(stats))
    falling = _still_falling(values) if values else 0.0
    lr = current_lr(stats)
    longer = "a larger --budget (work: tokens or steps)" if control is not None and control.time_budget else \
        "more steps (--max-steps) or a larger --budget"
    if stopped is not None and warmup and stopped <= warmup:
        return (f"early stopping ended the run at step {stopped:,}, inside its {warmup:,}-step warm-up, before the "
                "learning rate ever reached its peak", "let the warm-up finish before early stopping counts "
                "(lmlab's own EarlyStopping does), raise its patience, or shorten train.warmup_steps", numbers)
    if warmup and steps <= warmup:
        return (f"all {steps:,} steps were inside the {warmup:,}-step warm-up: the learning rate never reached its "
                "peak", f"train for well beyond the warm-up ({longer}) or shorten train.warmup_steps", numbers)
    if planned and steps < planned:
        if stopped is not None:
            return (f"early stopping ended the run at step {stopped:,} of the {planned:,} planned",
                    "raise early stopping's patience (train.early_stopping) or evaluate less often", numbers)
        if control is not None and control.time_budget:
            return (f"the time budget ({control.time_budget:g} s) stopped the run at step {steps:,} of {planned:,}",
                    f"give it {longer}, or train a smaller model", numbers)
        return (f"the run stopped at step {steps:,} of the {planned:,} planned",
                "resume it (lmlab train --resume) so it finishes its schedule", numbers)
    typical = typical_update(stats)
    numbers["log10_update_data"] = round(typical, 2) if typical is not None else None
    if typical is not None and typical < UPDATE_LOW + 1:
        return (f"each step changes the weights by only 10^{typical:.1f} of their size (about 10^-3 trains well)",
                f"raise the learning rate{now_text(lr)}; `lmlab lr-find` measures a good rate", numbers)
    if falling > 0.01 * (values[0] if values else 1.0):
        numbers["fall_last_third"] = round(falling, 4)
        budget = f" (the time budget allowed {steps:,})" if control is not None and control.time_budget else ""
        return (f"the run was too short: after {steps:,} steps{budget} the loss was still falling ({falling:.3f} "
                "nats over the last third)", f"train longer: {longer}", numbers)
    if typical is not None and typical > UPDATE_HIGH - 0.5:
        return (f"each step changes the weights by 10^{typical:.1f} of their size, far above the ~10^-3 that "
                "trains well: the rate is too high for the loss to settle", lower_lr_text(stats), numbers)
    return ("the loss levelled off with a rate in the usual range: the model does not use its context",
            "check that labels line up with inputs, that gradients reach the weights (requires_grad, the "
            "optimizer's parameter list) and that the model sees earlier tokens (its context, its attention mask)",
            numbers)


@rule(priority=8, threshold="the final loss not clearly below the counted bigram of the data (by "
                            f"max({LEARNED_MARGIN}, {LEARNED_MARGIN:.0%})), or within {STUCK_FRACTION:.0%} of ln V")
def not_learning(stats: InspectorStats) -> list[Finding]:
    """A run that ends no better than a table of next-token counts learned nothing a model is for; the finding
    names where it stands (ln V, token frequencies, short of the bigram) and the likely cause."""
    values, ln_v = finite(losses(stats)), stats.ln_vocab
    if not values or stats.counted:
        return []
    end = tail_mean(values)
    if ln_v and end > ln_v + max(STUCK_FRACTION * ln_v, 0.05):
        return []  # far above ln V is diverging: lr_too_high's business
    short = short_of_bigram(stats)
    at_uniform = bool(ln_v) and abs(end - ln_v) <= max(STUCK_FRACTION * ln_v, 0.05) and len(values) >= 50
    if short is None and not at_uniform:
        return []
    base = stats.baselines
    unigram, bigram = (base.unigram, base.bigram) if base else (None, None)
    cause, fix, extra = why_not_learned(stats)
    numbers = {"loss_end": round(end, 4), "ln_vocab": ln_v, "unigram": unigram, "bigram": bigram} | extra
    if at_uniform:
        where = (f"the loss ends at {end:.3f}, still at ln {stats.vocab_size} = {ln_v:.3f}: the model predicts the "
                 "uniform distribution")
    elif unigram and end >= unigram * (1 - BASELINE_MARGIN):
        where = (f"the loss ended at {end:.3f}, no better than token frequencies alone (the training split's "
                 f"unigram entropy is {unigram:.3f}, a counted bigram reaches {bigram:.3f}): the model learned "
                 "which tokens are common and nothing about their context")
    else:
        goal = "reach" if stats.max_context == 1 else "get clearly below"
        where = (f"the loss ended at {end:.3f}, which does not {goal} what a table of next-token counts gives on "
                 f"the same data (counted bigram {bigram:.3f}, unigram {unigram:.3f}): the run learned nothing a "
                 "model is needed for")
    return [not_learning.finding("warning", None, f"{where}; most likely {cause}", numbers | {
        "threshold": "counted bigram", "cause": cause}, fix, since=0)]


def not_learning_because(finding: Finding, cause: str, fix: str) -> Finding:
    """not_learning worded as the consequence of a cause another rule found (its own guess dropped)."""
    guess = finding.numbers.get("cause")
    what = finding.what.replace(f"; most likely {guess}", "") if guess else finding.what
    return finding.reworded(what=f"{what} — a consequence of {cause} (above)", fix=fix)


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
    (ReduceLROnPlateau) and a time budget that stopped the run before its schedule ended."""
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
    if control.time_budget and control.fitted_steps and control.steps < control.fitted_steps:
        out.append(run_control.finding(
            "note", None, f"the time budget ({control.time_budget:g} s) stopped the run at step {control.steps:,} of "
            f"the {control.fitted_steps:,} its schedule planned, before the learning rate reached its floor: the "
            "machine was slower than the steps before the decay said; config.json holds the schedule as it ran, "
            "and a work budget (--budget ...tokens) gives the same run on any machine",
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
