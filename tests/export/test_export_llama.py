"""HF Llama / Qwen3 format: lmlab's Llama against transformers' LlamaForCausalLM and Qwen3ForCausalLM built
locally from a config (logits within 1e-4, equal greedy tokens), export and import through files, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.export.llama import export_llama, import_llama, is_llama_dir, llama_config_from_hf
from lmlab.run.config import build_model, resolve_config
from lmlab.run.folder import LoadedRun, load_run
from lmlab.tokenizers import CharTokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["emma", "olivia", "ava", "isabella", "sophia", "mia"]
SMALL = {"n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32}


def make_run(tmp_path, model="llama", **model_values) -> LoadedRun:
    shape = {k: v for k, v in SMALL.items() if model == "llama" or k != "n_kv_head"}
    config = resolve_config({"model": {"name": model, **shape, **model_values}})
    tokenizer = CharTokenizer.fit(TEXTS)
    built = build_model(config, tokenizer, 12).eval()
    with torch.no_grad():  # move norm gains (and biases) off their 1/0 init, so a missed one would show
        for p in built.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return LoadedRun(tmp_path / "run", config, tokenizer, built, 0)


def assert_same_model(ours, theirs, vocab_size: int, eos: int) -> None:
    ids = torch.randint(vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(ids).logits - theirs(ids).logits).abs().max()
    assert diff < 1e-4
    prompt = torch.tensor([[eos, 5, 9]])
    greedy_ours = ours.generate(prompt, 8, do_sample=False, eos_token_id=eos)
    greedy_hf = theirs.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    assert greedy_ours.tolist() == greedy_hf.tolist()


@pytest.mark.parametrize("variant, arch", [
    ({}, "LlamaForCausalLM"),
    ({"tie_embeddings": False, "bias": True, "rope_theta": 500.0, "norm_eps": 1e-6}, "LlamaForCausalLM"),
    ({"qk_norm": True}, "Qwen3ForCausalLM"),
])
def test_export_matches_transformers(tmp_path, variant, arch):
    run = make_run(tmp_path, **variant)
    out = export_llama(run, tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf_model).__name__ == arch
    assert_same_model(run.model, hf_model, run.tokenizer.vocab_size, run.tokenizer.boundary_id)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert hf_tok("isabella").input_ids == run.tokenizer("isabella").input_ids


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_import_a_model_built_by_transformers_then_export_it_again(tmp_path, family):
    tokenizer = CharTokenizer.fit(TEXTS)
    common = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=32,
                  tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    if family == "llama":
        hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()
    else:
        hf_model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common)).eval()
    with torch.no_grad():
        for p in hf_model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    hf_dir = tmp_path / "hf"
    hf_model.save_pretrained(hf_dir)
    from lmlab.export.hf_convert import hf_tokenizer_files

    for name, text in hf_tokenizer_files(tokenizer, 32).items():
        (hf_dir / name).write_text(text, encoding="utf-8")
    assert is_llama_dir(hf_dir) and not is_llama_dir(tmp_path)
    run = import_llama(hf_dir, tmp_path / "run", {"source": "names", "block_size": 16})
    assert run.model.config.qk_norm == (family == "qwen3") and run.model.config.mlp_hidden == 48
    assert_same_model(run.model, hf_model, tokenizer.vocab_size, 0)
    reloaded = load_run(tmp_path / "run")  # a run directory like any other: samples, evaluates, resumes
    assert reloaded.config.model_name == "llama"
    assert_same_model(reloaded.model.eval(), hf_model, tokenizer.vocab_size, 0)
    again = export_llama(reloaded, tmp_path / "hf2")
    assert json.loads((again / "config.json").read_text())["model_type"] == family
    hf_again = transformers.AutoModelForCausalLM.from_pretrained(again, local_files_only=True).eval()
    assert_same_model(run.model, hf_again, tokenizer.vocab_size, 0)


def test_refusals_name_the_setting(tmp_path):
    with pytest.raises(LmlabError, match="not a Llama"):
        export_llama(make_run(tmp_path, "gpt"), tmp_path / "hf")
    with pytest.raises(LmlabError, match="model.position='learned'"):
        export_llama(make_run(tmp_path, "gpt+rope", position="learned"), tmp_path / "hf")
    with pytest.raises(LmlabError, match="head_dim"):
        llama_config_from_hf({"model_type": "qwen3", "vocab_size": 10, "hidden_size": 32,
                              "num_attention_heads": 4, "head_dim": 16})
    with pytest.raises(LmlabError, match="model_type"):
        llama_config_from_hf({"model_type": "mistral", "vocab_size": 10})


@pytest.mark.slow
def test_onnx_export_of_the_llama_matches(tmp_path):
    """RoPE, QK-norm and grouped-query attention through torch.onnx and onnxruntime (~25 s: marked slow)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from lmlab.export.onnx import export_onnx

    _, diff = export_onnx(make_run(tmp_path, qk_norm=True), tmp_path / "onnx")
    assert diff is not None and diff < 1e-4
