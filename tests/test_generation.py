"""The sampling filters against transformers' own logits processors, on random logits."""

import pytest
import torch

from lmlab.models.generation import top_k_filter, top_p_filter

warpers = pytest.importorskip("transformers.generation.logits_process")


def _logits(seed: int, shape=(6, 50), ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g) * 3
    if ties:  # coarse values so equal logits straddle the cut
        logits = logits.round()
    return logits


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("top_k", [1, 2, 5, 17, 49, 50, 80])
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_matches_transformers(seed, top_k, ties):
    logits = _logits(seed, ties=ties)
    expected = warpers.TopKLogitsWarper(top_k)(None, logits.clone())
    assert torch.equal(top_k_filter(logits, top_k), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("top_p", [0.01, 0.1, 0.5, 0.9, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_top_p_matches_transformers(seed, top_p, ties):
    logits = _logits(seed, ties=ties)
    expected = warpers.TopPLogitsWarper(top_p)(None, logits.clone())
    assert torch.equal(top_p_filter(logits, top_p), expected)


def test_filters_keep_what_they_promise():
    """Independent of transformers: top-k keeps k, nucleus keeps the smallest set reaching p."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(top_k_filter(logits, 2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.79)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.2)).tolist() == [[True, False, False, False]]


def test_generate_with_top_k_1_or_tiny_top_p_is_greedy():
    from lmlab.models.rnn import GRU, RNNConfig

    torch.manual_seed(0)
    model = GRU(RNNConfig(vocab_size=9, n_embd=4, n_hidden=8))
    prompt = torch.zeros(3, 1, dtype=torch.long)
    greedy = model.generate(prompt, 12, do_sample=False)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(model.generate(prompt, 12, top_k=1, temperature=1.5, generator=g), greedy)
    assert torch.equal(model.generate(prompt, 12, top_p=1e-6, generator=g), greedy)
