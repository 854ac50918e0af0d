"""The thresholds the health rules judge against (each rule says its own in words, for the report).

Thresholds come from Karpathy's lecture 3 (makemore part 3, see REFERENCES.md): healthy tanh layers are
1.7-2.8 % saturated (|t| > 0.97), the update:data ratio sits near 1e-3 (log10 = -3), a well-initialised
27-way model starts at ln 27 = 3.30. Each threshold is set well away from those healthy figures, so a
warning means something is clearly off, not merely unusual.
"""

from __future__ import annotations

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
COUPLING = 1e-4  # eval-mode logits moved by more than this share of their scale: examples are coupled
COPY_SHARE = 0.5  # predictions equal to their own input token, when the data repeats far less often
LOSS_MISMATCH = 0.05  # nats (or 5 % if larger) between the model's loss and its logits' next-token loss
SCORED_PADDING = 0.01  # padding-after-padding targets the labels score
DUPLICATE_ROWS = 0.25  # validation examples that are also training examples (a split made after copying)
REPEATED_ROWS = 0.05  # a note below DUPLICATE_ROWS: a list of names repeats its common names
SHARED_WINDOWS = 0.2  # validation windows (OVERLAP_WINDOW tokens) found verbatim in the training split
ATTN_SATURATED = 0.25  # a head's entropy at the first sample below this share of a uniform map's: one-hot
ATTN_UNIFORM = 0.98  # a head still this close to a uniform map at the end of a long run learned no pattern
DECAY_SHRINK = 2.0  # weights and activations both this many times smaller than at their peak
PROBE_CHANGE = 1e-4  # an eval-mode probe's logits moved by more than this share of their scale: not float noise
LEARNED_MARGIN = 0.02  # nats (or 2 % if larger): a final loss not this far below the counted bigram learned nothing
EARLY_WINDOW = 0.1  # the first 10 % of a run (and its warm-up): where a loss spike is the rate's first steps
VANISHED = 1e-3  # the largest activation gradient of a stack, per token of the batch: below it, they vanished
