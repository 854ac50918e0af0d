"""Sampling batches: how many samples one batch may hold, from the KV cache they need."""

from types import SimpleNamespace

import torch

from lmlab.models.gpt import GPT, GPTConfig
from lmlab.models.llama import Llama, LlamaConfig
from lmlab.models.rnn import GRU, RNNConfig
from lmlab.sample import KV_CACHE_BUDGET, cache_batch_limit


class Sized(torch.nn.Module):
    """A model's sizes without its weights (building GPT-2 here would take seconds)."""

    supports_cache = True

    def __init__(self, **sizes):
        super().__init__()
        self.config = SimpleNamespace(**sizes)
        self.weight = torch.nn.Parameter(torch.zeros(1))


def test_batch_limit_follows_the_kv_cache_a_sample_needs():
    micro = GPT(GPTConfig(preset="gpt-micro", vocab_size=65, block_size=256))
    assert cache_batch_limit(micro) == KV_CACHE_BUDGET // (2 * 4 * 128 * 256 * 4) == 1024
    gpt2 = Sized(n_layer=12, n_head=12, n_embd=768, block_size=1024)
    assert cache_batch_limit(gpt2) == KV_CACHE_BUDGET // (2 * 12 * 768 * 1024 * 4) == 14
    gqa = Sized(n_layer=12, n_head=12, n_embd=768, n_kv_head=4, block_size=1024)
    assert cache_batch_limit(gqa) == KV_CACHE_BUDGET // (2 * 12 * 256 * 1024 * 4) == 42  # a third of the heads
    llama = Llama(LlamaConfig(vocab_size=9, block_size=64, n_layer=2, n_head=4, n_embd=32, n_kv_head=2))
    assert cache_batch_limit(llama) == KV_CACHE_BUDGET // (2 * 2 * 16 * 64 * 4)
    assert cache_batch_limit(GRU(RNNConfig(vocab_size=9, n_embd=4, n_hidden=8))) is None
