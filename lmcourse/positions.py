"""Positional information for attention: four ways to tell a model where a token is.

Attention by itself is blind to order: permute the input tokens and the outputs
are permuted the same way. The four schemes of chapter 5:

* **learned absolute** (GPT-2): a trainable vector per position, added to the
  token embedding. Only positions seen in training are ever trained.
* **sinusoidal absolute** (Vaswani et al., 2017): a fixed table added to the
  embedding, ``PE[pos, 2i] = sin(pos / 10000^(2i/D))``,
  ``PE[pos, 2i+1] = cos(pos / 10000^(2i/D))``.
* **rotary, RoPE** (Su et al., 2021, "RoFormer"): rotate each pair of query and
  key coordinates ``(2i, 2i+1)`` by the angle ``pos * theta_i`` with
  ``theta_i = 10000^(-2i/D)``. A rotation keeps lengths, and the dot product of a
  rotated query at m with a rotated key at n depends on m - n only.
* **ALiBi** (Press et al., 2022, "Train Short, Test Long"): no embedding at all;
  each head h adds ``-m_h * (i - j)`` to the score of query i on key j, a penalty
  growing with distance, with a fixed geometric slope ``m_h`` per head.

Every table here is a function of the positions, so the fixed schemes evaluate at
any position; tables kept in modules are non-persistent buffers (derived, not
saved) that move with ``.to(device)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _positions(T: int, offset: int, device: torch.device | None) -> torch.Tensor:
    if T < 0 or offset < 0:
        raise ValueError(f"T and offset must be >= 0, got {T} and {offset}")
    return torch.arange(offset, offset + T, device=device, dtype=torch.float64)


# ----------------------------------------------------------------------------------
# Learned absolute positions


class LearnedPositions(nn.Module):
    """A trainable ``(context_length, d_model)`` table; row p is added at position p.

    >>> pos = LearnedPositions(context_length=8, d_model=4)
    >>> pos(5).shape
    torch.Size([5, 4])
    """

    def __init__(self, context_length: int, d_model: int) -> None:
        super().__init__()
        self.table = nn.Embedding(context_length, d_model)

    def forward(self, T: int, offset: int = 0) -> torch.Tensor:
        n = self.table.num_embeddings
        if offset + T > n:
            raise ValueError(
                f"learned positions exist for 0..{n - 1} only; positions {offset}..{offset + T - 1} were asked for"
            )
        return self.table.weight[offset : offset + T]  # (T, D)


# ----------------------------------------------------------------------------------
# Sinusoidal absolute positions


def sinusoidal_table(T: int, d_model: int, base: float = 10000.0, offset: int = 0,
                     dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """The ``(T, d_model)`` sinusoidal table for positions ``offset .. offset+T-1``.

    ``PE[pos, 2i] = sin(pos / base^(2i/D))`` and ``PE[pos, 2i+1] = cos(pos / base^(2i/D))``,
    computed in float64 and cast to ``dtype``.

    >>> sinusoidal_table(2, 4)
    tensor([[0.0000, 1.0000, 0.0000, 1.0000],
            [0.8415, 0.5403, 0.0100, 0.9999]])
    """
    if d_model % 2:
        raise ValueError(f"the sinusoidal table needs an even d_model, got {d_model}")
    pos = _positions(T, offset, device)[:, None]  # (T, 1)
    two_i = torch.arange(0, d_model, 2, device=device, dtype=torch.float64)  # 2i = 0, 2, 4, ...
    angle = pos / base ** (two_i / d_model)  # (T, D/2)
    table = torch.empty(T, d_model, dtype=torch.float64, device=device)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.to(dtype)


class SinusoidalPositions(nn.Module):
    """The fixed sinusoidal table, times ``scale``, as a non-persistent buffer (extended on demand).

    >>> SinusoidalPositions(d_model=4, context_length=8)(3, offset=10).shape
    torch.Size([3, 4])
    """

    def __init__(self, d_model: int, context_length: int, base: float = 10000.0, scale: float = 1.0) -> None:
        super().__init__()
        self.d_model, self.base, self.scale = d_model, base, scale
        self.register_buffer("table", scale * sinusoidal_table(context_length, d_model, base), persistent=False)

    def forward(self, T: int, offset: int = 0) -> torch.Tensor:
        if offset + T <= len(self.table):
            return self.table[offset : offset + T]  # (T, D)
        table = sinusoidal_table(T, self.d_model, self.base, offset, self.table.dtype, self.table.device)
        return self.scale * table


# ----------------------------------------------------------------------------------
# Rotary position embeddings (RoPE)


def rope_angles(T: int, d_head: int, base: float = 10000.0, offset: int = 0,
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of the angles ``pos * theta_i``, each ``(T, d_head / 2)`` (float64).

    ``theta_i = base^(-2i / d_head)``: pair 0 turns fastest (one radian per
    position), the last pair slowest.
    """
    if d_head % 2:
        raise ValueError(f"RoPE rotates pairs of coordinates: d_head must be even, got {d_head}")
    theta = base ** (-torch.arange(0, d_head, 2, device=device, dtype=torch.float64) / d_head)  # (Dh/2,)
    angle = _positions(T, offset, device)[:, None] * theta  # (T, Dh/2)
    return torch.cos(angle), torch.sin(angle)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each coordinate pair ``(x[2i], x[2i+1])`` of ``x`` (``(..., T, Dh)``) by its angle.

    ``(a, b) -> (a cos - b sin, a sin + b cos)``, with ``cos`` and ``sin`` of shape
    ``(T, Dh / 2)`` (from :func:`rope_angles`).

    >>> cos, sin = rope_angles(2, 2)
    >>> apply_rope(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), cos, sin)  # turned by 0 and 1 radian
    tensor([[1.0000, 0.0000],
            [0.5403, 0.8415]])
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]  # (..., T, Dh/2) each
    rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)  # (..., T, Dh/2, 2)
    return rotated.flatten(-2)  # (..., T, Dh), pairs interleaved back


class RotaryEmbedding(nn.Module):
    """RoPE for queries and keys of head size ``d_head``; cos/sin tables as buffers.

    Call it as ``q, k = rope(q, k, offset=0)`` on ``(..., T, Dh)`` tensors; positions
    beyond the stored tables are computed on the fly.

    >>> rope = RotaryEmbedding(d_head=4, context_length=8)
    >>> q, k = rope(torch.ones(1, 2, 5, 4), torch.ones(1, 2, 5, 4))
    >>> q.shape
    torch.Size([1, 2, 5, 4])
    """

    def __init__(self, d_head: int, context_length: int, base: float = 10000.0) -> None:
        super().__init__()
        self.d_head, self.base = d_head, base
        cos, sin = rope_angles(context_length, d_head, base)
        self.register_buffer("cos", cos.float(), persistent=False)
        self.register_buffer("sin", sin.float(), persistent=False)

    def angles(self, T: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and ``sin`` for positions ``offset .. offset+T-1``."""
        if offset + T <= len(self.cos):
            return self.cos[offset : offset + T], self.sin[offset : offset + T]
        return rope_angles(T, self.d_head, self.base, offset, self.cos.device)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        # The new queries and keys sit at the same positions; cached keys (later) are
        # stored already rotated, so they never pass through here again.
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(f"rotate queries and keys of the same length, got {q.shape[-2]} and {k.shape[-2]}")
        cos, sin = self.angles(q.shape[-2], offset)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


# ----------------------------------------------------------------------------------
# ALiBi: attention with linear biases


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """The per-head slopes of ALiBi, as the paper (and its reference code) defines them.

    For a power of two n: the geometric sequence starting at ``2^(-8/n)`` with that
    same ratio. Otherwise, with p the largest power of two below n: the p slopes for
    p heads, then every other slope of the sequence for 2p heads, until n are chosen.

    >>> alibi_slopes(4)
    tensor([0.2500, 0.0625, 0.0156, 0.0039])
    >>> alibi_slopes(3)
    tensor([0.0625, 0.0039, 0.2500])
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(p) + power_of_two(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: torch.Tensor, Tq: int, Tk: int | None = None, offset: int = 0) -> torch.Tensor:
    """The ``(H, Tq, Tk)`` additive bias ``-m_h * |i - j|`` for queries at ``offset..`` and keys at ``0..``.

    >>> alibi_bias(torch.tensor([0.5]), 3)
    tensor([[[-0.0000, -0.5000, -1.0000],
             [-0.5000, -0.0000, -0.5000],
             [-1.0000, -0.5000, -0.0000]]])
    """
    Tk = Tq + offset if Tk is None else Tk
    i = torch.arange(offset, offset + Tq, device=slopes.device)[:, None]
    j = torch.arange(Tk, device=slopes.device)[None, :]
    distance = (i - j).abs().to(slopes.dtype)  # (Tq, Tk)
    return -slopes[:, None, None] * distance  # (H, Tq, Tk)


class ALiBi(nn.Module):
    """ALiBi's slopes as a buffer; ``alibi(T)`` gives the ``(H, T, T)`` score bias.

    The bias is relative, so it needs no absolute position: ``alibi(Tq, Tk)`` is the
    bias of ``Tq`` queries that are the last ``Tq`` of ``Tk`` keys (a cache in front).

    >>> ALiBi(n_heads=2)(4).shape
    torch.Size([2, 4, 4])
    """

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def forward(self, Tq: int, Tk: int | None = None) -> torch.Tensor:
        Tk = Tq if Tk is None else Tk
        return alibi_bias(self.slopes, Tq, Tk, offset=Tk - Tq)  # (H, Tq, Tk)
