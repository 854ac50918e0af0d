import pytest
import torch

from lmlab.data import LinesDataset, StreamDataset, load_corpus, split_indices
from lmlab.data.datasets import IGNORE_INDEX
from lmlab.errors import DataError


def test_split_is_deterministic_and_complete():
    a = split_indices(100, 0.1, 0.2, seed=3)
    assert a == split_indices(100, 0.1, 0.2, seed=3)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (70, 10, 20)
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(100))
    assert split_indices(100, 0.1, 0.2, seed=4) != a
    everything = split_indices(10, 0.0, 0.0, seed=0)
    assert len(everything["train"]) == 10 and not everything["val"] and not everything["test"]


def test_lines_dataset_frames_and_masks():
    ds = LinesDataset([[0, 5, 6, 0], [0, 7, 0]], pad_id=0)
    assert ds.num_predictions == 5  # "ab." and "c." as in makemore
    x, y = ds._rows(torch.tensor([1]))
    assert x.tolist() == [[0, 7, 0]] and y.tolist() == [[IGNORE_INDEX, 7, 0]]
    batches = list(ds.iter_batches(batch_size=1))
    assert sum(int((b[1] != IGNORE_INDEX).sum()) for b in batches) == 5


def test_stream_eval_predicts_every_token_once():
    ds = StreamDataset(torch.arange(103), block_size=10)
    predicted = []
    for _, y in ds.iter_batches(batch_size=4):
        predicted += y[y != IGNORE_INDEX].tolist()
    assert predicted == list(range(1, 103))
    x, y = ds.sample_batch(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 10) and torch.equal(x, y) and bool(((x[:, 1:] - x[:, :-1]) == 1).all())


def test_embedded_sets_come_from_the_install():
    names = load_corpus("names")
    lines = names.documents[0].split("\n")
    assert names.default_mode == "lines" and len(lines) > 4000 and len(set(lines)) == len(lines)
    assert all(line.islower() and line.isalpha() for line in lines)
    assert load_corpus("surnames").documents[0].startswith("smith\n")
    code = load_corpus("pystdlib")
    assert code.default_mode == "stream" and any("def " in doc for doc in code.documents)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"), (b"\x00\x01\x02binary", "binary"), ("caf\u00e9\n".encode("latin-1"), "not valid utf-8"),
])
def test_bad_files_are_named(tmp_path, content, message):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_corpus(str(path))


def test_encoding_option_reads_latin1(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes("caf\u00e9\nna\u00efve\n".encode("latin-1"))
    assert load_corpus(str(path), encoding="latin-1").documents[0].startswith("caf\u00e9")


def test_folder_source_reads_every_text_file(tmp_path):
    (tmp_path / "a.txt").write_text("hello world, this is prose.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("print('hi')\n")
    (tmp_path / "c.bin").write_bytes(b"\x00\x00")
    corpus = load_corpus(str(tmp_path))
    assert corpus.default_mode == "stream" and len(corpus.documents) == 2


def test_missing_source_lists_embedded_sets():
    with pytest.raises(DataError, match="names, surnames, pystdlib"):
        load_corpus("no_such_thing")
