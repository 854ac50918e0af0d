"""ONNX export: same logits from onnxruntime (when installed), a clear error when the exporter is missing."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.export import onnx as onnx_export
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.run.config import resolve_config
from lmlab.run.folder import LoadedRun
from lmlab.tokenizers import CharTokenizer


def tiny_run(tmp_path) -> LoadedRun:
    tokenizer = CharTokenizer.fit(["emma", "olivia", "ava"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    return LoadedRun(tmp_path / "run", resolve_config({}), tokenizer, model, 0)


def test_missing_exporter_packages_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LmlabError, match=r"needs the onnx and onnxscript package\(s\): pip install lmlab\[onnx\]"):
        onnx_export.export_onnx(tiny_run(tmp_path), tmp_path / "out")


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
                    reason="onnx, onnxscript and onnxruntime are optional (pip install lmlab[onnx])")
def test_onnxruntime_gives_the_same_logits(tmp_path):
    import onnxruntime

    run = tiny_run(tmp_path)
    out, diff = onnx_export.export_onnx(run, tmp_path / "out")
    assert diff is not None and diff < 1e-4
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = torch.tensor([[0, 3, 5, 1, 2, 7]])  # a length the export never saw
    theirs = session.run(["logits"], {"input_ids": ids.numpy()})[0]
    with torch.no_grad():
        assert (torch.from_numpy(theirs) - run.model(ids).logits).abs().max() < 1e-4
    assert (out / "tokenizer.json").is_file() and (out / "lmlab_tokenizer.json").is_file()


needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="onnx, onnxscript and onnxruntime are optional (pip install lmlab[onnx])")


@needs_onnx
def test_bpe_run_exports_quietly_with_its_tokenizer_and_max_length(tmp_path, capfd):
    import onnx
    import transformers

    from lmlab.tokenizers import BPETokenizer

    text = "emma olivia ava\nzoë 😀 and  spaces\n" * 4
    tokenizer = BPETokenizer.fit([text], 280)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    config = resolve_config({"data": {"mode": "lines", "tokenizer": "bpe"}})
    capfd.readouterr()
    out, diff = onnx_export.export_onnx(LoadedRun(tmp_path / "run", config, tokenizer, model, 0), tmp_path / "out")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # the exporter's chatter is captured
    assert diff is not None and diff < 1e-4
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert hf_tok(text).input_ids == tokenizer(text, add_boundary=True).input_ids  # lines mode: BOS first
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert meta["lmlab.max_sequence_length"] == "8" and meta["lmlab.data_mode"] == "lines"
    with pytest.raises(LmlabError, match="not empty"):
        onnx_export.export_onnx(LoadedRun(tmp_path / "run", config, tokenizer, model, 0), out)


@needs_onnx
def test_recurrent_model_graph_takes_any_length_without_warnings(tmp_path, capfd):
    import onnx
    import onnxruntime

    from lmlab.run.config import build_model

    config = resolve_config({"model": {"name": "lstm", "n_embd": 8, "n_hidden": 16}})
    tokenizer = CharTokenizer.fit(["emma", "olivia", "ava"])
    model = build_model(config, tokenizer, 8).eval()
    out, diff = onnx_export.export_onnx(LoadedRun(tmp_path / "run", config, tokenizer, model, 0), tmp_path / "out")
    assert diff is not None and diff < 1e-4 and onnx_export.max_length(model) is None
    graph = onnx.load(str(out / "model.onnx"))
    assert [d.dim_param for d in graph.graph.output[0].type.tensor_type.shape.dim[:2]] == ["batch", "time"]
    assert {p.key: p.value for p in graph.metadata_props}["lmlab.max_sequence_length"] == "unbounded"
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    capfd.readouterr()
    for length in (1, 3, 40):  # the export example had 8
        ids = torch.randint(tokenizer.vocab_size, (2, length), generator=torch.Generator().manual_seed(length))
        theirs = torch.from_numpy(session.run(["logits"], {"input_ids": ids.numpy()})[0])
        with torch.no_grad():
            assert (theirs - model(ids).logits).abs().max() < 1e-4
    assert "VerifyOutputSizes" not in capfd.readouterr().err
