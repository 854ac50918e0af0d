"""Token datasets: how encoded text is cut into (input_ids, labels) batches.

Labels follow the HF convention: `labels` is aligned with `input_ids` and the model shifts it, so position t
predicts token t+1. Padding and positions that predict nothing carry the label -100, which the loss ignores.

Lines mode (makemore): one example per line, framed by the boundary token at both ends, so ".emma." makes
five predictions. Stream mode (nanoGPT): one long sequence cut into windows of `block_size` tokens. When the
sequence is several documents joined by the boundary token, windows stay inside one document (a shorter
document gives a shorter, padded window; see documents.py), unless `data.cross_documents` asks for nanoGPT's
windows at any offset.

Packing (lines mode, `data.packing`, for models that declare `packs_examples`): a padded batch gives each
example a row as wide as the batch's longest, so on names close to half of its positions are padding the
model computes and throws away. A packed batch lays the same examples side by side in rows a little wider
than the longest example (`LinesDataset.pack_width`), longest first, each into the fullest row it still
fits (best-fit decreasing), each starting at its own boundary token. Its `position_ids` (R, W) restart at
0 at each example's first token (HF's convention for packed rows); the model takes its positions from them
and lets a token attend only to earlier tokens of its own example (models/attention.py `document_mask`),
so each example is computed as in a row of its own and the batch's loss is the padded batch's to
rounding. A pad token at a row's end has position 0: an example of one token that predicts nothing.
Evaluation stays padded.
Letters: B rows, T width, N examples, R packed rows, W packed width.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from lmlab.data.documents import DocumentWindows

IGNORE_INDEX = -100


def next_token_targets(labels: Tensor) -> Tensor:
    """(B, T) -> (B, T-1): what positions 0..T-2 predict. Labels align with the inputs, so position t is
    scored against label t+1 (the HF convention); the last position has nothing left to predict."""
    return labels[:, 1:]


class TokenDataset(Protocol):
    block_size: int  # longest input a model sees from this dataset

    def __len__(self) -> int: ...

    @property
    def num_predictions(self) -> int: ...

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...

    def iter_batches(self, batch_size: int, max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]: ...


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """A deterministic shuffled split of range(n) into train/val/test; a fraction of 0 gives an empty split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return {
        "train": order[n_val + n_test :],
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
    }


class PackedBatch(NamedTuple):
    """A batch of examples packed into rows (see the module's docstring)."""

    input_ids: Tensor  # (R, W)
    labels: Tensor  # (R, W): IGNORE_INDEX at each example's first token and at padding
    position_ids: Tensor  # (R, W): 0 at each example's first token (and at padding), then 1, 2, ...


def best_fit(lengths: list[int], width: int) -> tuple[list[int], list[int]]:
    """(row, offset) of each example of `lengths` (each <= width), placed longest first, each into the
    fullest row it still fits (best-fit decreasing). The rows are kept sorted by free space, so the row
    for an example is one bisection away."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    free: list[tuple[int, int]] = []  # (positions free, row), sorted
    filled: list[int] = []
    row_of, offset_of = [0] * len(lengths), [0] * len(lengths)
    for i in order:
        length = lengths[i]
        at = bisect.bisect_left(free, (length, -1))  # the row with the least room that still fits it
        if at == len(free):
            row = len(filled)
            filled.append(0)
        else:
            row = free.pop(at)[1]
        row_of[i], offset_of[i] = row, filled[row]
        filled[row] += length
        bisect.insort(free, (width - filled[row], row))
    return row_of, offset_of


def pack(input_ids: Tensor, labels: Tensor, lengths: Tensor, width: int, pad_id: int) -> PackedBatch:
    """Examples given as padded rows, input_ids and labels (N, >= max L) with their `lengths` (N,), packed
    into rows of `width` positions (trimmed to the fullest row)."""
    row, offset = (torch.tensor(v, dtype=torch.long) for v in best_fit(lengths.tolist(), width))
    num_rows = int(row.max()) + 1 if len(row) else 0
    used = int((offset + lengths).max()) if len(row) else 0
    t = torch.arange(input_ids.size(1))
    inside = t < lengths[:, None]  # (N, max L): the example's own positions
    destination = (row[:, None] * used + offset[:, None] + t)[inside]  # flat index into (R, W)
    packed_ids = torch.full((num_rows * used,), pad_id, dtype=torch.long)
    packed_labels = torch.full((num_rows * used,), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(num_rows * used, dtype=torch.long)
    packed_ids[destination] = input_ids[inside]
    packed_labels[destination] = labels[inside]
    positions[destination] = t.expand_as(inside)[inside]
    shape = (num_rows, used)
    return PackedBatch(packed_ids.view(shape), packed_labels.view(shape), positions.view(shape))


# The share of padding a packed row width may leave (LinesDataset.pack_width).
PACKED_PADDING = 0.05


class LinesDataset:
    """Framed examples held in one padded matrix; batches are trimmed to their longest example, or packed
    (`sample_packed`) when `packing` is on and the model takes packed rows."""

    def __init__(self, sequences: list[list[int]], pad_id: int, packing: bool = False):
        self.sequences = sequences
        self.pad_id = pad_id
        self.packing = packing
        self.block_size = max((len(s) for s in sequences), default=2)
        self._pack_widths: dict[int, int] = {}  # batch size -> packed row width
        self.input_ids = torch.full((len(sequences), self.block_size), pad_id, dtype=torch.long)
        self.labels = torch.full((len(sequences), self.block_size), IGNORE_INDEX, dtype=torch.long)
        self.lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids = torch.tensor(seq, dtype=torch.long)
            self.input_ids[row, : len(seq)] = ids
            self.labels[row, 1 : len(seq)] = ids[1:]  # the first token is context only

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def num_predictions(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def _rows(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        width = int(self.lengths[rows].max())
        return self.input_ids[rows, :width], self.labels[rows, :width]

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        rows = torch.randint(len(self.sequences), (batch_size,), generator=generator)
        return self._rows(rows)

    def sample_packed(self, batch_size: int, generator: torch.Generator, rank: int = 0,
                      world_size: int = 1) -> PackedBatch:
        """The examples `sample_batch(batch_size * world_size)` draws, this rank's `batch_size` of them,
        packed into rows of `pack_width(batch_size)`: the same examples, with little padding."""
        rows = torch.randint(len(self.sequences), (batch_size * world_size,), generator=generator)
        rows = rows[rank * batch_size : (rank + 1) * batch_size]
        input_ids, labels = self._rows(rows)
        return pack(input_ids, labels, self.lengths[rows], self.pack_width(batch_size), self.pad_id)

    def pack_width(self, batch_size: int) -> int:
        """The packed rows' width for batches of `batch_size` examples: the narrowest of 16 widths from the
        longest example's length to twice it at which best fit leaves at most PACKED_PADDING of the
        positions empty, on batches of this dataset's first examples (else the least padded of them).
        Narrow rows waste less attention on masked-out pairs, but rows of exactly the longest length
        hold one example each in most rows wherever the typical example is over half the longest (names)."""
        if batch_size not in self._pack_widths:
            lengths = self.lengths[: 20 * batch_size].tolist()
            chunks = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
            widths = sorted({self.block_size + round(i * self.block_size / 15) for i in range(16)})

            def padding(width: int) -> float:
                rows = sum(max(best_fit(chunk, width)[0]) + 1 for chunk in chunks)
                return 1 - sum(lengths) / (rows * width)

            shares = {width: padding(width) for width in widths}
            fitting = [width for width in widths if shares[width] <= PACKED_PADDING]
            self._pack_widths[batch_size] = fitting[0] if fitting else min(widths, key=shares.get)
        return self._pack_widths[batch_size]

    def iter_batches(self, batch_size: int, max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        seen = 0
        for start in range(0, len(self.sequences), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(self.sequences)))
            batch = self._rows(rows)
            yield batch
            seen += int((batch[1] != IGNORE_INDEX).sum())
            if max_tokens is not None and seen >= max_tokens:
                return


class StreamDataset:
    """One long token sequence; training windows start at random offsets.

    With `boundaries` (the positions of the boundary tokens that join its documents), no window crosses
    one: training windows are drawn from DocumentWindows, evaluation windows overlap inside each document.
    Without (one document, or `data.cross_documents`), windows fall anywhere, as in nanoGPT."""

    def __init__(self, ids: Tensor, block_size: int, boundaries: Tensor | None = None):
        self.ids = ids.long()
        self.block_size = block_size
        has_documents = boundaries is not None and len(boundaries) > 0
        self.documents = DocumentWindows(boundaries, len(self.ids), block_size) if has_documents else None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_predictions(self) -> int:
        return max(len(self.ids) - 1, 0)

    def _take(self, offsets: Tensor) -> Tensor:
        return self.ids[offsets]

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if self.documents is not None:
            first, length = self.documents.sample(batch_size, generator)
            return window_batch(self._take, first, length, len(self.ids))
        starts = torch.randint(len(self.ids) - self.block_size + 1, (batch_size,), generator=generator)
        windows = self.ids[starts[:, None] + torch.arange(self.block_size)]  # (B, T)
        return windows, windows.clone()

    def iter_batches(self, batch_size: int, max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Windows that overlap by one token, so every token after the first is predicted exactly once."""
        if self.documents is not None:
            yield from document_batches(self._take, self.documents, len(self.ids), batch_size, max_tokens)
            return
        yield from overlapping_windows(self._take, len(self.ids), self.block_size, batch_size, max_tokens)


def window_batch(take, first: Tensor, length: Tensor, num_tokens: int) -> tuple[Tensor, Tensor]:
    """(input_ids, labels) of windows given by their first token and length, trimmed to the longest:
    `take(offsets)` returns the (B, T) tokens at a (B, T) tensor of offsets. Padding: input 0, label -100."""
    width = int(length.max())
    offsets = first[:, None] + torch.arange(width)  # (B, T)
    inside = torch.arange(width) < length[:, None]  # (B, T)
    input_ids = torch.where(inside, take(offsets.clamp(max=num_tokens - 1)), 0)
    return input_ids, torch.where(inside, input_ids, IGNORE_INDEX)


def document_batches(take, documents: DocumentWindows, num_tokens: int, batch_size: int,
                     max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of `documents.evaluation()` windows in order; the first token of each is context only."""
    first, length = documents.evaluation()
    seen = 0
    for row in range(0, len(first), batch_size):
        input_ids, labels = window_batch(take, first[row : row + batch_size], length[row : row + batch_size],
                                         num_tokens)
        labels[:, 0] = IGNORE_INDEX
        yield input_ids, labels
        seen += int((labels != IGNORE_INDEX).sum())
        if max_tokens is not None and seen >= max_tokens:
            return


def overlapping_windows(take, num_tokens: int, block_size: int, batch_size: int,
                        max_tokens: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of windows of one token stream that overlap by one token, built by one gather per batch:
    `take(offsets)` returns the (B, T) tokens at a (B, T) tensor of offsets. The last windows are padded
    (input 0, label -100); the first token of each window is context only."""
    starts = torch.arange(0, max(num_tokens - 1, 0), block_size - 1)
    seen = 0
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        width = min(block_size, num_tokens - int(chunk[0]))  # the first window of a batch is the longest
        offsets = chunk[:, None] + torch.arange(width)  # (B, T)
        inside = offsets < num_tokens
        input_ids = torch.where(inside, take(offsets.clamp(max=num_tokens - 1)), 0)
        labels = torch.where(inside, input_ids, IGNORE_INDEX)
        labels[:, 0] = IGNORE_INDEX
        yield input_ids, labels
        seen += int((labels != IGNORE_INDEX).sum())
        if max_tokens is not None and seen >= max_tokens:
            return
