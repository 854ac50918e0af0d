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


@pytest.mark.parametrize("shape", [(1, 65), (7, 50)])
@pytest.mark.parametrize("top_k", [None, 5])
def test_sample_next_draws_what_multinomial_draws(shape, top_k):
    """The written-out exponential race gives torch.multinomial's tokens from the same generator state."""
    from lmlab.models.generation import sample_next

    ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in range(20):
        logits = _logits(step, shape)
        got = sample_next(logits, 0.8, top_k, None, True, ours)
        filtered = logits / 0.8 if top_k is None else top_k_filter(logits / 0.8, top_k)
        expected = torch.multinomial(filtered.softmax(dim=-1), 1, generator=theirs)
        assert torch.equal(got, expected)
    assert torch.equal(ours.get_state(), theirs.get_state())  # the same random numbers were used


def test_seeded_samples_are_pinned():
    """Pinned with the code before issue 14's round 2 (torch.multinomial, the GPT decoded module by module,
    the Llama's cache concatenated): the faster decode reproduces them exactly, past the window too."""
    from lmlab.models.gpt import GPT, GPTConfig
    from lmlab.models.llama import Llama, LlamaConfig

    prompt = torch.zeros(2, 1, dtype=torch.long)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0))
    sampled = gpt.generate(prompt, 12, top_k=6, temperature=1.3, generator=torch.Generator().manual_seed(5))
    assert sampled.tolist() == [[0, 4, 4, 2, 9, 8, 10, 10, 1, 2, 2, 1, 2], [0, 3, 5, 8, 8, 10, 10, 8, 5, 6, 0, 4, 8]]
    plain = gpt.generate(prompt, 12, generator=torch.Generator().manual_seed(5), use_cache=False)
    assert plain.tolist() == [[0, 4, 0, 3, 9, 6, 10, 10, 8, 4, 0, 0, 2], [0, 3, 2, 8, 1, 10, 10, 5, 5, 6, 0, 6, 7]]
    torch.manual_seed(0)
    llama = Llama(LlamaConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_kv_head=1, n_embd=16,
                              dropout=0.0))
    sampled = llama.generate(prompt, 12, top_p=0.9, generator=torch.Generator().manual_seed(5))
    assert sampled.tolist() == [[0, 4, 0, 2, 9, 6, 10, 10, 8, 4, 0, 0, 2], [0, 2, 2, 8, 1, 7, 10, 5, 5, 6, 0, 6, 8]]
