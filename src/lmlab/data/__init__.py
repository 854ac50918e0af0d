"""Data: where text comes from and how it is cut into training examples."""

from lmlab.data.datasets import LinesDataset, StreamDataset, TokenDataset, split_indices
from lmlab.data.sources import EMBEDDED, Corpus, load_corpus, read_text_file

__all__ = [
    "EMBEDDED",
    "Corpus",
    "LinesDataset",
    "StreamDataset",
    "TokenDataset",
    "load_corpus",
    "read_text_file",
    "split_indices",
]
