"""MultiHeadAttention against torch.nn.MultiheadAttention given the same weights: causal, unmasked, cross."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmlab.models.attention import MultiHeadAttention

C, NH = 32, 4


def _pair(bias: bool = True) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ours = MultiHeadAttention(C, NH, bias=bias).eval()
    ref = nn.MultiheadAttention(C, NH, bias=bias, batch_first=True).eval()
    with torch.no_grad():
        # Both fuse q, k, v in that order into one (3C, C) matrix; only the names differ.
        ref.in_proj_weight.copy_(ours.c_attn.weight)
        ref.out_proj.weight.copy_(ours.c_proj.weight)
        if bias:
            ref.in_proj_bias.copy_(ours.c_attn.bias)
            ref.out_proj.bias.copy_(ours.c_proj.bias)
    return ours, ref


@pytest.mark.parametrize("bias", [True, False])
def test_causal_self_attention_matches_torch(bias):
    ours, ref = _pair(bias)
    x = torch.randn(3, 7, C)
    mask = torch.ones(7, 7, dtype=torch.bool).triu(1)  # torch: True = may NOT attend
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    got, _ = ours(x, causal=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_unmasked_self_attention_matches_torch():
    ours, ref = _pair()
    x = torch.randn(2, 9, C)
    expected, _ = ref(x, x, x, need_weights=False)
    got, _ = ours(x, causal=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # and the mask matters: the causal result differs except at the last position, which sees everything
    causal, _ = ours(x, causal=True)
    assert not torch.allclose(causal[:, :-1], got[:, :-1], atol=1e-4)
    torch.testing.assert_close(causal[:, -1], got[:, -1], atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_torch():
    ours, ref = _pair()
    x, memory = torch.randn(2, 5, C), torch.randn(2, 11, C)
    expected, _ = ref(x, memory, memory, need_weights=False)
    got, _ = ours(x, context=memory)
    assert got.shape == (2, 5, C)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_kv_cache_equals_full_causal_pass():
    ours, _ = _pair()
    x = torch.randn(2, 10, C)
    full, _ = ours(x, causal=True)
    # prefix of 6 in one go, then 3 tokens at once (needs the bottom-right mask), then 1
    y1, cache = ours(x[:, :6], use_cache=True)
    y2, cache = ours(x[:, 6:9], past_key_value=cache, use_cache=True)
    y3, cache = ours(x[:, 9:], past_key_value=cache, use_cache=True)
    assert cache[0].shape == (2, NH, 10, C // NH)
    torch.testing.assert_close(torch.cat([y1, y2, y3], dim=1), full, atol=1e-5, rtol=1e-5)


def test_width_must_divide_into_heads():
    with pytest.raises(ValueError, match="multiple of n_head"):
        MultiHeadAttention(30, 4)


def test_recorded_attention_is_what_sdpa_used():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    attn.record_attention = True
    y, _ = attn(x)
    probs = attn.last_attention  # (B, nh, T, T)
    assert probs.shape == (2, 4, 5, 5)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 5))
    assert bool((probs.triu(diagonal=1) == 0).all())  # causal: nothing from the future
    v = attn._heads(attn.c_attn(x).split(16, dim=2)[2])  # (B, nh, T, hs)
    by_hand = (probs @ v).transpose(1, 2).reshape(2, 5, 16)
    assert torch.allclose(attn.c_proj(by_hand), y, atol=1e-5)
