"""Scaled dot-product attention with a causal mask, and multi-head attention.

Attention (Vaswani et al., 2017, "Attention Is All You Need") lets every position
read from every position it is allowed to see. With queries Q, keys K and values
V of shape ``(T, D)``,

    Attention(Q, K, V) = softmax(Q K^T / sqrt(D) + M) V

where the mask M is 0 where attending is allowed and -inf where it is not. A
language model that predicts token t+1 from tokens 1..t must never look ahead,
so its mask is *causal*: position t sees positions 1..t (the lower triangle with
the diagonal) and nothing after.

Two multi-head versions sit side by side and are tested equal:

* :class:`HeadLoopAttention`: the teaching version, one small module per head,
  a Python loop over heads, the formula written out;
* :class:`MultiHeadAttention`: what the models use, one fused Q/K/V projection
  and all heads at once (einops), calling PyTorch's fused
  ``F.scaled_dot_product_attention`` unless the attention weights are requested.

Both take an optional additive ``bias`` on the scores (ALiBi, chapter 5) and an
optional ``rotary`` embedding applied to queries and keys (RoPE, chapter 5), with
positions counted from ``offset``. :class:`MultiHeadAttention` also takes an
optional key/value ``cache`` (chapter 8, :mod:`lmcourse.generation`): the new keys
and values are appended to it and the new queries attend to everything it holds.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Rotary(Protocol):
    """Anything that rotates queries and keys by their positions (RoPE)."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]: ...


class KVStore(Protocol):
    """One layer's key/value cache (:class:`lmcourse.generation.LayerKVCache`).

    ``append(k, v)`` stores the new keys and values ``(B, H, T_new, Dh)`` after the
    ones already held and returns all of them, ``(B, H, T_past + T_new, Dh)`` each.
    """

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def causal_mask(T: int, device: torch.device | str | None = None, *, offset: int = 0) -> torch.Tensor:
    """The ``(T, offset + T)`` boolean causal mask: ``True`` where attending is allowed.

    Row t (a query position) is ``True`` at columns 0..t: the past and itself.
    With ``offset`` (a key/value cache holding ``offset`` earlier positions), the
    ``T`` queries sit at positions ``offset .. offset+T-1`` of ``offset + T`` keys:
    row t may see columns ``0 .. offset + t``, a lower triangle moved ``offset``
    columns right (``tril(diagonal=offset)``).

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    >>> causal_mask(2, offset=3).int()  # 2 new queries after 3 cached keys
    tensor([[1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1]], dtype=torch.int32)
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    return torch.ones(T, offset + T, dtype=torch.bool, device=device).tril(diagonal=offset)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out: ``softmax(q k^T / sqrt(D) + bias, masked) v``.

    ``q`` is ``(..., Tq, D)``, ``k`` and ``v`` are ``(..., Tk, D)`` (``v`` may have
    its own last dimension). ``mask`` is a boolean tensor broadcastable to
    ``(..., Tq, Tk)``, ``True`` where attending is allowed; ``bias`` an additive
    float tensor of the same broadcast shape. Returns ``(out, weights)`` with
    ``out`` ``(..., Tq, Dv)`` and ``weights`` ``(..., Tq, Tk)``, each row summing to 1.

    A query row whose mask is all ``False`` has nothing to attend to; its softmax
    would be 0/0 = NaN, so it raises a ``ValueError`` instead.

    >>> q = k = v = torch.eye(2)
    >>> out, w = scaled_dot_product_attention(q, k, v, mask=causal_mask(2))
    >>> w
    tensor([[1.0000, 0.0000],
            [0.3302, 0.6698]])
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"queries and keys need the same last dimension, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"keys and values need the same length, got {k.shape[-2]} and {v.shape[-2]}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a boolean tensor (True = may attend), got {mask.dtype}")
        if not bool(mask.any(dim=-1).all()):
            raise ValueError(
                "the mask leaves a query with no key to attend to (a row that is all False); "
                "its softmax would be 0/0 = NaN"
            )
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., Tq, Tk), rows sum to 1
    return weights @ v, weights


def _mask_for(Tq: int, Tk: int, device: torch.device) -> torch.Tensor:
    """The causal mask of ``Tq`` queries that are the *last* ``Tq`` of ``Tk`` keys.

    Without a cache ``Tq == Tk`` and this is :func:`causal_mask`; with cached keys
    in front, query i sits at key index ``i + Tk - Tq``.
    """
    return causal_mask(Tq, device, offset=Tk - Tq)  # (Tq, Tk)


class AttentionHead(nn.Module):
    """One head: its own query, key and value projections ``d_model -> d_head``."""

    def __init__(self, d_model: int, d_head: int, bias: bool = True) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_head, bias=bias)
        self.key = nn.Linear(d_model, d_head, bias=bias)
        self.value = nn.Linear(d_model, d_head, bias=bias)


class HeadLoopAttention(nn.Module):
    """Multi-head attention as a loop over heads: the teaching version.

    Each head projects the input into its own ``d_model / n_heads``-dimensional
    subspace, attends there, and the heads' outputs are concatenated and mixed by
    one output projection. Slow but literal; :class:`MultiHeadAttention` computes
    the same function (see :meth:`MultiHeadAttention.from_head_loop`).

    >>> attn = HeadLoopAttention(d_model=8, n_heads=2)
    >>> attn(torch.zeros(1, 5, 8)).shape
    torch.Size([1, 5, 8])
    """

    def __init__(
        self, d_model: int, n_heads: int, causal: bool = True, dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        _check_heads(d_model, n_heads)
        self.d_model, self.n_heads, self.causal = d_model, n_heads, causal
        self.heads = nn.ModuleList(AttentionHead(d_model, d_model // n_heads, bias) for _ in range(n_heads))
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        bias: torch.Tensor | None = None,
        rotary: Rotary | None = None,
        offset: int = 0,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape  # (B, T, C)
        mask = _mask_for(T, T, x.device) if self.causal else None
        outs, maps = [], []
        for h, head in enumerate(self.heads):
            q, k, v = head.query(x), head.key(x), head.value(x)  # (B, T, Dh) each
            if rotary is not None:
                q, k = rotary(q, k, offset=offset)
            _, w = scaled_dot_product_attention(q, k, v, mask=mask, bias=None if bias is None else bias[h])
            outs.append(self.attn_dropout(w) @ v)  # (B, T, Dh); dropout is a no-op in eval mode
            maps.append(w)
        y = self.resid_dropout(self.proj(torch.cat(outs, dim=-1)))  # (B, T, C)
        return (y, torch.stack(maps, dim=1)) if need_weights else y


class MultiHeadAttention(nn.Module):
    """Multi-head (optionally causal) self-attention, all heads at once.

    One fused linear layer makes queries, keys and values for every head; einops
    splits them into ``(B, H, T, Dh)``. Without ``need_weights`` the scores go
    through PyTorch's fused ``F.scaled_dot_product_attention`` (the same numbers,
    less memory); with it, through :func:`scaled_dot_product_attention`, which
    also returns the ``(B, H, T, T)`` weights for plotting.

    ``bias`` (``(H, T, T)``, added to the scores: ALiBi) and ``rotary`` (applied to
    queries and keys: RoPE) bring in positions; ``offset`` is the absolute position
    of the first token (what RoPE rotates by), the hook for a key/value cache.

    ``n_kv_heads`` (default ``n_heads``) makes fewer key/value heads than query
    heads: grouped-query attention (Ainslie et al., 2023, "GQA"), or multi-query
    attention with ``n_kv_heads=1`` (Shazeer, 2019, "Fast Transformer Decoding: One
    Write-Head is All You Need"). Query head h reads key/value head
    ``h // (n_heads / n_kv_heads)``; the K and V projections and a key/value cache
    shrink by ``n_heads / n_kv_heads``.

    ``uniform=True`` zeroes every query, so every score is 0 and each position
    averages the values of all the positions it may see with equal weights: the
    "bag of words" baseline of attention (the weights no longer depend on the
    content; a ``bias`` still adds to the zero scores).

    >>> attn = MultiHeadAttention(d_model=8, n_heads=2)
    >>> y, w = attn(torch.zeros(1, 5, 8), need_weights=True)
    >>> y.shape, w.shape
    (torch.Size([1, 5, 8]), torch.Size([1, 2, 5, 5]))
    """

    def __init__(self, d_model: int, n_heads: int, causal: bool = True, dropout: float = 0.0, bias: bool = True,
                 qk_norm: bool = False, n_kv_heads: int | None = None, attn_dropout: float | None = None,
                 uniform: bool = False) -> None:
        super().__init__()
        _check_heads(d_model, n_heads)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if not isinstance(n_kv_heads, int) or n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads must be a positive divisor of n_heads ({n_heads}), got {n_kv_heads!r}")
        # self.dropout: on the attention weights (attn_dropout, default dropout); resid_dropout: on the output
        self.d_model, self.n_heads, self.causal, self.uniform = d_model, n_heads, causal, uniform
        self.dropout = dropout if attn_dropout is None else attn_dropout
        self.n_kv_heads = n_kv_heads
        self.d_kv = n_kv_heads * (d_model // n_heads)  # width of all key (or value) heads together
        # QK-norm (Henry et al., 2020; Dehghani et al., 2023): RMSNorm each head's queries and
        # keys, so no score can blow up; the learned gains set how sharp attention may get.
        self.q_norm = nn.RMSNorm(d_model // n_heads) if qk_norm else None
        self.k_norm = nn.RMSNorm(d_model // n_heads) if qk_norm else None
        # [W_q; W_k; W_v], head-major inside each: D + 2 D_kv outputs (3 D without GQA)
        self.qkv = nn.Linear(d_model, d_model + 2 * self.d_kv, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.attn_dropout = nn.Dropout(self.dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        bias: torch.Tensor | None = None,
        rotary: Rotary | None = None,
        offset: int = 0,
        need_weights: bool = False,
        cache: KVStore | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape  # (B, T, C)
        H, G = self.n_heads, self.n_kv_heads  # G = H, or fewer key/value heads (GQA)
        heads = rearrange(self.qkv(x), "b t (n d) -> b n t d", n=H + 2 * G)  # (B, H + 2G, T, Dh)
        q, k, v = heads.split([H, G, G], dim=1)  # (B, H, T, Dh), (B, G, T, Dh), (B, G, T, Dh)
        if self.uniform:  # every score 0: equal weights on every visible position
            q = torch.zeros_like(q)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # before RoPE
        if rotary is not None:
            q, k = rotary(q, k, offset=offset)
        if cache is not None:
            # Keys are cached *after* RoPE: a cached key never needs rotating again.
            k, v = cache.append(k, v)  # (B, G, Tk, Dh), Tk = cached + T: G heads, not H
            if not need_weights:
                return self._cached_fast(q, k, v, bias)
        Tk = k.shape[-2]
        mask = _mask_for(T, Tk, x.device) if self.causal else None
        gqa = G != H
        if need_weights:
            if gqa:  # each key/value head serves H / G query heads, in order
                k, v = (z.repeat_interleave(H // G, dim=1) for z in (k, v))
            out, w = scaled_dot_product_attention(q, k, v, mask=mask, bias=bias)
            if self.training and self.dropout > 0:
                out = self.attn_dropout(w) @ v
        else:
            p = self.dropout if self.training else 0.0
            if bias is None and self.causal:
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=gqa)
            else:
                # A float mask is *added* to the scores: the bias, and -inf where masked.
                attn_mask = None if bias is None else bias.to(q.dtype)
                if mask is not None:
                    blocked = torch.zeros(mask.shape, dtype=q.dtype, device=x.device).masked_fill(~mask, float("-inf"))
                    attn_mask = blocked if attn_mask is None else attn_mask + blocked
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, enable_gqa=gqa)
        y = self.resid_dropout(self.proj(rearrange(out, "b h t d -> b t (h d)")))  # (B, T, C)
        return (y, w) if need_weights else y

    def _cached_fast(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Attention of ``T`` new queries ``(B, H, T, Dh)`` on ``Tk`` keys ``(B, G, Tk, Dh)`` that end with theirs."""
        B, H, T, Dh = q.shape
        p = self.dropout if self.training else 0.0
        gqa = k.shape[1] != H  # G < H key/value heads: SDPA lets each serve H / G query heads
        if bias is None and self.causal and T == k.shape[-2]:  # an empty cache: plain causal attention
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=gqa)
        else:
            attn_mask = None if bias is None else bias.to(q.dtype)  # (H, T, Tk)
            if self.causal and T > 1:  # one new query (T = 1) may see every key: no mask needed
                past = k.shape[-2] - T  # cached positions: query i sits at key index past + i
                allowed = causal_mask(T, q.device, offset=past)  # (T, Tk)
                blocked = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
                blocked = blocked.masked_fill(~allowed, float("-inf"))
                attn_mask = blocked if attn_mask is None else attn_mask + blocked
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p,
                                                 enable_gqa=gqa)  # (B, H, T, Dh)
        return self.resid_dropout(self.proj(out.transpose(1, 2).reshape(B, T, H * Dh)))  # (B, T, C)

    @classmethod
    def from_head_loop(cls, loop: HeadLoopAttention) -> "MultiHeadAttention":
        """A batched module computing exactly what ``loop`` computes (weights copied)."""
        has_bias = loop.proj.bias is not None
        new = cls(loop.d_model, loop.n_heads, loop.causal, loop.attn_dropout.p, bias=has_bias)
        new = new.to(device=loop.proj.weight.device, dtype=loop.proj.weight.dtype)
        with torch.no_grad():
            for part, name in enumerate(("query", "key", "value")):
                rows = slice(part * loop.d_model, (part + 1) * loop.d_model)
                new.qkv.weight[rows] = torch.cat([getattr(h, name).weight for h in loop.heads], dim=0)
                if has_bias:
                    new.qkv.bias[rows] = torch.cat([getattr(h, name).bias for h in loop.heads], dim=0)
            new.proj.load_state_dict(loop.proj.state_dict())
        return new


def _check_heads(d_model: int, n_heads: int) -> None:
    if n_heads < 1 or d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be a positive multiple of n_heads ({n_heads})")
