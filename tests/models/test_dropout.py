"""The CPU dropout (models/dropout.py) against torch's: the same expectation and drop rate, a gradient that
is the mask, and attention's hand-written dropout path against SDPA's computation with the same mask."""

import pytest
import torch
import torch.nn.functional as F

from lmlab.models.attention import MultiHeadAttention
from lmlab.models.dropout import LEVELS, Dropout, keep_mask


def test_drop_rate_and_scale_match_the_asked_p():
    torch.manual_seed(0)
    x = torch.ones(300_001)
    mask = keep_mask(x, 0.15)
    dropped = round(0.15 * LEVELS) / LEVELS
    assert (mask == 0).float().mean().item() == pytest.approx(dropped, abs=3e-3)  # 300K draws: sd 7e-4
    kept = mask[mask != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - dropped)))
    assert mask.mean().item() == pytest.approx(1.0, abs=4e-3)  # expectation kept, as nn.Dropout's
    # every 16-bit lane of a draw is used, and none is stuck: neighbours are independent
    pairs = (mask[:-1] == 0) & (mask[1:] == 0)
    assert pairs.float().mean().item() == pytest.approx(dropped**2, abs=2e-3)


def test_module_is_an_nn_dropout_and_identity_in_eval():
    layer = Dropout(0.3)
    assert isinstance(layer, torch.nn.Dropout) and layer.p == 0.3
    x = torch.randn(4, 5)
    assert torch.equal(layer.eval()(x), x)
    layer.train()
    x.requires_grad_(True)
    torch.manual_seed(1)
    y = layer(x)
    y.sum().backward()
    torch.manual_seed(1)
    assert torch.equal(x.grad, keep_mask(x, 0.3))  # the gradient is the mask
    assert torch.equal(y, x * x.grad)


def test_seeded_draws_repeat():
    torch.manual_seed(3)
    a = keep_mask(torch.empty(7, 9), 0.5)
    torch.manual_seed(3)
    assert torch.equal(a, keep_mask(torch.empty(7, 9), 0.5))


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_attention_dropout_by_hand_is_sdpa_with_that_mask(n_kv_head):
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, dropout=0.2, n_kv_head=n_kv_head).train()
    x = torch.randn(3, 6, 16)
    torch.manual_seed(5)
    out, _ = attn(x)
    # the reference: the same mask drawn from the same state, applied to softmax(q k^T / sqrt(hs)) of SDPA's
    torch.manual_seed(5)
    q, k, v = attn.c_attn(x).split([16, attn.kv_width, attn.kv_width], dim=2)
    q, k, v = attn._heads(q), attn._heads(k), attn._heads(v)
    k, v = k.repeat_interleave(4 // n_kv_head, 1), v.repeat_interleave(4 // n_kv_head, 1)
    weights = F.scaled_dot_product_attention(q, k, torch.eye(6).expand(3, 4, 6, 6), is_causal=True)
    y = (weights * keep_mask(weights, 0.2)) @ v  # (B, nh, T, hs)
    expected = attn.c_proj(y.transpose(1, 2).reshape(3, 6, 16))
    expected = expected * keep_mask(expected, 0.2)  # the residual dropout draws next
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
