"""Token datasets: how encoded text is cut into (input_ids, labels) batches.

Labels follow the HF convention: `labels` is aligned with `input_ids` and the model shifts it, so position t
predicts token t+1. Padding and positions that predict nothing carry the label -100, which the loss ignores.

Lines mode (makemore): one example per line, framed by the boundary token at both ends, so ".emma." makes
five predictions. Stream mode (nanoGPT): one long sequence cut into windows of `block_size` tokens. When the
sequence is several documents joined by the boundary token, windows stay inside one document (a shorter
document gives a shorter, padded window; see documents.py), unless `data.cross_documents` asks for nanoGPT's
windows at any offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

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


class LinesDataset:
    """Framed examples packed into one padded matrix; batches are trimmed to their longest example."""

    def __init__(self, sequences: list[list[int]], pad_id: int):
        self.sequences = sequences
        self.block_size = max((len(s) for s in sequences), default=2)
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
