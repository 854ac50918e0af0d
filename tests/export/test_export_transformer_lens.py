"""TransformerLens: lmlab's GPT (at its registered sizes) and Llama rungs opened offline as a TransformerBridge
give lmlab's logits within 1e-4 and its greedy continuation; `run_with_cache` holds the attention pattern;
`lmlab export --format transformer-lens` writes a folder that loads, and refuses what TransformerLens cannot
hold."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import lmlab
from lmlab.cli import main
from lmlab.errors import LmlabError
from lmlab.export import export_run
from lmlab.export.transformer_lens import LOGIT_TOLERANCE, load_transformer_lens
from lmlab.run.config import build_model, resolve_config
from lmlab.run.folder import LoadedRun
from lmlab.tokenizers import CharTokenizer

needs_transformer_lens = pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is None,
                                            reason="TransformerLens is not installed (pip install 'lmlab[interp]')")

TEXTS = ["emma", "olivia", "ava", "isabella", "sophia", "mia"]


def random_run(tmp_path, name: str, context: int = 12, **model_values) -> LoadedRun:
    """A run of registered rung `name` with its real size, norms and biases moved off their init so a weight
    the conversion missed would show."""
    config = resolve_config({"model": {"name": name, **model_values}})
    tokenizer = CharTokenizer.fit(TEXTS)
    model = build_model(config, tokenizer, context).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return LoadedRun(tmp_path / "run", config, tokenizer, model, 0)


def greedy(bridge, prompt: torch.Tensor, steps: int, block: int) -> list[int]:
    """The bridge's own greedy continuation: argmax of its last logits, one token at a time, over the last
    `block` tokens (lmlab's generation window)."""
    ids = prompt
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, bridge(ids[:, -block:])[:, -1:].argmax(-1)], dim=1)
    return ids[0].tolist()


def assert_same_as_lmlab(run: LoadedRun, bridge) -> None:
    vocab, block = run.tokenizer.vocab_size, run.model.config.block_size
    ids = torch.randint(vocab, (3, block), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = run.model(ids).logits
        theirs = bridge(ids)
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max() <= LOGIT_TOLERANCE
    prompt = torch.tensor([[run.tokenizer.boundary_id, 5, 9]])
    ours_greedy = run.model.generate(prompt, 8, do_sample=False)[0].tolist()
    assert greedy(bridge, prompt, 8, block) == ours_greedy
    logits, cache = bridge.run_with_cache(ids[:1])
    assert (logits - ours[:1]).abs().max() <= LOGIT_TOLERANCE
    n_head = run.model.config.n_head
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert pattern.shape == (1, n_head, block, block)  # (B, nh, T, T)
    assert torch.allclose(pattern.sum(-1), torch.ones(1, n_head, block), atol=1e-5)
    assert pattern.triu(1).abs().max() == 0  # causal: no position attends to a later one
    last = run.model.config.n_layer - 1
    assert cache[f"blocks.{last}.hook_resid_post"].shape == (1, block, run.model.config.n_embd)


@needs_transformer_lens
@pytest.mark.parametrize("name, values", [
    ("gpt", {}),
    ("gpt-mini", {}),
    ("gpt", {"tie_embeddings": False, "activation": "gelu_tanh", "layer_norm_eps": 1e-6}),
    ("llama", {}),  # rotary, RMSNorm, SwiGLU, no biases: LlamaForCausalLM
    ("llama", {"n_kv_head": 2, "tie_embeddings": False, "bias": True, "rope_theta": 500.0}),  # grouped-query
    ("llama", {"qk_norm": True}),  # Qwen3ForCausalLM
])
@needs_transformer_lens
def test_transformer_lens_gives_lmlabs_logits(tmp_path, name, values):
    run = random_run(tmp_path, name, **values)
    out = export_run(run, "transformer-lens", tmp_path / "tl")
    bridge = load_transformer_lens(out)
    assert bridge.cfg.n_layers == run.model.config.n_layer
    assert bridge.to_tokens("isabella", prepend_bos=False)[0].tolist() == run.tokenizer("isabella").input_ids
    assert_same_as_lmlab(run, bridge)


@needs_transformer_lens
def test_compatibility_mode_keeps_the_log_probabilities(tmp_path):
    run = random_run(tmp_path, "gpt")
    bridge = load_transformer_lens(export_run(run, "transformer-lens", tmp_path / "tl"), compatibility=True)
    ids = torch.randint(run.tokenizer.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = run.model(ids).logits, bridge(ids)
    assert (theirs.log_softmax(-1) - ours.log_softmax(-1)).abs().max() <= LOGIT_TOLERANCE
    assert (theirs - ours).abs().max() > LOGIT_TOLERANCE  # the centred unembedding really is on


@needs_transformer_lens
def test_cli_exports_a_trained_run(tmp_path, tiny_names, capsys):
    config = {"data": {"source": str(tiny_names)}, "model": {"name": "gpt", "n_layer": 2, "n_embd": 32},
              "train": {"max_steps": 6, "eval_interval": 3, "log_interval": 3, "batch_size": 8}}
    trained = lmlab.train(config, out=tmp_path / "run", inspect=False)
    assert main(["export", str(trained.run_dir.path), "--format", "transformer-lens", str(tmp_path / "tl")]) == 0
    assert "TransformerLens logits match" in capsys.readouterr().out
    assert_same_as_lmlab(trained, load_transformer_lens(tmp_path / "tl"))


@needs_transformer_lens
@pytest.mark.parametrize("name, values, message", [
    ("gpt+rope", {}, "model.norm='layernorm'"),  # an ablation rung: rotary with GPT-2's LayerNorm
    ("gpt", {"bias": False}, "bias=false"),
    ("mlp", {}, "cannot be expressed"),
])
@needs_transformer_lens
def test_refuses_what_transformer_lens_cannot_hold(tmp_path, name, values, message):
    run = random_run(tmp_path, name, **values)
    with pytest.raises(LmlabError, match=message):
        export_run(run, "transformer-lens", tmp_path / "tl")


@needs_transformer_lens
def test_a_folder_without_a_config_is_one_clear_error(tmp_path):
    with pytest.raises(LmlabError, match="no config.json"):
        load_transformer_lens(tmp_path)


def test_without_transformer_lens_the_command_says_what_to_install(tmp_path, tiny_names, capsys, monkeypatch):
    config = {"data": {"source": str(tiny_names)}, "model": {"name": "gpt", "n_layer": 1, "n_embd": 16},
              "train": {"max_steps": 2, "eval_interval": 2, "log_interval": 2, "batch_size": 4}}
    trained = lmlab.train(config, out=tmp_path / "run", inspect=False)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformer_lens"
                        else find_spec(name, *a))
    assert main(["export", str(trained.run_dir.path), "--format", "transformer-lens", str(tmp_path / "tl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lmlab export: error: TransformerLens needs the transformer_lens package(s): pip install "
                   "'lmlab[interp]'"]
    assert not (tmp_path / "tl").exists()  # nothing written
