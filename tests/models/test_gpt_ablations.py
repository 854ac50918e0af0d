"""The GPT's ablation switches: attention without the 1/sqrt(head size) scale, blocks without the residual."""

import torch

from lmlab.models.attention import MultiHeadAttention
from lmlab.models.gpt import GPT, GPTConfig


def test_unscaled_attention_is_softmax_of_raw_scores():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2, scale=1.0).eval()
    x = torch.randn(2, 5, 16)
    q, k, v = attn.c_attn(x).split(16, dim=2)
    q, k, v = (t.view(2, 5, 2, 8).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    scores = (q @ k.transpose(-2, -1)).masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    expected = attn.c_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x)[0], expected, atol=1e-5, rtol=1e-5)
    scaled = MultiHeadAttention(16, 2)
    scaled.load_state_dict(attn.state_dict())
    assert not torch.allclose(scaled.eval()(x)[0], expected, atol=1e-3)


def test_switches_change_the_model_and_default_to_gpt2():
    config = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    x = torch.randint(11, (2, 8), generator=torch.Generator().manual_seed(1))
    outputs = {}
    for name, switches in {"base": {}, "noscale": {"attn_scale": False}, "nores": {"residual": False}}.items():
        torch.manual_seed(0)
        outputs[name] = GPT(GPTConfig(**config, **switches)).eval()(x).logits
    assert GPTConfig().attn_scale and GPTConfig().residual
    assert not torch.allclose(outputs["base"], outputs["noscale"])
    assert not torch.allclose(outputs["base"], outputs["nores"])
