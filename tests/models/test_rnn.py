import math

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.models import REGISTRY
from lmlab.models.rnn import GRU, LSTM, RNN, RNNConfig

V = 13
CLASSES = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


def _model(name: str, **kw) -> RNN:
    torch.manual_seed(0)
    return CLASSES[name](RNNConfig(vocab_size=V, n_embd=8, n_hidden=16, **kw)).eval()


@pytest.mark.parametrize("name", list(CLASSES))
def test_registered_with_its_own_cell(name):
    spec = REGISTRY[name]
    assert spec.model_cls is CLASSES[name] and spec.config_cls is RNNConfig
    model = _model(name)
    assert isinstance(model.recurrent, {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[name])


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("n_layer", [2])
def test_cached_greedy_generation_equals_full_recomputation(name, n_layer):
    model = _model(name, n_layer=n_layer)
    with torch.no_grad():  # sharpen the head so argmax is decided by the state, not ties near uniform
        model.head.weight.mul_(30)
    prompt = torch.tensor([[0, 3, 5], [0, 1, 2]])
    cached = model.generate(prompt, 16, do_sample=False, use_cache=True)
    full = model.generate(prompt, 16, do_sample=False, use_cache=False)
    assert torch.equal(cached, full)
    ids = prompt
    for _ in range(16):  # and the long way, by hand
        ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(cached, ids)


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_carries_the_whole_prefix(name):
    """Logits of a continuation fed with the returned state equal those of the full sequence."""
    model = _model(name, n_layer=2)
    ids = torch.randint(0, V, (2, 10), generator=torch.Generator().manual_seed(1))
    full = model(ids).logits
    first = model(ids[:, :6], use_cache=True)
    rest = model(ids[:, 6:], past_key_values=first.past_key_values, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, rtol=1e-5, atol=1e-5)
    assert model(ids).past_key_values is None  # only when asked for
    # an early token reaches the end: the context is not a fixed window
    changed = ids.clone()
    changed[:, 0] = (changed[:, 0] + 1) % V
    assert (model(changed).logits[:, -1] - full[:, -1]).abs().max() > 1e-6
    assert model.max_context is None


@pytest.mark.parametrize("name", list(CLASSES))
def test_loss_at_init_is_near_ln_v(name):
    torch.manual_seed(0)
    model = CLASSES[name](RNNConfig(vocab_size=27))
    ids = torch.randint(0, 27, (16, 12))
    assert abs(model(ids, labels=ids).loss.item() - math.log(27)) < 0.05


def test_lstm_learns_a_long_dependency():
    """The first token decides the one 4 steps later, across a run of identical tokens: no n-gram up to
    n = 4 can do better than chance (ln 2), the LSTM's state carries it."""
    torch.manual_seed(0)
    model = LSTM(RNNConfig(vocab_size=4, n_embd=8, n_hidden=16))
    first = torch.randint(2, 4, (64, 1), generator=torch.Generator().manual_seed(0))
    ids = torch.cat([first, torch.ones(64, 3, dtype=torch.long), first], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, -1] = ids[:, -1]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("kw", [{"n_hidden": 0}, {"n_layer": 0}, {"dropout": -0.1}])
def test_bad_config_names_the_field(kw):
    with pytest.raises(ConfigError, match="model."):
        RNNConfig(**kw)
