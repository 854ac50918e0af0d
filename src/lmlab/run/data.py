"""A run's data: load the source, split it deterministically, fit the tokenizer on the training split (or
take the run's own, on resume) and encode every split. A folder made by `lmlab data prepare` is opened as
memory-mapped shards instead.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from lmlab.config import DataConfig
from lmlab.data import LinesDataset, StreamDataset, TokenDataset, load_corpus, split_indices
from lmlab.data.documents import split_documents
from lmlab.data.records import split_field
from lmlab.data.shards import is_prepared, open_shards
from lmlab.data.sources import EMBEDDED
from lmlab.errors import CheckpointError, ConfigError, DataError, TokenizerError
from lmlab.tokenizers import CharTokenizer, Tokenizer, encode_documents, fit_tokenizer, load_tokenizer, tokenizer_kind

log = logging.getLogger(__name__)


@dataclass
class RunData:
    tokenizer: Tokenizer
    mode: str
    splits: dict[str, TokenDataset]
    texts: dict[str, list[str]]  # lines mode: the raw examples of each split (for sample novelty)


def _lines(documents: list[str], max_chars: int) -> list[str]:
    lines = [line.rstrip("\r") for doc in documents for line in doc.split("\n")]
    lines = [line for line in lines if line.strip()]
    too_long = [i for i, line in enumerate(lines) if len(line) > max_chars]
    if too_long:
        raise DataError(
            f"line {too_long[0] + 1} has {len(lines[too_long[0]]):,} characters, over data.max_line_chars="
            f"{max_chars}; use --mode stream for running text, or raise data.max_line_chars"
        )
    return lines


def _encode_known(tokenizer: Tokenizer, text: str, add_boundary: bool = False) -> list[int] | None:
    try:
        return tokenizer(text, add_boundary=add_boundary).input_ids
    except TokenizerError:
        return None


def prepare_data(config: DataConfig, tokenizer: Tokenizer | None = None) -> RunData:
    """Load the source, split it deterministically, fit the tokenizer on the training split (unless one is
    given, as on resume) and encode every split. A folder made by `lmlab data prepare` is read as is.

    Given a tokenizer, the source is a run's (its config.json named it, and a config.json may name any file):
    an error then quotes nothing of the file's content."""
    try:
        return _prepare_data(config, tokenizer)
    except DataError as err:
        if tokenizer is None or err.plain is None:
            raise
        raise DataError(f"{err.plain} (the data the run's config.json names)") from None


def _prepare_data(config: DataConfig, tokenizer: Tokenizer | None) -> RunData:
    if is_prepared(config.source):
        return _prepared_folder(config, tokenizer)
    corpus = load_corpus(config.source, config.encoding, config.text_field)
    mode = config.mode or corpus.default_mode
    if mode == "lines":
        lines = _lines(corpus.documents, config.max_line_chars)
        if len(lines) < 2:
            raise DataError(f"{config.source}: lines mode needs at least 2 examples, found {len(lines)}")
        index = split_indices(len(lines), config.val_fraction, config.test_fraction, config.split_seed)
        texts = {name: [lines[i] for i in rows] for name, rows in index.items()}
        tokenizer = tokenizer or fit_tokenizer(config.tokenizer, texts["train"], config.vocab_size)
        splits: dict[str, TokenDataset] = {}
        for name, examples in texts.items():
            encoded = [_encode_known(tokenizer, t, add_boundary=True) for t in examples]
            dropped = sum(e is None for e in encoded)
            if dropped and name == "train":
                raise CheckpointError(
                    f"the tokenizer does not cover {dropped} training example(s): this data does not match "
                    "the run's tokenizer"
                )
            if dropped:
                log.warning("%s: %d example(s) with characters unseen in training were left out", name, dropped)
            splits[name] = LinesDataset([e + [tokenizer.boundary_id] for e in encoded if e is not None],
                                        pad_id=tokenizer.boundary_id, packing=config.packing)
        return RunData(tokenizer, mode, splits, texts)

    # Documents stay in order and apart: each split's pieces are encoded one by one and joined by the boundary
    # token, and its windows stay inside one document unless data.cross_documents (documents.py).
    parts = split_documents([d for d in corpus.documents if d], config.val_fraction, config.test_fraction)
    train_chars = sum(len(p) for p in parts["train"]) + max(len(parts["train"]) - 1, 0)
    if train_chars <= config.block_size:  # no tokenizer makes more tokens than characters
        raise DataError(
            f"{config.source}: the training split has {train_chars} characters, not more than the "
            f"context of {config.block_size}; use more text or a smaller data.block_size"
        )
    tokenizer = tokenizer or fit_tokenizer(config.tokenizer, [p for p in parts["train"] if p], config.vocab_size)
    splits = {}
    for name, pieces in parts.items():
        known = pieces
        if name != "train" and isinstance(tokenizer, CharTokenizer):  # word/bpe encode anything
            known = ["".join(c for c in p if c in tokenizer.char_to_id) for p in pieces]
        left_out = sum(len(p) for p in pieces) - sum(len(p) for p in known)
        if left_out:
            log.warning("%s: %d character(s) unseen in training were left out", name, left_out)
        try:  # in chunks, into one array: a list of Python ints would take ~20x the text's size
            ids, boundaries = encode_documents(tokenizer, known)
        except TokenizerError:
            raise CheckpointError("the training text has characters the run's tokenizer lacks: data mismatch") from None
        splits[name] = StreamDataset(ids, config.block_size, None if config.cross_documents else boundaries)
    if len(splits["train"]) <= config.block_size:
        raise DataError(
            f"{config.source}: the training split has {len(splits['train'])} tokens, not more than the context "
            f"of {config.block_size}; use more text or a smaller data.block_size"
        )
    return RunData(tokenizer, mode, splits, {})


def _prepared_folder(config: DataConfig, tokenizer: Tokenizer | None) -> RunData:
    if config.mode == "lines":
        raise ConfigError(f"{config.source} holds prepared token shards, which train in stream mode only")
    own = load_tokenizer(Path(config.source) / "tokenizer.json")
    _, splits = open_shards(config.source, config.block_size, vocab_size=own.vocab_size,
                            cross_documents=config.cross_documents)
    if tokenizer is not None and tokenizer != own:
        raise CheckpointError(f"{config.source}: its tokenizer differs from the run's; data mismatch")
    if len(splits["train"]) <= config.block_size:
        raise DataError(f"{config.source}: the training split has {len(splits['train'])} tokens, not more than "
                        f"the context of {config.block_size}; use a smaller data.block_size")
    return RunData(own, "stream", splits, {})


def absolute_source(source: str) -> str:
    """A data source that is a path, made absolute (a field after a colon kept), so a run's config.json
    names its data wherever the run is read from; an embedded data set's name is kept as it is."""
    if source in EMBEDDED:
        return source
    path, field = split_field(source)
    full = Path(path).expanduser()
    if not full.exists():
        return source
    return str(full.resolve()) + (f":{field}" if field else "")


def resolved_data_config(config: DataConfig, data: RunData) -> DataConfig:
    """The data config as the run really used it (the source as an absolute path, the mode and, for a
    prepared folder, its tokenizer)."""
    kind = tokenizer_kind(data.tokenizer)
    vocab_size = 0 if kind == "char" else data.tokenizer.vocab_size
    return dataclasses.replace(config, source=absolute_source(config.source), mode=data.mode, tokenizer=kind,
                               vocab_size=vocab_size)


def with_block_size(data: RunData, block_size: int) -> RunData:
    """Stream-mode data cut into windows of `block_size` tokens instead: the same tokens and splits (shared,
    not copied). A stream dataset draws and evaluates its windows from its block_size alone."""
    if data.mode != "stream":
        raise ConfigError("only stream-mode data is cut into windows of data.block_size")
    splits = {}
    for name, split in data.splits.items():
        splits[name] = copy.copy(split)
        splits[name].block_size = block_size
    return dataclasses.replace(data, splits=splits)


def context_length(data: RunData) -> int:
    """The longest window any split holds: the context the model is built for."""
    return max(ds.block_size for ds in data.splits.values())
