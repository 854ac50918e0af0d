import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.models import REGISTRY, causal_lm_loss
from lmlab.models.bigram import Bigram, BigramConfig
from lmlab.models.generation import generate
from lmlab.models.mlp import MLP, MLPConfig

V = 27


def _batch(seed=0, B=8, T=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    return ids, ids.clone()


def test_loss_is_fused_cross_entropy_of_shifted_labels():
    logits = torch.randn(2, 5, V)
    labels = torch.randint(0, V, (2, 5))
    labels[0, 3] = -100
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(causal_lm_loss(logits, labels), expected)
    # stable for huge logits where a naive exp() overflows
    assert torch.isfinite(causal_lm_loss(logits * 1e4, labels))


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_mlp_initial_loss_is_near_ln_vocab(norm):
    torch.manual_seed(0)
    model = MLP(MLPConfig(vocab_size=V, norm=norm))
    loss = model(*_batch()[:1], labels=_batch()[1]).loss.item()
    assert abs(loss - math.log(V)) < 0.15


def test_bigram_is_one_hot_matmul():
    model = Bigram(BigramConfig(vocab_size=V))
    torch.nn.init.normal_(model.weight)
    ids, _ = _batch()
    one_hot = F.one_hot(ids, V).float()
    assert torch.allclose(model(ids).logits, one_hot @ model.weight)


def test_mlp_sees_only_its_context():
    torch.manual_seed(0)
    model = MLP(MLPConfig(vocab_size=V, context=3)).eval()
    ids, _ = _batch(B=1)
    changed = ids.clone()
    changed[0, 2] = (changed[0, 2] % (V - 1)) + 1
    a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[0, :2], b[0, :2])  # earlier positions: causal
    assert not torch.equal(a[0, 2:5], b[0, 2:5])  # the next three positions see it
    assert torch.equal(a[0, 5:], b[0, 5:])  # beyond the context: unchanged


def test_batchnorm_uses_running_statistics_in_eval():
    torch.manual_seed(0)
    model = MLP(MLPConfig(vocab_size=V, norm="batch"))
    ids, _ = _batch()
    model.train()
    for _ in range(3):
        model(ids)
    model.eval()
    single = model(ids[:1]).logits
    batch = model(ids).logits[:1]
    assert torch.allclose(single, batch, atol=1e-6)  # eval: an example's output does not depend on its batch
    model.train()
    assert not torch.allclose(model(ids[:1]).logits, single, atol=1e-3)


@pytest.mark.parametrize("name", ["ngram", "bigram", "mlp"])
def test_every_registered_model_speaks_the_interface(name):
    spec = REGISTRY[name]
    model = spec.model_cls(spec.config_cls(vocab_size=V, block_size=16))
    ids, labels = _batch()
    out = model(ids, labels=labels)
    assert out.logits.shape == (8, 12, V) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    gen = model.generate(ids[:, :2], max_new_tokens=30, generator=torch.Generator().manual_seed(0))
    assert gen.shape == (8, 32) and int(gen.max()) < V


def test_generate_stops_at_eos_and_pads_finished_rows():
    model = Bigram(BigramConfig(vocab_size=4))
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0, 9, 0, 0], [0, 0, 9, 0], [9, 0, 0, 0], [0, 0, 0, 9.0]]))
    out = generate(model, torch.tensor([[0], [3]]), 10, do_sample=False, eos_token_id=0)
    assert out[0].tolist()[:4] == [0, 1, 2, 0]
    assert out[1].tolist() == [3] * 11  # never emits eos: runs to max_new_tokens


def test_sampling_is_reproducible_with_a_generator():
    torch.manual_seed(0)
    model = MLP(MLPConfig(vocab_size=V))
    start = torch.zeros(4, 1, dtype=torch.long)
    a = generate(model, start, 20, generator=torch.Generator().manual_seed(5), top_k=5, top_p=0.9)
    b = generate(model, start, 20, generator=torch.Generator().manual_seed(5), top_k=5, top_p=0.9)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0},
                                    {"top_p": 1.5}, {"top_k": 0}])
def test_generate_rejects_bad_arguments(kwargs):
    model = Bigram(BigramConfig(vocab_size=V))
    with pytest.raises(ValueError):
        generate(model, torch.zeros(1, 1, dtype=torch.long), **{"max_new_tokens": 5, **kwargs})
