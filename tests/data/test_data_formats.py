"""JSONL, CSV, Parquet, HF `datasets` folders and compressed text as data sources (data/records.py)."""

from __future__ import annotations

import csv
import gzip
import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from lmlab.config import DataConfig, TrainConfig
from lmlab.data import load_corpus
from lmlab.errors import DataError

NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "charlotte", "amelia", "harper", "evelyn",
         "abigail", "emily", "ella", "elizabeth", "camila", "luna", "sofia", "avery", "mila", "aria"] * 3


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_source(kind: str, folder: Path, texts: list[str]) -> str:
    """The same records in each format, with a distracting numeric field beside the text."""
    if kind == "jsonl":
        return str(_jsonl(folder / "d.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)]))
    if kind == "jsonl.gz":
        path = folder / "d.jsonl.gz"
        path.write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in texts).encode()))
        return str(path)
    if kind == "csv":
        return str(_csv(folder / "d.csv", ["id", "body"], [[i, t] for i, t in enumerate(texts)])) + ":body"
    if kind == "parquet":
        pa, pq = importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
        pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), folder / "d.parquet")
        return str(folder / "d.parquet")
    if kind == "datasets":
        datasets = importlib.import_module("datasets")
        datasets.Dataset.from_dict({"n": list(range(len(texts))), "text": texts}).save_to_disk(folder / "hf")
        return str(folder / "hf")
    raise ValueError(kind)


FORMATS = ["jsonl", "jsonl.gz", "csv", "parquet", "datasets"]


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_reads_back_the_records(tmp_path, kind):
    source = write_source(kind, tmp_path, NAMES)
    corpus = load_corpus(source)
    assert corpus.documents == NAMES and corpus.default_mode == "lines" and corpus.name in ("d", "hf")


@pytest.mark.parametrize("kind", ["csv", "parquet", "datasets"])
def test_record_formats_train_a_tiny_model(tmp_path, kind):
    from lmlab.models import REGISTRY
    from lmlab.run.data import prepare_data
    from lmlab.training.trainer import Trainer

    data = prepare_data(DataConfig(source=write_source(kind, tmp_path, NAMES)))
    assert data.mode == "lines" and sorted(sum(data.texts.values(), [])) == sorted(NAMES)
    spec = REGISTRY["bigram"]
    model = spec.model_cls(spec.config_cls(vocab_size=data.tokenizer.vocab_size, block_size=16,
                                           pad_id=data.tokenizer.boundary_id))
    trainer = Trainer(model, data.splits["train"], data.splits["val"],
                      TrainConfig(max_steps=3, batch_size=8, eval_interval=3, device="cpu"))
    trainer.fit()
    assert trainer.step == 3 and torch.isfinite(torch.tensor(trainer.last_val_loss))


def test_jsonl_trains_from_the_command_line(cli, tmp_path):
    source = write_source("jsonl", tmp_path, NAMES)
    result = cli("train", "--data", source, "--model", "bigram", "--max-steps", "3", "--no-inspect",
                 "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["mode"] == "lines" and saved["data"]["text_field"] == "text"
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) >= 2


def test_field_choice_colon_and_auto_pick(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"n": 1, "title": "ab", "body": "xyz"}, {"n": 2, "title": "c", "body": "w"}])
    assert load_corpus(f"{path}:body").documents == ["xyz", "w"]
    assert load_corpus(str(path), text_field="title").documents == ["ab", "c"]
    with pytest.raises(DataError, match="no field 'text'; the fields are 'n', 'title', 'body'"):
        load_corpus(str(path))
    only = _jsonl(tmp_path / "o.jsonl", [{"n": 1, "content": "hi"}, {"n": 2, "content": "yo"}])
    assert load_corpus(str(only)).documents == ["hi", "yo"]  # the one string field
    one_column = _csv(tmp_path / "one.csv", ["line"], [["a b"], ["c"]])
    assert load_corpus(str(one_column)).documents == ["a b", "c"]


def test_multiline_or_long_records_default_to_stream(tmp_path):
    docs = ["first line\nsecond line", "another document"]
    path = _jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in docs])
    corpus = load_corpus(str(path))
    assert corpus.documents == docs and corpus.default_mode == "stream"
    long = _jsonl(tmp_path / "long.jsonl", [{"text": "x " * 600}, {"text": "y"}])
    assert load_corpus(str(long)).default_mode == "stream"


def test_datasetdict_reads_the_train_split(tmp_path):
    datasets = importlib.import_module("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b"]}),
                               "test": datasets.Dataset.from_dict({"text": ["c"]})})
    dd.save_to_disk(tmp_path / "dd")
    assert load_corpus(str(tmp_path / "dd")).documents == ["a", "b"]


def test_compressed_text_files(tmp_path):
    zstandard = importlib.import_module("zstandard")
    text = "\n".join(NAMES) + "\n"
    (tmp_path / "n.txt.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "n.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    for name in ("n.txt.gz", "n.txt.zst"):
        corpus = load_corpus(str(tmp_path / name))
        assert corpus.documents == [text] and corpus.name == "n" and corpus.default_mode == "lines"


def _bad(tmp_path: Path, name: str, content: bytes) -> str:
    (tmp_path / name).write_bytes(content)
    return str(tmp_path / name)


@pytest.mark.parametrize("name, content, message", [
    ("e.jsonl", b"", "the file is empty"),
    ("e.csv", b"", "the file is empty"),
    ("b.jsonl", b'{"text": "a"}\n{"text": 3}\n', "record 2: field 'text' holds int, not a string"),
    ("n.jsonl", b'{"text": null}\n', "record 1: field 'text' holds null, not a string"),
    ("l.jsonl", b'["a", "b"]\n', "line 1 is a JSON list, not an object"),
    ("j.jsonl", b'{"text": "a"}\n{"text": \n', "line 2 is not valid JSON"),
    ("m.jsonl", b'{"text": "a"}\n{"body": "b"}\n', "record 2 has no field 'text'; its fields are 'body'"),
    ("c.csv", b"id,title\n1,a\n", "no column 'text'; the columns are 'id', 'title'"),
    ("w.csv", b"text,n\n,1\n ,2\n", "the text field is empty in every record"),
    ("g.txt.gz", gzip.compress(b"hello there\n")[:-6], "corrupt or truncated gzip file"),
    ("p.parquet", b"PAR1 not really parquet", "not a readable Parquet file"),
    ("z.txt.zst", b"\x28\xb5\x2f\xfd\x00garbage", "corrupt or truncated zstd file"),
])
def test_bad_records_get_one_clear_line(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        load_corpus(_bad(tmp_path, name, content))


def test_a_non_string_column_is_named(tmp_path):
    pa, pq = importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match="column 'text' holds int64, not strings"):
        load_corpus(str(tmp_path / "n.parquet"))
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "null.parquet")
    with pytest.raises(DataError, match="row 2: field 'text' holds null"):
        load_corpus(str(tmp_path / "null.parquet"))


def test_text_field_is_checked():
    from lmlab.errors import ConfigError

    with pytest.raises(ConfigError, match="data.text_field"):
        DataConfig(text_field=" ")


def test_data_prepare_reads_records(tmp_path):
    from lmlab.data.shard_writer import PrepareOptions, prepare_shards
    from lmlab.data.shards import open_shards

    docs = [f"document {i}: " + "some running text here. " * 5 for i in range(20)]
    source = _jsonl(tmp_path / "docs.jsonl", [{"id": i, "body": d} for i, d in enumerate(docs)])
    prepare_shards(PrepareOptions(source=f"{source}:body", out=str(tmp_path / "shards")))
    _, splits = open_shards(str(tmp_path / "shards"), 16)
    assert sum(len(s) for s in splits.values()) == len("\n".join(docs))  # char tokenizer: one id a character


@pytest.mark.parametrize("module, name, extra", [("pyarrow.parquet", "d.parquet", "parquet"),
                                                 ("zstandard", "d.txt.zst", "zstd")])
def test_a_missing_package_names_the_extra(tmp_path, monkeypatch, module, name, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(DataError, match=re.escape(f"pip install 'lmlab[{extra}]'")):
        load_corpus(_bad(tmp_path, name, b"PAR1 something"))


def test_a_datasets_folder_without_the_package_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=re.escape("pip install 'lmlab[datasets]'")):
        load_corpus(str(tmp_path / "hf"))


def test_a_text_file_read_in_blocks_is_the_file_read_whole(tmp_path):
    from lmlab.data.sources import iter_text_file, read_text_file

    text = "\ufeff" + "".join(f"é{i} naïve ☃\r\n" for i in range(500))  # 2- and 3-byte characters cut by blocks
    plain, packed = tmp_path / "a.txt", tmp_path / "a.txt.gz"
    plain.write_text(text, encoding="utf-8")
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    for path in (plain, packed):
        blocks = list(iter_text_file(path, block_bytes=7))
        assert len(blocks) > 100 and "".join(blocks) == read_text_file(path) == text[1:]
    # the same one-line errors, at the same byte, however the file is cut
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc " * 100 + "é".encode() + b"\xff tail")
    for block in (7, 1 << 20):
        with pytest.raises(DataError, match="not valid utf-8 at byte 402"):
            "".join(iter_text_file(bad, block_bytes=block))
    with pytest.raises(DataError, match="not valid utf-8 at byte 402"):
        read_text_file(bad)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"hello " * 50 + b"\x00")
    with pytest.raises(DataError, match="NUL bytes, the first at byte 300"):
        "".join(iter_text_file(binary, block_bytes=16))
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n  \n")
    with pytest.raises(DataError, match="the file is empty"):
        list(iter_text_file(blank, block_bytes=2))
