"""Multi-head attention: causal self-attention (a GPT decoder), unmasked self-attention (an encoder) and
cross-attention (queries from one sequence, keys and values from another), with an optional KV cache.

The query, key and value projections are one fused (3C, C) matrix `c_attn`, ordered q, k, v as in GPT-2
and in `nn.MultiheadAttention.in_proj_weight`, so weights carry over to and from both without reshuffling.
Cross-attention uses the same matrix: the q rows on the queries, the k and v rows on the context.

Three switches of the Llama-era block live here too, all off by default (GPT-2's attention):
- grouped-query attention (`n_kv_head` < `n_head`): fewer key/value heads, each shared by n_head / n_kv_head
  query heads, so `c_attn` is (C + 2 * nkv * hs, C) and the KV cache holds only the nkv heads;
- rotary position embeddings: `forward(rope=(cos, sin))` rotates q and k by their absolute positions (HF
  Llama's half-split convention, so its weights need no permutation);
- QK-norm (Qwen3, nanochat): an RMSNorm over each head's q and k before the rotation, which bounds the
  attention logits.
Shape legend: B batch, T query length, S key length, C width (n_embd), nh heads, nkv key/value heads,
hs head size (C / nh).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.models.dropout import Dropout, dropout

KVCache = tuple[Tensor, Tensor]  # (k, v), each (B, nkv, S, hs)


def rotary_tables(head_size: int, positions: Tensor, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """(cos, sin) for `positions` (T,), each (T, hs), or for each row's own positions (B, T), each
    (B, 1, T, hs) to broadcast over the heads: pair i of a head turns at frequency theta^(-2i/hs)."""
    inv_freq = theta ** -(torch.arange(0, head_size, 2, dtype=torch.float32, device=positions.device) / head_size)
    angles = positions.float()[..., None] * inv_freq  # (T, hs/2) or (B, T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (..., T, hs): the half-split layout, as HF's rotate_half
    if angles.dim() == 3:
        angles = angles[:, None]  # (B, 1, T, hs)
    return angles.cos(), angles.sin()


def document_mask(position_ids: Tensor) -> Tensor:
    """(B, 1, T, T) boolean mask of packed rows: query i may see key j when j <= i and both belong to the
    same example, an example being a run of positions that starts at 0 (data/datasets.py `pack`)."""
    example = (position_ids == 0).cumsum(dim=1)  # (B, T): which example of its row each token is in
    same = example[:, :, None] == example[:, None, :]  # (B, T, T)
    T = position_ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=position_ids.device).tril()
    return (same & causal)[:, None]  # (B, 1, T, T): one mask for every head


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, nh, T, hs) by (T, hs) or (B, 1, T, hs) tables: dimension i pairs with i + hs/2."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, nh, T, hs)
    return (x * cos + rotated * sin).to(x.dtype)


class KVBuffer:
    """A KV cache preallocated for `capacity` positions and filled in place: each step writes its keys and
    values into the next free slots, where concatenating to a (k, v) tuple copies the whole cache every
    token. Allocated at the first write, in that write's batch size, dtype and device."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0  # positions filled
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> KVCache:
        """Store k, v (B, nh, T, hs) after the filled positions; returns views of everything stored."""
        if self.k is None:
            B, nh, _, hs = k.shape
            self.k = k.new_empty(B, nh, self.capacity, hs)  # (B, nh, S_max, hs)
            self.v = v.new_empty(B, nh, self.capacity, hs)
        end = self.length + k.size(2)
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions for a capacity of {self.capacity}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, nh, S, hs) views, no copy


class RollingKVBuffer(KVBuffer):
    """A KVBuffer that keeps only the last `capacity` positions: sliding-window attention (as Mistral's).

    Until it is full it is a KVBuffer. Then each new position overwrites the oldest slot, so the slots are no
    longer in order, which one query does not mind: with no mask (T = 1) attention is a weighted sum over its
    keys. Valid only with relative positions (RoPE): keys keep the rotation of the position they were made
    at, and a score depends on the distance alone. It approximates recomputing the window: a kept key was
    computed with the context it had then, which the window has since dropped. `length` counts every
    position seen (the next one's RoPE position), not the slots held."""

    def append(self, k: Tensor, v: Tensor) -> KVCache:
        if self.length + k.size(2) <= self.capacity:
            return super().append(k, v)
        if k.size(2) != 1 or self.k is None:
            raise ValueError("a full rolling KV cache takes one position at a time")
        slot = self.length % self.capacity  # the oldest position's slot
        self.k[:, :, slot] = k[:, :, 0]
        self.v[:, :, slot] = v[:, :, 0]
        self.length += 1
        return self.k, self.v  # (B, nkv, capacity, hs), slots out of order


def cache_length(past: KVCache | KVBuffer | None) -> int:
    """Positions seen by one layer's cache (0 for none): where the next token sits."""
    if past is None:
        return 0
    return past.length if isinstance(past, KVBuffer) else past[0].size(2)


def attention_probabilities(q: Tensor, k: Tensor, mask: Tensor | None, scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale) (1/sqrt(hs) when None) over the keys `mask` lets each query see (all where
    None): (B, nh, T, S)."""
    scores = (q @ k.transpose(-2, -1)) * (q.size(-1) ** -0.5 if scale is None else scale)  # (B, nh, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, *, bias: bool = True, dropout: float = 0.0,
                 n_kv_head: int | None = None, qk_norm: bool = False, norm_eps: float = 1e-6,
                 scale: float | None = None):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        self.n_head = n_head
        self.n_kv_head = n_kv_head
        self.n_embd = n_embd
        self.head_size = n_embd // n_head
        self.kv_width = n_kv_head * self.head_size
        self.dropout = dropout
        self.scale = scale  # of the scores q k^T; None: 1/sqrt(head size), what keeps the softmax from saturating
        self.c_attn = nn.Linear(n_embd, n_embd + 2 * self.kv_width, bias=bias)
        # Qwen3's q_norm / k_norm: one gain per head dimension, shared by all heads.
        self.q_norm = nn.RMSNorm(self.head_size, eps=norm_eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_size, eps=norm_eps) if qk_norm else None
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = Dropout(dropout)
        # The inspector sets record_attention for a sampled step; the fused kernel never materialises the
        # attention matrix, so only then is it computed again, by hand, into last_attention.
        self.record_attention = False
        self.last_attention: Tensor | None = None

    def _heads(self, x: Tensor) -> Tensor:
        B, T, width = x.shape
        return x.view(B, T, width // self.head_size, self.head_size).transpose(1, 2)  # (B, nh|nkv, T, hs)

    def forward(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        causal: bool = True,
        past_key_value: KVCache | KVBuffer | None = None,
        use_cache: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, KVCache | KVBuffer | None]:
        """x (B, T, C) -> (B, T, C), and the updated (k, v) cache when `use_cache`.

        `context` (B, S, C) turns this into cross-attention (never causal: every query sees the whole
        context). With `past_key_value`, x holds only the new tokens and attends to the cached ones too.
        `rope` is the (cos, sin) tables of the new tokens' positions, (T, hs) or (B, 1, T, hs) each (see
        `rotary_tables`). `attn_mask` (B, 1, T, T), True where a query may look, replaces the causal
        triangle: packed rows' `document_mask`.
        """
        B, T, C = x.shape
        kv = self.kv_width
        if context is None:
            q, k, v = self.c_attn(x).split([C, kv, kv], dim=2)  # (B, T, C), 2 x (B, T, nkv * hs)
        else:
            w, b = self.c_attn.weight, self.c_attn.bias
            q = F.linear(x, w[:C], None if b is None else b[:C])  # (B, T, C)
            k, v = F.linear(context, w[C:], None if b is None else b[C:]).split(kv, dim=2)  # 2 x (B, S, nkv*hs)
            causal = False
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, nh, T, hs), 2 x (B, nkv, T|S, hs)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if isinstance(past_key_value, KVBuffer):  # written in place; the buffer is the new cache
            k, v = past_key_value.append(k, v)  # (B, nkv, S_past + T, hs)
            present = past_key_value if use_cache else None
        else:
            if past_key_value is not None:
                k = torch.cat([past_key_value[0], k], dim=2)  # (B, nkv, S_past + T, hs)
                v = torch.cat([past_key_value[1], v], dim=2)
            present = (k, v) if use_cache else None

        S = k.size(2)
        mask, is_causal = attn_mask, False
        if attn_mask is not None:
            if S != T:
                raise ValueError("attn_mask is for whole packed rows, not for a KV cache")
        elif causal and T > 1:
            if S == T:
                is_causal = True  # the fused kernel's own triangle
            else:
                # New queries sit at the end: query i may see keys up to S - T + i. SDPA's is_causal aligns
                # the triangle to the top-left corner instead, so build the bottom-right one by hand.
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        drop = self.dropout if self.training else 0.0
        by_hand = bool(drop) and x.device.type == "cpu"
        weights = None
        if by_hand or self.record_attention:
            # the keys each query may see, as the boolean mask SDPA takes (or builds from is_causal)
            seen = mask if mask is not None or not is_causal else torch.ones(T, S, dtype=torch.bool,
                                                                             device=x.device).tril()
            rows = self.n_head // self.n_kv_head
            weights = attention_probabilities(q, k.repeat_interleave(rows, dim=1), seen, self.scale)  # (B, nh, T, S)
        if by_hand:
            # SDPA's dropout takes torch's per-element Bernoulli draws, dearer on a CPU than the products
            # here: the same computation by hand, with dropout.py's cheaper mask on the probabilities
            y = dropout(weights, drop, True) @ v.repeat_interleave(rows, dim=1)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=drop,
                enable_gqa=self.n_kv_head != self.n_head,  # query head h reads key/value head h // (nh / nkv)
                scale=self.scale,
            )  # (B, nh, T, hs)
        if self.record_attention:
            self.last_attention = weights.detach()
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y)), present
