"""Health rules over the one-off probes of the model and the data (probes.py): examples coupled through the
batch in eval mode, a loss that is not the next-token loss of the labels passed (labels not shifted, padding
scored), validation examples that are training examples, and attention heads that are one-hot from the start.
"""

from __future__ import annotations

import statistics

from lmlab.inspector.finding import Finding, rule
from lmlab.inspector.loss_rules import causality_leak, not_learning, overfitting
from lmlab.inspector.rule_helpers import end_loss, finite, names_text
from lmlab.inspector.stats import InspectorStats
from lmlab.inspector.thresholds import (
    ATTN_SATURATED,
    ATTN_UNIFORM,
    COPY_SHARE,
    DUPLICATE_ROWS,
    LOSS_MISMATCH,
    PROBE_CHANGE,
    REPEATED_ROWS,
    SCORED_PADDING,
    SHARED_WINDOWS,
)


def _leak_through_the_batch(coupling: Finding, leak: Finding) -> Finding:
    return leak.reworded(
        what=leak.what + "; the change reaches them through the batch statistics (the coupling above), not "
        "through attention: a consequence, fix that first",
        fix="fix the batch coupling above; then run `lmlab inspect` again to see whether a leak remains")


@rule(priority=0, threshold="in eval mode, an example's logits move when the other rows of its batch change",
      explains={causality_leak: _leak_through_the_batch})
def eval_batch_coupling(stats: InspectorStats) -> list[Finding]:
    probe = stats.batch_coupling
    if not probe.coupled:
        return []
    return [eval_batch_coupling.finding(
        "error", None,
        f"in eval mode an example's logits changed (by up to {probe.max_change:.3g}) when the other rows of its "
        "batch changed: a layer uses batch statistics at evaluation (BatchNorm with track_running_stats=False, "
        "or a norm over the batch axis), so scores and samples depend on what else is in the batch",
        {"max_change": probe.max_change},
        "use running statistics at evaluation (BatchNorm's default track_running_stats=True, and model.eval()), "
        "or a LayerNorm, which normalises each position on its own")]


def _copying_explains(copying: Finding, consequence: Finding) -> Finding:
    return consequence.reworded(
        what=consequence.what + " — a consequence of the unshifted labels above (the model learned to copy its "
        "input, which says nothing about the next token)",
        fix="shift the labels first (above); then look again")


def _baseline_text(stats: InspectorStats) -> tuple[str, dict]:
    end, base = end_loss(stats), stats.baselines
    if end is None or base is None or not base.bigram:
        return "", {}
    if end >= 0.5 * base.bigram:
        return "", {"loss_end": round(end, 4)}
    return (f"; the training loss ended at {end:.3f}, far below what the data allows a next-token model "
            f"(counted bigram {base.bigram:.3f}, unigram {base.unigram:.3f})", {"loss_end": round(end, 4),
                                                                               "bigram": base.bigram})


@rule(priority=0, threshold=f"> {COPY_SHARE:.0%} of predictions are the position's own input token (well above "
                            "how often the data repeats a token), or the model's loss equals unshifted labels'",
      explains={overfitting: _copying_explains, not_learning: _copying_explains})
def labels_not_shifted(stats: InspectorStats) -> list[Finding]:
    probe = stats.targets
    if not probe.checked:
        return []
    copies = probe.copy_share > COPY_SHARE and probe.copy_share > probe.repeat_share + 0.3
    matches = (probe.model_loss is not None and probe.unshifted_loss is not None and probe.label_loss is not None
               and abs(probe.model_loss - probe.unshifted_loss) < _tolerance(probe.unshifted_loss)
               and abs(probe.model_loss - probe.label_loss) >= _tolerance(probe.label_loss))
    if not (copies or matches):
        return []
    text, extra = _baseline_text(stats)
    losses = ""
    if probe.model_loss is not None and probe.label_loss is not None:
        losses = (f"; its loss is {probe.model_loss:.3f}, the next-token loss of its logits on the same batch "
                  f"{probe.label_loss:.3f}")
    return [labels_not_shifted.finding(
        "error", None,
        f"position t's prediction is its own input token for {probe.copy_share:.0%} of positions (the data "
        f"repeats the previous token for {probe.repeat_share:.0%}){losses}{text}: the loss compares the logits at "
        "t with token t instead of token t+1, so the model learns to copy its input",
        {"copy_share": probe.copy_share, "repeat_share": probe.repeat_share, "model_loss": probe.model_loss,
         "label_loss": probe.label_loss, "unshifted_loss": probe.unshifted_loss, **extra},
        "score logits[:, :-1] against labels[:, 1:] (lmlab's causal_lm_loss does; labels are input_ids, the shift "
        "is the loss's job)", since=0)]


def _tolerance(loss: float) -> float:
    return max(LOSS_MISMATCH, LOSS_MISMATCH * abs(loss))


@rule(priority=1, threshold=f"the model's loss differs from its logits' next-token loss on the labels passed by "
                            f"> max({LOSS_MISMATCH}, {LOSS_MISMATCH:.0%})")
def loss_mismatch(stats: InspectorStats) -> list[Finding]:
    probe = stats.targets
    if not probe.checked or probe.model_loss is None or probe.label_loss is None:
        return []
    if abs(probe.model_loss - probe.label_loss) < _tolerance(probe.label_loss) or labels_not_shifted(stats):
        return []
    numbers = {"model_loss": probe.model_loss, "label_loss": probe.label_loss, "unmasked_loss": probe.unmasked_loss,
               "padded_share": probe.padded_share}
    unmasked = probe.unmasked_loss
    if unmasked is not None and abs(probe.model_loss - unmasked) < _tolerance(unmasked):
        return [loss_mismatch.finding(
            "error", None,
            f"the model's loss {probe.model_loss:.3f} is not the next-token loss of the labels it was given "
            f"({probe.label_loss:.3f}) but matches its logits scored against every next input token, padding "
            f"included ({probe.unmasked_loss:.3f}): {probe.padded_share:.0%} of those targets are padding after "
            "padding, which the model earns loss by predicting",
            numbers, "score the labels the trainer passes, ignoring -100 (F.cross_entropy(..., ignore_index=-100)), "
            "not targets built from input_ids", since=0)]
    return [loss_mismatch.finding(
        "error", None,
        f"the model's loss {probe.model_loss:.3f} is not the next-token loss of the labels it was given "
        f"({probe.label_loss:.3f} from its own logits on the same batch): it computes its own targets or adds "
        "terms, so the loss curve does not measure next-token prediction",
        numbers, "compute the loss from the labels argument (lmlab's causal_lm_loss), and log extra terms apart",
        since=0)]


@rule(priority=1, threshold=f"> {SCORED_PADDING:.0%} of the targets the labels score are padding after padding")
def padding_scored(stats: InspectorStats) -> list[Finding]:
    probe = stats.targets
    if not probe.checked or probe.scored_padding <= SCORED_PADDING:
        return []
    return [padding_scored.finding(
        "warning", None,
        f"{probe.scored_padding:.0%} of the targets the labels score are padding after padding (token "
        f"{probe.pad_id}): the loss rewards predicting padding, which is easy, so it falls without the model "
        "learning the text", {"scored_padding": probe.scored_padding, "pad_id": probe.pad_id},
        "give padded positions the label -100 so the loss ignores them", since=0)]


@rule(priority=2, threshold=f"> {DUPLICATE_ROWS:.0%} of validation examples are training examples, or > "
                            f"{SHARED_WINDOWS:.0%} of its 32-token runs appear in the training split")
def duplicated_examples(stats: InspectorStats) -> list[Finding]:
    probe = stats.overlap
    if not probe.checked or not probe.rows:
        return []
    row_share = probe.exact / probe.rows
    window_share = probe.shared / probe.windows if probe.windows else 0.0
    if row_share <= DUPLICATE_ROWS and window_share <= SHARED_WINDOWS:
        if row_share <= REPEATED_ROWS:
            return []
        return [duplicated_examples.finding(
            "note", None,
            f"{probe.exact:,} of {probe.rows:,} {probe.split} examples ({row_share:.0%}) also occur in the training "
            "split (a list of names repeats its common ones): the validation loss is a little optimistic",
            {"exact": probe.exact, "rows": probe.rows, "examples": probe.examples, "threshold": DUPLICATE_ROWS})]
    parts = []
    if row_share > DUPLICATE_ROWS:
        parts.append(f"{probe.exact:,} of {probe.rows:,} {probe.split} examples ({row_share:.0%}) are also training "
                     "examples")
    if window_share > SHARED_WINDOWS:
        parts.append(f"{window_share:.0%} of the {probe.split} split's {probe.window}-token runs appear verbatim in "
                     "the training split")
    return [duplicated_examples.finding(
        "warning", None,
        "; ".join(parts) + f": the {probe.split} loss then tracks the training loss and says little about "
        "generalisation (over-fitting goes unseen)",
        {"exact": probe.exact, "rows": probe.rows, "shared_windows": probe.shared, "windows": probe.windows,
         "window": probe.window, "examples": probe.examples},
        "remove the duplicates before splitting (deduplicate the lines or documents), so no example is in both "
        "splits", since=0)]


@rule(priority=3, threshold=f"an attention head's entropy at the first sample below {ATTN_SATURATED:.0%} of a "
                            "uniform map's over the same keys (one-hot from initialisation)")
def attention_saturated(stats: InspectorStats) -> list[Finding]:
    flagged = []
    for name, layer in stats.layers.items():
        if not layer.attn_entropy or not layer.attn_uniform or layer.attn_uniform[0] <= 0:
            continue
        uniform = layer.attn_uniform[0]
        heads = [h / uniform for h in finite(layer.attn_entropy[0])]
        low = [i for i, h in enumerate(heads) if h < ATTN_SATURATED]
        if low and len(low) * 2 >= len(heads):  # most of the layer's heads, not one specialised head
            flagged.append((name, statistics.fmean(heads), low, len(heads), layer.attn_entropy[0]))
    if not flagged:
        return []
    names = [n for n, *_ in flagged]
    name, share, low, total, entropy = min(flagged, key=lambda f: f[1])
    return [attention_saturated.finding(
        "warning", names[0],
        f"attention is nearly one-hot from initialisation in {names_text(names)}: at the first sample {len(low)} "
        f"of {total} heads of {name} have {share:.0%} of the entropy a uniform map over the same keys has "
        f"(mean {statistics.fmean(entropy):.2f} nats): the softmax is saturated, so its gradient is tiny and "
        "the heads cannot learn where to look",
        {"layers": names, "worst_layer": name, "entropy_share": round(share, 4), "threshold": ATTN_SATURATED},
        "divide the attention scores by sqrt(head_size) before the softmax (q @ k^T / sqrt(hs)), and keep the "
        "q/k weights at the usual init scale", since=0)]


@rule(priority=99)
def attention_uniform(stats: InspectorStats) -> list[Finding]:
    """A note: heads still at a uniform map after a long run learned no pattern (fine early in training)."""
    if (stats.steps or 0) < 500:
        return []
    flat = []
    for name, layer in stats.layers.items():
        if len(layer.attn_entropy) >= 3 and layer.attn_uniform and layer.attn_uniform[-1] > 0:
            heads = [h / layer.attn_uniform[-1] for h in finite(layer.attn_entropy[-1])]
            if heads and min(heads) > ATTN_UNIFORM:
                flat.append(name)
    if not flat:
        return []
    return [attention_uniform.finding(
        "note", flat[0], f"every head of {names_text(flat)} is still within {1 - ATTN_UNIFORM:.0%} of a uniform "
        "map at the end: they average their context instead of picking from it",
        {"layers": flat, "threshold": ATTN_UNIFORM})]


# -- invariants of every causal next-token model (probes.py: causality_probe's own_change, invariants_probe) --


def _moved(change: float | None, stats: InspectorStats) -> bool:
    return change is not None and change > PROBE_CHANGE * stats.invariants.scale


def _noise_explains(noise: Finding, consequence: Finding) -> Finding:
    return consequence.reworded(
        what=consequence.what + "; the same input already gives different logits twice in eval mode (above): "
        "the change is that randomness, not this fault — a consequence, fix that first",
        fix="fix the randomness in eval mode above; then run `lmlab inspect` again to see whether this remains")


@rule(priority=0, threshold="in eval mode, the same batch twice gives logits that differ by more than 1e-4 of "
                            "their scale", explains={causality_leak: _noise_explains,
                                                     eval_batch_coupling: _noise_explains})
def eval_not_deterministic(stats: InspectorStats) -> list[Finding]:
    probe = stats.invariants
    if not probe.checked or not _moved(probe.repeat_change, stats):
        return []
    return [eval_not_deterministic.finding(
        "error", None,
        f"in eval mode the same batch run twice gave logits that differ by up to {probe.repeat_change:.3g}: "
        "something random stays on at evaluation (dropout called as F.dropout(x, p) without "
        "training=self.training, or noise added in forward), so validation losses and greedy samples change "
        "from one call to the next", {"repeat_change": probe.repeat_change, "scale": probe.scale},
        "use nn.Dropout modules (model.eval() turns them off) or pass training=self.training to F.dropout; add "
        "noise only when self.training", since=0)]


@rule(priority=0, threshold="changing token t leaves position t's logits unchanged (within 1e-4 of their scale) "
                            "for some position t")
def newest_token_ignored(stats: InspectorStats) -> list[Finding]:
    probe = stats.causality
    if not probe.checked or probe.own_change is None or _moved(probe.own_change, stats) or probe.leak:
        return []
    if stats.invariants.checked and _moved(stats.invariants.repeat_change, stats):
        return []
    return [newest_token_ignored.finding(
        "error", None,
        f"changing token t did not change the logits at position t (the smallest change over positions is "
        f"{probe.own_change:.3g}): the prediction of token t+1 ignores token t, the most recent and most "
        "informative one — the input is shifted one place too far, or the token's embedding never reaches the "
        "output", {"own_change": probe.own_change, "length": probe.length},
        "feed input_ids unshifted (position t reads tokens 0..t; the loss, not the input, does the shift) and "
        "check that the embedding's output reaches the head", since=0)]


@rule(priority=1, threshold="the first half of a sequence run alone gives logits that differ from the same "
                            "positions inside the whole by more than 1e-4 of their scale")
def prefix_mismatch(stats: InspectorStats) -> list[Finding]:
    probe = stats.invariants
    if not probe.checked or not _moved(probe.prefix_change, stats) or stats.causality.leak:
        return []  # a leak from the future changes the prefix too: causality_leak names that
    if _moved(probe.repeat_change, stats):
        return []
    return [prefix_mismatch.finding(
        "error", None,
        f"the logits of the first half of a sequence run alone differ from the same positions inside the whole "
        f"sequence (by up to {probe.prefix_change:.3g}), though no later token leaks into them: what the model "
        "computes at a position depends on how long its input is, so generating from a short prompt is not what "
        "it was trained on (positions counted from the end, a mask or a scale sized by the input's length)",
        {"prefix_change": probe.prefix_change, "scale": probe.scale},
        "number positions from the start (torch.arange(T)), and cut masks and tables to the input's own length "
        "from the start ([:T, :T]), so position t sees the same thing whatever follows", since=0)]


@rule(priority=0, threshold="every row of the model's output is in [0, 1] and sums to 1 (probabilities, not "
                            "logits)")
def returns_probabilities(stats: InspectorStats) -> list[Finding]:
    if not stats.invariants.checked or not stats.invariants.probabilities:
        return []
    return [returns_probabilities.finding(
        "error", None,
        "the model returns probabilities (every row in [0, 1], summing to 1), not logits: cross-entropy applies "
        "its own softmax on top, so no prediction can be confident, the loss cannot fall far below ln V and the "
        "gradients are tiny", {},
        "return the scores before the softmax (the logits); F.cross_entropy and sampling apply the softmax "
        "themselves", since=0)]
