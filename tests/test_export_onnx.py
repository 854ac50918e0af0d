"""ONNX export: same logits from onnxruntime (when installed), a clear error when the exporter is missing."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.export import onnx as onnx_export
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.tokenizers import CharTokenizer
from lmlab.training.run_config import resolve_config
from lmlab.training.run_dir import LoadedRun


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
