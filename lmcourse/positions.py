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

Also here: :func:`sinusoidal_shift_matrix`, the rotation that turns ``PE(p)`` into
``PE(p + k)`` for every p (the linearity Vaswani et al. point to);
:func:`apply_rope_half`, RoPE in the half-split layout of GPT-NeoX and Hugging
Face's Llama, equal to :func:`apply_rope` up to the permutation
:func:`rope_half_permutation` (Meta's own Llama code rotates neighbouring pairs;
Hugging Face's conversion script permutes the query and key weights to match);
and ways to read windows longer than the trained ones: position interpolation
(Chen et al., 2023, ``scale`` of :func:`rope_angles`), "NTK-aware" scaling and
YaRN (Peng et al., 2023), which slow some pairs or all of them down.
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


def sinusoidal_shift_matrix(k: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The ``(d_model, d_model)`` matrix ``M_k`` with ``PE[p + k] = M_k @ PE[p]`` for *every* p (float64).

    Pair i of the table is ``(sin p w_i, cos p w_i)`` with ``w_i = base^(-2i/D)``; by
    the angle-sum formulas, moving k positions turns it by ``k w_i``:
    ``sin(p+k)w = sin pw cos kw + cos pw sin kw`` and ``cos(p+k)w = cos pw cos kw - sin pw sin kw``.
    So ``M_k`` is block-diagonal, one 2 x 2 rotation per pair, and depends on k
    only: Vaswani et al.'s reason to hope a model can attend by relative position.

    >>> M = sinusoidal_shift_matrix(3, 4)
    >>> pe = sinusoidal_table(10, 4, dtype=torch.float64)
    >>> torch.allclose(pe[3:], pe[:-3] @ M.T)
    True
    """
    if d_model % 2 or d_model < 2:
        raise ValueError(f"the sinusoidal table needs an even d_model >= 2, got {d_model}")
    w = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (D/2,)
    c, s = torch.cos(k * w), torch.sin(k * w)
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    M[0::2, 0::2] = torch.diag(c)  # new sin from old sin
    M[0::2, 1::2] = torch.diag(s)  # ... and old cos
    M[1::2, 0::2] = torch.diag(-s)  # new cos from old sin
    M[1::2, 1::2] = torch.diag(c)  # ... and old cos
    return M


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


def rope_frequencies(d_head: int, base: float = 10000.0) -> torch.Tensor:
    """RoPE's angular frequencies ``theta_i = base^(-2i / d_head)``, radians per position (float64, ``(d_head/2,)``).

    Pair ``i`` completes a turn every ``2 pi / theta_i`` positions, its wavelength:
    from ``2 pi`` for pair 0 up to almost ``2 pi * base`` for the last pair.

    >>> rope_frequencies(4, base=100.0)
    tensor([1.0000, 0.1000], dtype=torch.float64)
    """
    if d_head % 2 or d_head < 2:
        raise ValueError(f"RoPE rotates pairs of coordinates: d_head must be even and >= 2, got {d_head}")
    if not base > 1:
        raise ValueError(f"base must be > 1, got {base}")
    return base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)


def rope_angles(T: int, d_head: int, base: float = 10000.0, offset: int = 0,
                device: torch.device | None = None, scale: float = 1.0,
                freqs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of the angles ``pos * scale * theta_i``, each ``(T, d_head / 2)`` (float64).

    ``theta_i = base^(-2i / d_head)`` (:func:`rope_frequencies`): pair 0 turns
    fastest (one radian per position), the last pair slowest; ``freqs`` replaces them
    with frequencies of your own (the context extensions below). ``scale < 1`` is
    position interpolation (Chen et al., 2023): a model trained on ``L`` positions
    reads ``L / scale`` positions with the angles of ``0 .. L`` (fractional positions
    in between).

    >>> cos, sin = rope_angles(4, 2, scale=0.5)
    >>> torch.atan2(sin, cos)[:, 0]  # positions 0, 1, 2, 3 turned as 0, 0.5, 1, 1.5
    tensor([0.0000, 0.5000, 1.0000, 1.5000], dtype=torch.float64)
    """
    if d_head % 2:
        raise ValueError(f"RoPE rotates pairs of coordinates: d_head must be even, got {d_head}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if freqs is None:
        theta = rope_frequencies(d_head, base)
    else:
        theta = torch.as_tensor(freqs, dtype=torch.float64)
        if theta.shape != (d_head // 2,):
            raise ValueError(f"freqs must hold one frequency per pair, shape ({d_head // 2},), "
                             f"got {tuple(theta.shape)}")
    angle = _positions(T, offset, device)[:, None] * scale * theta.to(device)  # (T, Dh/2)
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


def apply_rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the half-split layout (GPT-NeoX, Hugging Face): pair i is ``(x[i], x[i + Dh/2])``.

    Meta's Llama code pairs neighbours, as :func:`apply_rope` does; Hugging Face's
    Llama uses this layout because its conversion script permutes the rows of the
    query and key weights (``permute`` in ``convert_llama_weights_to_hf.py``).

    ``x * cat(cos, cos) + rotate_half(x) * cat(sin, sin)`` with
    ``rotate_half([a, b]) = [-b, a]``: the same rotations as :func:`apply_rope`, on
    other pairs of coordinates. The two are equal up to a fixed permutation of the
    coordinates, :func:`rope_half_permutation`; since the query and key projections
    are learned, a model can be trained in either layout.

    >>> cos, sin = rope_angles(2, 2)
    >>> apply_rope_half(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), cos, sin)  # one pair: as apply_rope
    tensor([[1.0000, 0.0000],
            [0.5403, 0.8415]])
    """
    if x.shape[-1] != 2 * cos.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} coordinates, the angles are for {2 * cos.shape[-1]}")
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    a, b = x.chunk(2, dim=-1)  # (..., T, Dh/2): first halves, second halves
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)  # (..., T, Dh)


def rope_half_permutation(d_head: int) -> torch.Tensor:
    """The order of coordinates that turns the interleaved layout into the half-split one.

    ``perm = [0, 2, 4, ..., 1, 3, 5, ...]``: with it,
    ``apply_rope(x, cos, sin)[..., perm] == apply_rope_half(x[..., perm], cos, sin)``.

    >>> rope_half_permutation(6)
    tensor([0, 2, 4, 1, 3, 5])
    """
    if d_head % 2 or d_head < 2:
        raise ValueError(f"RoPE rotates pairs of coordinates: d_head must be even and >= 2, got {d_head}")
    return torch.cat((torch.arange(0, d_head, 2), torch.arange(1, d_head, 2)))


class RotaryEmbedding(nn.Module):
    """RoPE for queries and keys of head size ``d_head``; cos/sin tables as buffers.

    Call it as ``q, k = rope(q, k, offset=0)`` on ``(..., T, Dh)`` tensors; positions
    beyond the stored tables are computed on the fly. ``scale`` multiplies every
    position (position interpolation, see :func:`rope_angles`); ``freqs`` replaces
    the frequencies (:func:`ntk_frequencies`, :func:`yarn_frequencies`);
    ``attention_scale`` multiplies the rotated queries and keys, so every score is
    multiplied by its square (YaRN's temperature, :func:`yarn_attention_scale`).

    >>> rope = RotaryEmbedding(d_head=4, context_length=8)
    >>> q, k = rope(torch.ones(1, 2, 5, 4), torch.ones(1, 2, 5, 4))
    >>> q.shape
    torch.Size([1, 2, 5, 4])
    """

    def __init__(self, d_head: int, context_length: int, base: float = 10000.0, scale: float = 1.0,
                 freqs: torch.Tensor | None = None, attention_scale: float = 1.0) -> None:
        super().__init__()
        if not attention_scale > 0:
            raise ValueError(f"attention_scale must be positive, got {attention_scale}")
        self.d_head, self.base, self.scale, self.attention_scale = d_head, base, scale, attention_scale
        self.freqs = None if freqs is None else torch.as_tensor(freqs, dtype=torch.float64).clone()
        cos, sin = self._angles(context_length, 0, None)
        self.register_buffer("cos", cos.float(), persistent=False)
        self.register_buffer("sin", sin.float(), persistent=False)

    def _angles(self, T: int, offset: int, device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rope_angles(T, self.d_head, self.base, offset, device, self.scale, self.freqs)
        return self.attention_scale * cos, self.attention_scale * sin

    def angles(self, T: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and ``sin`` for positions ``offset .. offset+T-1`` (times ``attention_scale``)."""
        if offset + T <= len(self.cos):
            return self.cos[offset : offset + T], self.sin[offset : offset + T]
        return self._angles(T, offset, self.cos.device)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        # The new queries and keys sit at the same positions; cached keys (later) are
        # stored already rotated, so they never pass through here again.
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(f"rotate queries and keys of the same length, got {q.shape[-2]} and {k.shape[-2]}")
        cos, sin = self.angles(q.shape[-2], offset)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


# ----------------------------------------------------------------------------------
# Reading longer windows with RoPE: which pairs to slow down


def rope_wavelengths(d_head: int, base: float = 10000.0) -> torch.Tensor:
    """How many positions each pair takes to complete one turn, ``2 pi / theta_i`` (float64).

    A pair whose wavelength is shorter than the trained length has been seen at
    every angle in training; a longer one has only seen part of its circle.

    >>> rope_wavelengths(4, base=100.0)
    tensor([ 6.2832, 62.8319], dtype=torch.float64)
    """
    return 2 * math.pi / rope_frequencies(d_head, base)


def blend_frequencies(freqs: torch.Tensor, factor: float, keep: torch.Tensor) -> torch.Tensor:
    """Slow each pair down by ``factor`` in proportion ``1 - keep``: ``keep = 1`` leaves it, ``0`` interpolates it.

    ``theta_i * (keep_i + (1 - keep_i) / factor)``: interpolating every pair
    (``keep = 0``) is position interpolation; YaRN keeps the fast pairs and
    interpolates the slow ones.

    >>> blend_frequencies(torch.tensor([1.0, 0.1]), 4.0, torch.tensor([1.0, 0.0]))
    tensor([1.0000, 0.0250])
    """
    if not factor >= 1:
        raise ValueError(f"factor is how many times longer the windows are: >= 1, got {factor}")
    keep = torch.as_tensor(keep, dtype=freqs.dtype)
    if keep.shape != freqs.shape or (keep < 0).any() or (keep > 1).any():
        raise ValueError(f"keep must be in [0, 1], one per pair ({tuple(freqs.shape)}), got {keep}")
    return freqs * (keep + (1 - keep) / factor)


def ntk_frequencies(d_head: int, factor: float, base: float = 10000.0) -> torch.Tensor:
    """"NTK-aware" scaling (bloc97, 2023): a larger base, ``base * factor^(d/(d-2))``.

    The fastest pair keeps its frequency and the slowest is slowed by exactly
    ``factor``, as position interpolation would slow it; the pairs between are slowed
    by less the faster they turn.

    >>> f = ntk_frequencies(8, 4.0)
    >>> round((rope_frequencies(8) / f)[-1].item(), 6)  # the slowest pair: 4 times slower
    4.0
    """
    if not factor >= 1:
        raise ValueError(f"factor is how many times longer the windows are: >= 1, got {factor}")
    if d_head < 4:
        raise ValueError(f"NTK-aware scaling needs d_head >= 4, got {d_head}")
    return rope_frequencies(d_head, base * factor ** (d_head / (d_head - 2)))


def yarn_frequencies(d_head: int, factor: float, trained_length: int, base: float = 10000.0,
                     fast: float = 32.0, slow: float = 1.0) -> torch.Tensor:
    """YaRN's frequencies (Peng et al., 2023, "NTK-by-parts"): which pairs to interpolate, by turns in training.

    Pair ``i`` turns ``trained_length / wavelength_i`` times over the trained window.
    Pairs that turn more than ``fast`` times keep their frequency; pairs that turn
    less than ``slow`` times are interpolated (divided by ``factor``); in between,
    a linear ramp over the pair index, with the bounds rounded outwards as the
    paper's code and Hugging Face's ``_compute_yarn_parameters`` round them.
    """
    if trained_length < 1 or not fast > slow > 0:
        raise ValueError(f"need trained_length >= 1 and fast > slow > 0, got {trained_length}, {fast}, {slow}")

    def pair_index(turns: float) -> float:  # the (fractional) pair that turns this often over the trained window
        return d_head * math.log(trained_length / (turns * 2 * math.pi)) / (2 * math.log(base))

    half = d_head // 2
    low = max(math.floor(pair_index(fast)), 0)
    high = min(math.ceil(pair_index(slow)), d_head - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(half, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)  # 0: keep, 1: interpolate
    return blend_frequencies(rope_frequencies(d_head, base), factor, 1 - ramp)


def yarn_attention_scale(factor: float) -> float:
    """YaRN's temperature, ``0.1 ln(factor) + 1``, applied to queries and keys (so scores get its square).

    >>> round(yarn_attention_scale(4.0), 4)
    1.1386
    """
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


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
