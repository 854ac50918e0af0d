"""The Llama rung and the ablation switches: GPT equivalence with every switch off, grouped-query attention
against plain multi-head attention with repeated key/value heads, rotary embeddings' relative positions,
the KV cache (holding only the key/value heads) against full passes, context past the training length."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.models import ABLATIONS, REGISTRY, GPTConfig, Llama, LlamaConfig
from lmlab.models.attention import MultiHeadAttention, apply_rotary, rotary_tables
from lmlab.models.gpt import GPT
from lmlab.models.llama import GPT2_SWITCHES

V = 27


def tiny(block_size: int = 16, **kwargs) -> Llama:
    torch.manual_seed(0)
    values = {"n_layer": 2, "n_head": 4, "n_embd": 32, "n_kv_head": 2, "qk_norm": True, **kwargs}
    return Llama(LlamaConfig(vocab_size=V, block_size=block_size, **values)).eval()


def ids(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(V, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_loss_at_init_is_near_uniform_and_every_parameter_learns():
    model = tiny().train()
    x = ids(8, 16)
    loss = model(x, labels=x).loss
    assert abs(loss.item() - math.log(V)) < 0.1
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_with_every_switch_off_it_is_the_gpt():
    """The ablation's baseline: GPT's weights load by name, with nothing missing or left over, and give
    the same logits, so a `gpt+...` rung differs from `gpt` by its one switch."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=32)).eval()
    llama = Llama(LlamaConfig(vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=32,
                              **GPT2_SWITCHES)).eval()
    llama.load_state_dict(gpt.state_dict(), strict=True)
    x = ids()
    torch.testing.assert_close(llama(x).logits, gpt(x).logits, rtol=0, atol=0)


def test_each_ablation_rung_flips_one_switch_of_gpt2():
    base = LlamaConfig(**GPT2_SWITCHES)
    for name, (_, switch) in ABLATIONS.items():
        config = REGISTRY[name].config_cls()
        changed = {f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(base, f.name)}
        assert changed == set(switch), name
        assert REGISTRY[name].train_defaults == REGISTRY["gpt"].train_defaults
    gpt_params = sum(p.numel() for p in GPT(GPTConfig(vocab_size=V, block_size=16)).parameters())
    swiglu = Llama(REGISTRY["gpt+swiglu"].config_cls(vocab_size=V, block_size=16))
    assert abs(sum(p.numel() for p in swiglu.parameters()) / gpt_params - 1) < 0.05  # 8/3 C gated ~ 4 C


def test_grouped_query_attention_is_multi_head_attention_with_shared_kv_heads():
    torch.manual_seed(0)
    C, nh, nkv = 32, 4, 2
    hs = C // nh
    gqa = MultiHeadAttention(C, nh, n_kv_head=nkv, bias=False).eval()
    mha = MultiHeadAttention(C, nh, bias=False).eval()
    assert gqa.c_attn.weight.shape == (C + 2 * nkv * hs, C)
    w = gqa.c_attn.weight.detach()
    q, k, v = w.split([C, nkv * hs, nkv * hs])

    def repeat(m):  # key/value head j serves query heads j * nh/nkv ... (j + 1) * nh/nkv - 1
        return m.view(nkv, hs, C).repeat_interleave(nh // nkv, dim=0).reshape(C, C)

    with torch.no_grad():
        mha.c_attn.weight.copy_(torch.cat([q, repeat(k), repeat(v)]))
        mha.c_proj.weight.copy_(gqa.c_proj.weight)
    x = torch.randn(2, 7, C)
    rope = rotary_tables(hs, torch.arange(7))
    gqa.record_attention = mha.record_attention = True
    got, cache = gqa(x, use_cache=True, rope=rope)
    expected, _ = mha(x, rope=rope)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gqa.last_attention, mha.last_attention, atol=1e-6, rtol=1e-5)
    assert cache[0].shape == (2, nkv, 7, hs)  # the cache holds only the key/value heads


def test_rotary_scores_depend_on_distance_only():
    hs = 8
    q, k = torch.randn(1, 1, 1, hs), torch.randn(1, 1, 1, hs)

    def score(i: int, j: int) -> float:
        cos, sin = rotary_tables(hs, torch.tensor([i, j]))
        return float(apply_rotary(q, cos[:1], sin[:1]).flatten() @ apply_rotary(k, cos[1:], sin[1:]).flatten())

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    cos, _ = rotary_tables(hs, torch.arange(4))
    torch.testing.assert_close(cos[0], torch.ones(hs))  # position 0 is not rotated


@pytest.mark.parametrize("kwargs", [{}, {"position": "learned", "norm": "layernorm", "mlp": "relu2"}])
def test_cached_forward_matches_full_forward(kwargs):
    model = tiny(**kwargs)
    x = ids(2, 10)
    full = model(x).logits
    out = model(x[:, :6], use_cache=True)
    steps = [out.logits]
    past = out.past_key_values
    for t in range(6, 10):
        out = model(x[:, t : t + 1], past_key_values=past, use_cache=True)
        steps.append(out.logits)
        past = out.past_key_values
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert past[0][0].shape == (2, 2, 10, 8)  # (B, nkv, S, hs)


def test_causal_and_generation_with_cache_equals_without():
    model = tiny(block_size=8)
    x = ids(2, 6)
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V
    torch.testing.assert_close(model(x).logits[:, :-1], model(changed).logits[:, :-1])
    # 20 new tokens pass the context of 8: the window slides, the cache is dropped and rebuilt
    cached = model.generate(x[:, :3], 20, do_sample=False)
    plain = model.generate(x[:, :3], 20, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain) and cached.shape == (2, 23)


def test_sliding_window_is_exact_within_the_window_and_banded_attention_past_it(monkeypatch):
    """The rolling KV cache against two references: generate's exact path while the window has room, and past
    it a full pass whose every position attends to the last `block_size` positions only (a banded mask)."""
    import lmlab.models.attention as attention

    model, window = tiny(block_size=8), 8
    x = ids(2, 20)
    for kwargs in ({"do_sample": False}, {"top_k": 5, "generator": torch.Generator().manual_seed(4)}):
        exact = model.generate(x[:, :3], window - 3, **kwargs)  # fills the window and stops there
        kwargs.get("generator", torch.Generator()).manual_seed(4)
        assert torch.equal(model.generate(x[:, :3], window - 3, sliding_window=True, **kwargs), exact)
    with torch.inference_mode():  # teacher-forced through the rolling cache, 12 positions past the window
        cache = model.new_cache(window, rolling=True)
        steps = [model(x[:, :3], past_key_values=cache, use_cache=True).logits]
        steps += [model(x[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(3, 20)]
        rolling = torch.cat(steps, dim=1)  # (B, 20, V)
        assert cache[0].length == 20 and cache[0].k.size(2) == window
        causal = model(x).logits
        sdpa = attention.F.scaled_dot_product_attention

        def banded(q, k, v, attn_mask=None, is_causal=False, **kw):
            T, S = q.size(2), k.size(2)
            band = torch.ones(T, S, dtype=torch.bool).tril().triu(-(window - 1))  # (T, S)
            return sdpa(q, k, v, attn_mask=band if is_causal else attn_mask, **kw)

        monkeypatch.setattr(attention.F, "scaled_dot_product_attention", banded)
        reference = model(x).logits
    torch.testing.assert_close(rolling, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rolling[:, :window], causal[:, :window], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rolling[:, window + 2 :], causal[:, window + 2 :], atol=1e-3)  # an approximation


def test_sliding_window_needs_relative_positions():
    x = ids(1, 4)
    with pytest.raises(ValueError, match="sliding_window"):
        tiny(position="learned").generate(x, 3, sliding_window=True)
    with pytest.raises(ValueError, match="sliding_window"):
        GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=8)).generate(x, 3, sliding_window=True)
    with pytest.raises(ValueError, match="rotary"):
        tiny(position="learned").new_cache(8, rolling=True)
    assert tiny().generate(x, 20, sliding_window=True, do_sample=False).shape == (1, 24)


def test_rope_runs_past_its_context_and_learned_positions_refuse():
    long = ids(1, 24)
    assert tiny(block_size=16)(long).logits.shape == (1, 24, V)
    with pytest.raises(ValueError, match="longer than the context"):
        tiny(block_size=16, position="learned")(long)


def test_untied_and_biasless():
    model = tiny(tie_embeddings=False)
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert "wpe" not in model.transformer


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="n_kv_head"):
        LlamaConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ConfigError, match="even"):
        LlamaConfig(n_head=4, n_embd=12)
    with pytest.raises(ConfigError, match="preset"):
        LlamaConfig(preset="llama-70b")
    assert LlamaConfig(preset="llama-124m").n_kv_head == 4


def test_every_llama_and_ablation_name_builds_and_speaks_the_interface():
    names = [n for n, spec in REGISTRY.items() if spec.model_cls is Llama and n != "llama-124m"]
    assert {"llama", "gpt+rope", "gpt+rmsnorm", "gpt+swiglu", "gpt+qknorm", "gpt+gqa"} <= set(names)
    x = ids(2, 8)
    for name in names:
        torch.manual_seed(0)
        model = Llama(REGISTRY[name].config_cls(vocab_size=V, block_size=8)).eval()
        out = model(x, labels=x)
        assert out.logits.shape == (2, 8, V) and torch.isfinite(out.loss), name
        assert model.generate(x[:, :2], 3, do_sample=False).shape == (2, 5)
