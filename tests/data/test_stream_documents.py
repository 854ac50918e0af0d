"""Stream mode over several documents: joined by the boundary token, windows inside one document unless
data.cross_documents (data/documents.py), the same in memory and in prepared shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmlab.config import DataConfig, parse_set_args
from lmlab.data.datasets import IGNORE_INDEX, StreamDataset
from lmlab.data.documents import split_documents
from lmlab.data.shard_writer import PrepareOptions, prepare_shards
from lmlab.data.shards import ShardDataset, open_shards
from lmlab.errors import DataError
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.tokenizers import HFTokenizer, encode_documents, encode_to_tensor, fit_tokenizer
from lmlab.training.scoring import mean_nll
from lmlab.training.trainer import Trainer

DOCS = [
    "first file: a short one.\n",
    "second file, longer: " + "the fox jumps over the dog. " * 12 + "\n",
    "third\nfile\n",
    "fourth file: " + "pack my box with five dozen jugs. " * 9,
    "fifth: <|endoftext|> spelled out is text, not the boundary\n",
]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    for i, doc in enumerate(DOCS):
        (root / f"{i}.txt").write_text(doc, encoding="utf-8")
    return root


def _random_stream(seed: int, num_docs: int, longest: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """ids = positions (so a window shows where it lies), boundaries after documents of random lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, longest, (num_docs,), generator=g).tolist()
    boundaries, pos = [], 0
    for length in lengths[:-1]:
        pos += length
        boundaries.append(pos)
        pos += 1
    n = pos + lengths[-1]
    return torch.arange(n), torch.tensor(boundaries), boundaries


def _crosses(first: int, last: int, boundaries: list[int]) -> bool:
    """Whether tokens first..last hold a boundary anywhere but as first context or last target."""
    return any(first < b < last for b in boundaries)


@pytest.mark.parametrize("block_size", [2, 5, 16])
def test_training_windows_stay_inside_documents_and_cover_every_target_equally(block_size):
    ids, tensor, boundaries = _random_stream(0, 12, 40)
    ds = StreamDataset(ids, block_size, tensor)
    places = ds.documents.num_places
    first, length = ds.documents.at(torch.arange(places))  # every window a draw can give, once
    coverage = np.zeros(len(ids), dtype=np.int64)
    for f, n in zip(first.tolist(), length.tolist(), strict=True):
        assert 2 <= n <= block_size and not _crosses(f, f + n - 1, boundaries)
        coverage[f + 1 : f + n] += 1
    assert (coverage[1:] == block_size - 1).all() and coverage[0] == 0  # unbiased: each target equally often
    x, y = ds.sample_batch(64, torch.Generator().manual_seed(1))
    assert x.shape[0] == 64 and x.shape[1] <= block_size
    for row_x, row_y in zip(x, y, strict=True):
        valid = row_y != IGNORE_INDEX
        n = int(valid.sum())
        assert valid[:n].all() and not valid[n:].any() and (row_x[n:] == 0).all()  # padded on the right
        tokens = row_x[:n].tolist()
        assert tokens == list(range(tokens[0], tokens[0] + n)) and not _crosses(tokens[0], tokens[-1], boundaries)


def test_evaluation_scores_every_target_once_inside_its_document():
    ids, tensor, boundaries = _random_stream(2, 15, 30)
    ds = StreamDataset(ids, 8, tensor)
    scored = []
    for x, y in ds.iter_batches(batch_size=3):
        for row_x, row_y in zip(x, y, strict=True):
            targets = row_y[row_y != IGNORE_INDEX].tolist()
            scored += targets
            assert not _crosses(int(row_x[0]), targets[-1], boundaries)
    assert sorted(scored) == scored == list(range(1, len(ids))) == list(range(1, ds.num_predictions + 1))


def test_evaluation_nll_equals_a_direct_per_document_computation():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    docs = [torch.randint(1, 11, (int(n),), generator=g).tolist() for n in (3, 20, 1, 9, 31, 6)]
    ids, boundaries = [], []
    for doc in docs:
        if ids:
            boundaries.append(len(ids))
            ids.append(0)
        ids += doc
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()
    ds = StreamDataset(torch.tensor(ids), 8, torch.tensor(boundaries))
    mean, count = mean_nll(model, ds, batch_size=4)
    total, expected_count = 0.0, 0
    with torch.no_grad():
        for i, doc in enumerate(docs):  # the boundary before (context) and after (the last target)
            segment = ([0] if i else []) + doc + ([0] if i < len(docs) - 1 else [])
            for start in range(0, len(segment) - 1, 7):
                window = torch.tensor(segment[start : start + 8])
                logits = model(window[None]).logits[0, :-1]
                total += float(F.cross_entropy(logits, window[1:], reduction="sum"))
                expected_count += len(window) - 1
    assert count == expected_count == len(ids) - 1
    assert mean * count == pytest.approx(total, rel=1e-5)
    crossing, _ = mean_nll(model, StreamDataset(torch.tensor(ids), 8), batch_size=4)
    assert abs(crossing * count - total) > 1e-3  # the test tells the two apart


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "hf"])
def test_documents_are_joined_by_the_boundary_token(kind):
    tokenizer = fit_tokenizer("bpe" if kind == "hf" else kind, DOCS, 300 if kind in ("bpe", "hf") else 0)
    if kind == "hf":
        tokenizer = HFTokenizer(tokenizer.hf)
    ids, boundaries = encode_documents(tokenizer, DOCS, chunk_chars=50)
    expected, positions = [], []
    for doc in DOCS:
        if expected:
            positions.append(len(expected))
            expected.append(tokenizer.boundary_id)
        expected += tokenizer(doc).input_ids
    assert ids.tolist() == expected and boundaries.tolist() == positions
    one, none = encode_documents(tokenizer, [DOCS[1]])
    assert torch.equal(one, encode_to_tensor(tokenizer, DOCS[1])) and len(none) == 0


def test_one_document_splits_and_samples_as_before(tmp_path):
    text = "".join(f"line {i}: some running text.\n" for i in range(60))
    path = tmp_path / "one.txt"
    path.write_text(text, encoding="utf-8")
    n_val, n_test = int(len(text) * 0.1), int(len(text) * 0.2)
    n_train = len(text) - n_val - n_test
    assert split_documents([text], 0.1, 0.2) == {"train": [text[:n_train]], "val": [text[n_train : n_train + n_val]],
                                                 "test": [text[n_train + n_val :]]}
    data = prepare_data(DataConfig(source=str(path), mode="stream", block_size=16, test_fraction=0.2))
    train = data.splits["train"]
    assert train.documents is None and torch.equal(train.ids, encode_to_tensor(data.tokenizer, text[:n_train]))
    starts = torch.randint(len(train.ids) - 15, (4,), generator=torch.Generator().manual_seed(7))
    x, y = train.sample_batch(4, torch.Generator().manual_seed(7))
    assert torch.equal(x, train.ids[starts[:, None] + torch.arange(16)]) and torch.equal(x, y)


def test_a_folder_keeps_three_splits_and_cross_documents_is_the_joined_stream(folder):
    apart = prepare_data(DataConfig(source=str(folder), block_size=16, val_fraction=0.2, test_fraction=0.2))
    joined = prepare_data(DataConfig(source=str(folder), block_size=16, val_fraction=0.2, test_fraction=0.2,
                                     cross_documents=True))
    assert apart.mode == "stream" and all(len(s) > 16 for s in apart.splits.values())
    train = apart.splits["train"]
    assert train.documents is not None and joined.splits["train"].documents is None
    for name in ("train", "val", "test"):
        assert torch.equal(apart.splits[name].ids, joined.splits[name].ids)
    boundary = apart.tokenizer.boundary_id
    assert (train.ids[train.documents.starts[1:]] == boundary).all()  # a token, not the text <|endoftext|>
    stream = joined.splits["train"]  # nanoGPT: random offsets anywhere, boundary tokens inside windows
    starts = torch.randint(len(stream.ids) - 15, (64,), generator=torch.Generator().manual_seed(3))
    x, y = stream.sample_batch(64, torch.Generator().manual_seed(3))
    assert torch.equal(x, stream.ids[starts[:, None] + torch.arange(16)]) and torch.equal(x, y)
    assert bool((x[:, 1:-1] == boundary).any())


@pytest.mark.parametrize("cross", [False, True])
def test_shards_give_the_same_batches_as_memory(tmp_path, folder, cross):
    meta = prepare_shards(PrepareOptions(source=str(folder), out=str(tmp_path / "prep"), tokenizer="word",
                                         vocab_size=60, val_fraction=0.2, test_fraction=0.2))
    config = DataConfig(source=str(folder), tokenizer="word", vocab_size=60, block_size=12, val_fraction=0.2,
                        test_fraction=0.2, cross_documents=cross)
    memory = prepare_data(config)
    shards = prepare_data(DataConfig(source=str(tmp_path / "prep"), block_size=12, cross_documents=cross))
    assert meta["splits"]["train"]["boundaries"]["count"] >= 2
    assert (memory.splits["train"].documents is None) == cross
    for name, split in memory.splits.items():
        on_disk = shards.splits[name]
        assert isinstance(on_disk, ShardDataset) and (on_disk.documents is None) == (split.documents is None)
        assert np.fromfile(on_disk.path, dtype=np.uint16).tolist() == split.ids.tolist()
        if split.documents is not None:
            assert torch.equal(on_disk.documents.starts, split.documents.starts)
        for a, b in zip(on_disk.iter_batches(5), split.iter_batches(5), strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for _ in range(3):
        a, b = shards.splits["train"].sample_batch(8, g1), memory.splits["train"].sample_batch(8, g2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_shard_boundaries_are_checked_and_an_older_folder_is_one_stream(tmp_path, folder):
    out = tmp_path / "prep"
    prepare_shards(PrepareOptions(source=str(folder), out=str(out), val_fraction=0.0, test_fraction=0.0))
    meta = json.loads((out / "meta.json").read_text())
    entry = meta["splits"]["train"]["boundaries"]
    good = np.load(out / entry["file"])
    for bad in (good[::-1].copy(), good[:-1], np.array([[1, 2]]), good + meta["splits"]["train"]["tokens"],
                good.astype(np.float64)):
        np.save(out / entry["file"], bad)
        with pytest.raises(DataError, match="boundaries between documents"):
            open_shards(out, 8)
    np.save(out / entry["file"], np.array([object()]), allow_pickle=True)  # never unpickled
    with pytest.raises(DataError, match="not a boundary-position array"):
        open_shards(out, 8)
    (out / entry["file"]).unlink()
    with pytest.raises(DataError, match="incomplete prepared data"):
        open_shards(out, 8)
    del meta["splits"]["train"]["boundaries"]  # as `lmlab data prepare` wrote it before documents
    (out / "meta.json").write_text(json.dumps(meta))
    _, splits = open_shards(out, 8)
    assert splits["train"].documents is None and len(splits["train"].sample_batch(2, torch.Generator())[0][0]) == 8


def test_jsonl_records_are_documents_in_stream_mode(tmp_path):
    records = ["a record\nof two lines", "another one, " + "longer " * 20, "x", "the last\nrecord\n"]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in records), encoding="utf-8")
    config = resolve_config({"data": {"source": str(path), "block_size": 8, "val_fraction": 0.0,
                                      "test_fraction": 0.0},
                             "model": {"name": "mlp"}, "train": {"threads": 1, "max_steps": 2, "batch_size": 4}})
    data = prepare_data(config.data)
    train = data.splits["train"]
    assert data.mode == "stream" and train.documents is not None
    expected = torch.cat([t for r in records
                          for t in (torch.tensor([0]), encode_to_tensor(data.tokenizer, r))])[1:]
    assert torch.equal(train.ids, expected)  # records in order, one boundary token between two
    assert train.num_predictions == sum(len(r) for r in records) + len(records) - 2
    model = build_model(config, data.tokenizer, train.block_size)
    trainer = Trainer(model, train, data.splits["train"], config.train, run_dir=tmp_path / "run")
    trainer.fit()
    assert trainer.step == 2


def test_cross_documents_is_a_config_field():
    config = resolve_config({"data": {"cross_documents": True}})
    assert config.data.cross_documents is True and config.to_dict()["data"]["cross_documents"] is True
    assert resolve_config(parse_set_args(["data.cross_documents=true"])).data.cross_documents is True  # --set
    assert resolve_config({}).data.cross_documents is False
