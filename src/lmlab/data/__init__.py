"""Data: where text comes from and how it is cut into training examples."""

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


def __getattr__(name: str):
    # Imported on first use: the datasets need torch, and `lmlab COMMAND --help` reads EMBEDDED from
    # data.sources (which imports this package first) without it.
    if name in ("LinesDataset", "StreamDataset", "TokenDataset", "split_indices"):
        from lmlab.data import datasets

        return getattr(datasets, name)
    if name in ("EMBEDDED", "Corpus", "load_corpus", "read_text_file"):
        from lmlab.data import sources

        return getattr(sources, name)
    raise AttributeError(f"module 'lmlab.data' has no attribute {name!r}")
