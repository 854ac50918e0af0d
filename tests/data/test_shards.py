"""Prepared token shards: the same tokens and batches as in-memory stream data, flat files, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmlab.config import DataConfig
from lmlab.data.shard_writer import PrepareOptions, prepare_shards
from lmlab.data.shards import ShardDataset, open_shards, shard_dtype
from lmlab.errors import DataError
from lmlab.run.data import prepare_data

TEXT = "".join(f"line {i}: the quick brown fox, {i * 7 % 13} jumps.\n" for i in range(300))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.mark.parametrize(("kind", "vocab"), [("char", 0), ("word", 40), ("bpe", 300)])
def test_shards_hold_the_same_tokens_and_batches_as_stream_data(tmp_path, corpus, kind, vocab):
    meta = prepare_shards(PrepareOptions(source=str(corpus), out=str(tmp_path / "prep"), tokenizer=kind,
                                         vocab_size=vocab))
    assert meta["dtype"] == "uint16" and meta["encode_mb_per_s"] > 0
    config = DataConfig(source=str(corpus), mode="stream", tokenizer=kind, vocab_size=vocab, block_size=16)
    memory = prepare_data(config)
    _, shards = open_shards(tmp_path / "prep", block_size=16)
    for split in ("train", "val", "test"):
        on_disk = np.fromfile(tmp_path / "prep" / f"{split}.bin", dtype=np.uint16)
        assert on_disk.tolist() == memory.splits[split].ids.tolist()
        assert shards[split].num_predictions == memory.splits[split].num_predictions
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        a, b = shards["train"].sample_batch(4, g1), memory.splits["train"].sample_batch(4, g2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].dtype == torch.long
    for a, b in zip(shards["val"].iter_batches(5), memory.splits["val"].iter_batches(5), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # training on the folder resolves to the same run as on the source
    folder = prepare_data(DataConfig(source=str(tmp_path / "prep"), block_size=16))
    assert isinstance(folder.splits["train"], ShardDataset) and folder.tokenizer == memory.tokenizer


def test_wide_vocabularies_use_uint32():
    assert shard_dtype(65536) == np.uint16 and shard_dtype(65537) == np.uint32


def test_truncated_shard_is_a_data_error(tmp_path, corpus):
    prepare_shards(PrepareOptions(source=str(corpus), out=str(tmp_path / "prep")))
    train = tmp_path / "prep" / "train.bin"
    train.write_bytes(train.read_bytes()[:-2])
    with pytest.raises(DataError, match="train.bin"):
        open_shards(tmp_path / "prep", 8)
    meta = json.loads((tmp_path / "prep" / "meta.json").read_text())
    (tmp_path / "prep" / "meta.json").write_text(json.dumps({**meta, "splits": 3}))
    with pytest.raises(DataError, match="meta.json"):
        open_shards(tmp_path / "prep", 8)


def test_cli_prepare_then_train(tmp_path, corpus, cli):
    done = cli("data", "prepare", str(corpus), "--tokenizer", "word", "--vocab-size", "50", "--out",
               str(tmp_path / "prep"), "--test-fraction", "0")
    assert done.returncode == 0, done.stderr
    assert "MB/s" in done.stdout and "word tokenizer, vocab 50" in done.stdout
    done = cli("train", "--data", str(tmp_path / "prep"), "--max-steps", "3", "--set", "data.block_size=16",
               "--set", "train.eval_interval=3", "--out", str(tmp_path / "run"), "--no-inspect")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["tokenizer"] == "word" and saved["data"]["vocab_size"] == 50
    bad = cli("data", "prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    # a vocabulary size without a tokenizer that takes one meant bpe or word: refused, not a char run
    bad = cli("data", "prepare", str(corpus), "--vocab-size", "8192", "--out", str(tmp_path / "y"))
    assert bad.returncode == 2 and "--vocab-size applies to the word and bpe tokenizers" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "y").exists()


def test_fingerprint_tells_prepared_corpora_apart(tmp_path, corpus):
    from lmlab.training.checkpoint.format import data_fingerprint

    prepare_shards(PrepareOptions(source=str(corpus), out=str(tmp_path / "a")))
    other = tmp_path / "other.txt"
    other.write_text(TEXT.replace("fox", "cat"), encoding="utf-8")
    prepare_shards(PrepareOptions(source=str(other), out=str(tmp_path / "b")))
    a, b = (open_shards(tmp_path / name, 8)[1]["train"] for name in ("a", "b"))
    assert data_fingerprint(a) == open_shards(tmp_path / "a", 16)[1]["train"].fingerprint
    assert data_fingerprint(a) != data_fingerprint(b)


@pytest.mark.parametrize(("kind", "vocab"), [("char", 0), ("word", 40), ("bpe", 300)])
def test_a_file_read_in_small_pieces_prepares_the_ids_of_the_whole(tmp_path, monkeypatch, kind, vocab):
    import lmlab.data.shard_writer as writer

    # every piece boundary, block boundary and split boundary falls inside the text many times over
    monkeypatch.setattr(writer, "PIECE_CHARS", 64)
    monkeypatch.setattr(writer, "BLOCK_BYTES", 100)
    path = tmp_path / "c.txt"
    path.write_text(TEXT.replace("fox", "föx ☃"), encoding="utf-8")
    meta = prepare_shards(PrepareOptions(source=str(path), out=str(tmp_path / "prep"), tokenizer=kind,
                                         vocab_size=vocab, val_fraction=0.15, test_fraction=0.05))
    memory = prepare_data(DataConfig(source=str(path), mode="stream", tokenizer=kind, vocab_size=vocab,
                                     block_size=16, val_fraction=0.15, test_fraction=0.05))
    for split in ("train", "val", "test"):
        on_disk = np.fromfile(tmp_path / "prep" / f"{split}.bin", dtype=np.uint16)
        assert on_disk.tolist() == memory.splits[split].ids.tolist() and len(on_disk) > 100
    assert sum(s["characters"] for s in meta["splits"].values()) == len(path.read_text(encoding="utf-8"))
    assert meta["megabytes"] == round(path.stat().st_size / 1e6, 3)
    folder = prepare_data(DataConfig(source=str(tmp_path / "prep"), block_size=16))
    assert folder.tokenizer == memory.tokenizer
