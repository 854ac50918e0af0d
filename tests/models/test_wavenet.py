import math

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.models import REGISTRY
from lmlab.models.wavenet import WaveNet, WaveNetConfig

V = 11


def _model(**kw) -> WaveNet:
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(vocab_size=V, block_size=32, pad_id=0, n_embd=8, n_hidden=16, **kw))
    return model.eval()


@pytest.mark.parametrize(("kw", "field"), [
    ({"n_layer": 3, "kernel_size": 2, "dilation_growth": 2}, 8),
    ({"n_layer": 2, "kernel_size": 3, "dilation_growth": 3}, 9),  # 1 + 2 * (1 + 3)
    ({"n_layer": 4, "kernel_size": 2, "dilation_growth": 1}, 5),  # undilated: one more token per layer
])
def test_receptive_field_is_what_the_config_says(kw, field):
    """Changing token j changes exactly the logits at positions j .. j + R - 1."""
    model = _model(**kw, norm="layer")
    assert model.config.receptive_field == field == model.max_context
    ids = torch.randint(1, V, (1, 24), generator=torch.Generator().manual_seed(1))
    base = model(ids).logits
    for j in (0, 5, 11):
        changed = ids.clone()
        changed[0, j] = (changed[0, j] % (V - 1)) + 1
        diff = (model(changed).logits - base).abs().amax(-1)[0]  # (T,)
        affected = (diff > 1e-6).nonzero().flatten().tolist()
        assert affected == list(range(j, min(j + field, 24)))


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_causal_a_later_token_never_changes_earlier_logits(norm):
    model = _model(norm=norm)
    ids = torch.randint(0, V, (3, 16), generator=torch.Generator().manual_seed(2))
    full = model(ids).logits
    for t in range(1, 16):
        prefix = model(ids[:, :t]).logits
        torch.testing.assert_close(prefix, full[:, :t], rtol=1e-5, atol=1e-5)


def test_position_equals_the_model_on_its_window_alone():
    """Left padding with the boundary token makes a sliding window of max_context tokens exact."""
    model = _model()
    ids = torch.randint(1, V, (2, 20), generator=torch.Generator().manual_seed(3))
    full = model(ids).logits
    R = model.max_context
    for t in (R - 1, 12, 19):
        window = ids[:, t - R + 1 : t + 1]
        torch.testing.assert_close(model(window).logits[:, -1], full[:, t], rtol=1e-5, atol=1e-5)


def test_greedy_generation_with_sliding_window_matches_full_recomputation():
    model = _model()
    prompt = torch.tensor([[0, 3, 4]])
    out = model.generate(prompt, 20, do_sample=False)
    ids = prompt
    for _ in range(20):  # the long way: the whole sequence each step (the padding covers the rest)
        ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, ids)


def test_loss_at_init_is_near_ln_v_and_it_learns():
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(vocab_size=27, pad_id=0, n_embd=8, n_hidden=32))
    ids = torch.randint(0, 27, (8, 12))
    loss = model(ids, labels=ids).loss
    assert abs(loss.item() - math.log(27)) < 0.1
    ids = torch.arange(12).repeat(8, 1) % 5  # a deterministic pattern it can learn
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_parameters_match_makemore_part5_shape():
    """emb 24, hidden 128, 3 layers of pairs, no residual: the lecture's ~76K parameters (BN gains included)."""
    model = WaveNet(WaveNetConfig(vocab_size=27, n_embd=24, n_hidden=128, norm="batch", residual=False))
    n = sum(p.numel() for p in model.parameters())
    assert n == 27 * 24 + (24 * 2 * 128 + 256) + 2 * (128 * 2 * 128 + 256) + (128 * 27 + 27)
    assert 75_000 < n < 78_000


@pytest.mark.parametrize("kw", [{"kernel_size": 1}, {"n_layer": 0}, {"dropout": 1.0}, {"n_layer": 20}])
def test_bad_config_names_the_field(kw):
    with pytest.raises(ConfigError, match="model."):
        WaveNetConfig(**kw)


def test_registered():
    spec = REGISTRY["wavenet"]
    assert spec.model_cls is WaveNet and spec.config_cls is WaveNetConfig
