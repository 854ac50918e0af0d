"""Documents in stream mode: how several documents are split into train/val/test, and where windows fall in
a token stream whose documents are joined by the boundary token, so that none crosses from one to the next.

A split's stream is its documents' ids joined by the boundary token: `d0 <b> d1 <b> d2`. Document i's
*segment* runs from the boundary before it (its first context; the split's first token for the first
document) to the boundary after it (its last target; the split's last token for the last one). Neighbouring
segments share that one token, as evaluation windows share one token, so every token after the first is a
target of exactly one segment, and a model learns where a document ends without ever seeing the next
document's text through the boundary.

Letters: B rows, W window width, K = block_size - 1 targets a full window holds.
"""

from __future__ import annotations

import bisect
import itertools

import torch
from torch import Tensor


def split_documents(documents: list[str], val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    """Each split's pieces of text, in order, a boundary token to go between two neighbours. The cut is by
    character position in the documents laid end to end with one character between two (the newline that
    joined them before boundary tokens did), so one document splits exactly as its text always has, and the
    document a cut falls in continues in the next split. A cut on that joining character gives an empty
    piece, which keeps the boundary: a split may begin or end with it."""
    if not documents:
        return {"train": [], "val": [], "test": []}
    starts = list(itertools.accumulate((len(d) + 1 for d in documents[:-1]), initial=0))
    total = starts[-1] + len(documents[-1])
    n_val, n_test = int(total * val_fraction), int(total * test_fraction)
    n_train = total - n_val - n_test
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, total)}
    return {name: _pieces(documents, starts, a, b) for name, (a, b) in cuts.items()}


def _pieces(documents: list[str], starts: list[int], a: int, b: int) -> list[str]:
    """The pieces of characters [a, b); document i holds [starts[i], starts[i] + len) and the joining
    character right after it."""
    if a >= b:
        return []
    first, last = bisect.bisect_right(starts, a) - 1, bisect.bisect_right(starts, b - 1) - 1
    pieces = [documents[i][max(a - starts[i], 0) : b - starts[i]] for i in range(first, last + 1)]
    if b - 1 == starts[last] + len(documents[last]):  # the split ends on the joining character
        pieces.append("")
    return pieces


class DocumentWindows:
    """Windows of at most `block_size` tokens over a stream of `num_tokens` tokens whose documents are joined
    by boundary tokens at `boundaries` (sorted positions), none crossing a boundary; the offsets are
    computed once from the boundaries, so a batch costs a few tensor operations, not a loop per token.

    Training windows are unbiased over targets: a segment that fits in one window (L <= block_size tokens)
    is taken whole, with weight K; a longer one gives a window of B = block_size tokens whose first token
    may lie up to B - 2 before the segment or end up to B - 2 after it (L + B - 3 equally likely places,
    each holding at least one target), cut to the segment. Every target then lies in exactly K of the
    places of its segment, and every place weighs one, so every target of the stream is equally likely
    to be in a sampled window (tests/data/test_stream_documents.py counts it exactly). The cost: a window cut
    at a document's edge is shorter and padded, about 2K/L of the windows drawn from a document of L
    tokens. Windows are left-aligned (padding on the right, where no real position attends to it)."""

    def __init__(self, boundaries: Tensor, num_tokens: int, block_size: int):
        edges = boundaries.long()
        starts = torch.cat([torch.zeros(1, dtype=torch.long), edges])
        ends = torch.cat([edges + 1, torch.tensor([num_tokens], dtype=torch.long)])
        keep = ends - starts >= 2  # a boundary at the very start or end of a split makes a 1-token segment
        self.starts, self.lengths = starts[keep], (ends - starts)[keep]
        self.block_size = block_size
        k = block_size - 1
        self.weights = torch.where(self.lengths > block_size, self.lengths + block_size - 3, k)
        self.cumulative = self.weights.cumsum(0)

    @property
    def num_places(self) -> int:
        """How many equally likely training windows there are (the draws are ranks in range(num_places))."""
        return int(self.cumulative[-1]) if len(self.cumulative) else 0

    def at(self, ranks: Tensor) -> tuple[Tensor, Tensor]:
        """(first token, length) of the training windows of the given ranks, in range(num_places)."""
        segment = torch.searchsorted(self.cumulative, ranks, right=True)
        place = ranks - (self.cumulative[segment] - self.weights[segment])
        length = self.lengths[segment]
        first = torch.where(length > self.block_size, place - (self.block_size - 2), 0)  # may be before it
        low, high = first.clamp(min=0), torch.minimum(first + self.block_size, length)
        return self.starts[segment] + low, high - low

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        ranks = torch.randint(self.num_places, (batch_size,), generator=generator)
        return self.at(ranks)

    def evaluation(self) -> tuple[Tensor, Tensor]:
        """(first token, length) of windows that overlap by one token inside each segment, in stream order:
        every target once, its context never reaching past its document's boundary."""
        k = self.block_size - 1
        counts = (self.lengths - 1 + k - 1) // k  # ceil(targets / K) windows per segment
        segment = torch.repeat_interleave(torch.arange(len(counts)), counts)
        before = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        first = self.starts[segment] + (torch.arange(len(segment)) - before) * k
        length = torch.minimum(torch.full_like(first, self.block_size),
                               self.starts[segment] + self.lengths[segment] - first)
        return first, length

