"""Generating text with a key/value cache.

A decoder generates one token at a time: feed ``x_1..x_t``, take the last
position's logits, pick ``x_{t+1}``, repeat. Done naively, step t runs the whole
model on all t tokens again, although the keys and values of positions ``1..t-1``
are exactly what the previous step computed: causal attention means an earlier
position never sees a later one, so nothing about it changes. The **KV cache**
keeps, for every layer, the keys and values ``(B, H, T, Dh)`` of the positions
seen so far; each step then runs the model on the *one* new token at position
``offset = cache.length``, appends its key and value, and lets its query attend to
all the cached ones. Per new token the work drops from a forward over ``t``
tokens to a forward over 1 (plus one attention row over ``t`` keys).

Design choices, and why:

* **Preallocated, not grown.** :class:`LayerKVCache` allocates its ``(B, H, T_max, Dh)``
  key and value tensors once, for the model's context length, and writes each
  new key into the next free slot; attention reads the view ``[:, :, :length]``.
  Growing by ``torch.cat`` (:class:`ConcatLayerKVCache`, kept as the teaching
  variant and benchmarked against) copies the whole cache at every step: O(t)
  memory traffic per token, O(T^2) over a generation, and a new allocation each
  time. Preallocation costs the full ``2 * layers * B * H * T_max * Dh`` elements
  up front (:func:`kv_cache_bytes`), which is also the most the cache can ever take.
* **Keys are cached after RoPE.** A rotary key is rotated by its own position
  once, when it is made; ALiBi's bias is relative, so the new queries get the
  bias rows for keys ``0 .. offset+T-1``; learned and sinusoidal positions are
  added to the new token's embedding at position ``offset``. All four schemes of
  chapter 5 work unchanged.
* **Past the context length, the window slides and the cache is rebuilt.** The
  model only ever sees ``context_length`` (C) tokens. Keeping the cached keys and
  dropping the oldest one would *not* equal running the model on the last C
  tokens: from layer 2 on, every cached key was computed by attending to tokens
  that have now left the window (and with learned or sinusoidal positions, at old
  absolute positions). So when the next token does not fit, :func:`generate`
  keeps the last ``C - slide + 1`` tokens, re-prefills the cache from them at
  positions ``0..``, and goes on one token at a time. ``slide=1`` (the default)
  is the exact sliding window that the uncached path computes with
  ``ids[:, -C:]`` (nanoGPT's crop), at the price of one C-token prefill per new
  token once the window is full; a larger ``slide`` re-prefills only every
  ``slide`` tokens (the model then sees between ``C - slide + 1`` and C tokens).
  The uncached path follows the same rule, so cached == uncached for every slide.
* **Key/value heads, not query heads.** With grouped-query attention
  (``GPTConfig(n_kv_heads=G)``) the cache holds ``G`` heads per layer, not ``H``:
  ``n_heads / n_kv_heads`` times less memory, and less to read at every step.

:func:`forward_cost` counts the FLOPs and the fewest bytes a forward must move:
their ratio, the *arithmetic intensity*, is what separates a prefill (many tokens
per weight read: compute-bound) from a decode step (one token per sequence per
weight read: memory-bandwidth-bound).
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from .data import check_ids
from .decoding import apply_repetition_penalty, sample_next
from .device import best_time, eval_mode


class LayerKVCache:
    """One layer's keys and values in preallocated ``(B, H, max_len, Dh)`` tensors.

    >>> c = LayerKVCache(batch_size=1, n_heads=2, max_len=8, d_head=4)
    >>> k, v = c.append(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    >>> k.shape, c.length
    (torch.Size([1, 2, 3, 4]), 3)
    """

    def __init__(self, batch_size: int, n_heads: int, max_len: int, d_head: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        if min(batch_size, n_heads, max_len, d_head) < 1:
            raise ValueError("batch_size, n_heads, max_len and d_head must all be >= 1")
        self.k = torch.zeros(batch_size, n_heads, max_len, d_head, dtype=dtype, device=device)  # (B, H, T_max, Dh)
        self.v = torch.zeros_like(self.k)  # (B, H, T_max, Dh)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` ``(B, H, T_new, Dh)`` after the cached ones; return all ``(B, H, length, Dh)``."""
        n = self.length + k.shape[-2]
        if n > self.k.shape[-2]:
            raise ValueError(f"the cache holds {self.k.shape[-2]} positions; {n} were asked for")
        if k.shape[:2] != self.k.shape[:2] or k.shape[-1] != self.k.shape[-1]:
            raise ValueError(f"keys of shape {tuple(k.shape)} do not fit a cache of shape {tuple(self.k.shape)}")
        self.k[:, :, self.length : n] = k
        self.v[:, :, self.length : n] = v
        self.length = n
        return self.k[:, :, :n], self.v[:, :, :n]  # views, no copy

    def reset(self) -> None:
        self.length = 0  # the old entries are simply overwritten

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions and forget the rest (they are overwritten later)."""
        self.length = _checked_length(length, self.length)

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()


def _checked_length(length: int, held: int) -> int:
    try:
        n = None if isinstance(length, bool) else operator.index(length)  # ints (numpy and 0-d tensor ones too)
    except TypeError:
        n = None
    if n is None or not 0 <= n <= held:
        raise ValueError(f"length must be an int in [0, {held}] (the positions cached), got {length!r}")
    return n


class ConcatLayerKVCache:
    """Teaching variant: the cache grown by ``torch.cat`` at every step (copies it all).

    >>> c = ConcatLayerKVCache()
    >>> k, v = c.append(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    >>> k, v = c.append(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    >>> k.shape, c.length
    (torch.Size([1, 2, 4, 4]), 4)
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)  # (B, H, length, Dh), a new copy
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    def reset(self) -> None:
        self.k = self.v = None

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (a copy of them) and drop the rest."""
        if _checked_length(length, self.length) == 0:
            self.reset()
        elif self.k is not None:
            self.k, self.v = self.k[:, :, :length].clone(), self.v[:, :, :length].clone()

    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()


class QuantizedLayerKVCache:
    """One layer's keys and values held as ``bits``-bit integers, one float32 scale per vector.

    Each new key (and value) vector of ``Dh`` numbers is stored as integers in
    ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` times its own scale, ``max |x| / (2^(bits-1) - 1)``
    (symmetric absmax, per token and head). Attention reads the dequantised
    vectors, the current token's too, so the model sees exactly what a
    quantised cache would give it. At 8 bits the codes are ``int8``; at 4 bits two
    codes share one ``uint8`` (``Dh`` must be even), so :meth:`nbytes` is what the
    tensors really hold.

    >>> c = QuantizedLayerKVCache(batch_size=1, n_heads=1, max_len=4, d_head=2, bits=8)
    >>> k, v = c.append(torch.tensor([[[[1.0, -0.5]]]]), torch.tensor([[[[0.25, 0.0]]]]))
    >>> k.flatten().tolist(), c.codes()[0][0, 0, 0].tolist()
    ([1.0, -0.5039370059967041], [127, -64])
    """

    def __init__(self, batch_size: int, n_heads: int, max_len: int, d_head: int, bits: int = 8,
                 device: torch.device | str | None = None) -> None:
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits!r}")
        if min(batch_size, n_heads, max_len, d_head) < 1:
            raise ValueError("batch_size, n_heads, max_len and d_head must all be >= 1")
        if bits == 4 and d_head % 2:
            raise ValueError(f"4-bit codes are packed two per byte: d_head must be even, got {d_head}")
        self.bits, self.top = bits, 2 ** (bits - 1) - 1
        shape = (batch_size, n_heads, max_len, d_head if bits == 8 else d_head // 2)
        dtype = torch.int8 if bits == 8 else torch.uint8
        self.qk = torch.zeros(shape, dtype=dtype, device=device)  # codes (two per byte at 4 bits)
        self.qv = torch.zeros_like(self.qk)
        self.sk = torch.zeros(batch_size, n_heads, max_len, 1, device=device)  # one scale per vector
        self.sv = torch.zeros_like(self.sk)
        self.length = 0

    def _quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = x.detach().abs().amax(dim=-1, keepdim=True).float() / self.top
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero vector stays zero
        codes = torch.round(x.float() / scale).clamp(-self.top, self.top).to(torch.int8)
        if self.bits == 4:  # [-7, 7] -> [1, 15]; even entries in the low nibble, odd in the high
            u = (codes + 8).to(torch.uint8)
            codes = u[..., 0::2] | (u[..., 1::2] << 4)
        return codes, scale

    def _unpack(self, codes: torch.Tensor) -> torch.Tensor:
        if self.bits == 8:
            return codes
        low, high = (codes & 15).to(torch.int8) - 8, (codes >> 4).to(torch.int8) - 8
        return torch.stack([low, high], dim=-1).flatten(-2)  # (..., Dh)

    def codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The integer codes of the cached keys and values, ``(B, H, length, Dh)`` ``int8`` each (unpacked)."""
        n = self.length
        return self._unpack(self.qk[:, :, :n]), self._unpack(self.qv[:, :, :n])

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise and store ``k, v`` ``(B, H, T_new, Dh)``; return all, dequantised, in ``k``'s dtype."""
        n = self.length + k.shape[-2]
        if n > self.qk.shape[-2]:
            raise ValueError(f"the cache holds {self.qk.shape[-2]} positions; {n} were asked for")
        d_head = self.qk.shape[-1] * (1 if self.bits == 8 else 2)
        if k.shape[:2] != self.qk.shape[:2] or k.shape[-1] != d_head:
            raise ValueError(f"keys of shape {tuple(k.shape)} do not fit a cache of "
                             f"{tuple(self.qk.shape[:3]) + (d_head,)}")
        self.qk[:, :, self.length : n], self.sk[:, :, self.length : n] = self._quantise(k)
        self.qv[:, :, self.length : n], self.sv[:, :, self.length : n] = self._quantise(v)
        self.length = n
        k_codes, v_codes = self.codes()
        return ((k_codes.float() * self.sk[:, :, :n]).to(k.dtype),
                (v_codes.float() * self.sv[:, :, :n]).to(v.dtype))

    def reset(self) -> None:
        self.length = 0

    def truncate(self, length: int) -> None:
        self.length = _checked_length(length, self.length)

    def nbytes(self) -> int:
        """Bytes held by the codes and the scales of the whole preallocated cache."""
        return 2 * (self.qk.numel() * self.qk.element_size() + self.sk.numel() * self.sk.element_size())


class KVCache:
    """The key/value caches of all layers of a model; ``model(ids, offset, cache=...)`` fills it.

    Each layer holds ``(B, G, T_max, Dh)`` keys and values, ``G = config.kv_heads``
    (``n_heads`` unless the model uses grouped-query attention).

    >>> from lmcourse.transformer import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=2, n_heads=2))
    >>> cache = KVCache.for_model(model, batch_size=3)
    >>> _ = model(torch.zeros(3, 5, dtype=torch.long), cache=cache)
    >>> cache.length, tuple(cache.layers[0].k.shape), cache.nbytes()
    (5, (3, 2, 8, 8), 6144)
    """

    def __init__(self, layers: list[LayerKVCache] | list[ConcatLayerKVCache] | list[QuantizedLayerKVCache]) -> None:
        self.layers = layers

    @classmethod
    def for_model(cls, model: nn.Module, batch_size: int, max_len: int | None = None,
                  concat: bool = False, bits: int | None = None) -> "KVCache":
        """An empty cache for ``model`` (a :class:`~lmcourse.transformer.GPT`), on its device and dtype.

        ``max_len`` defaults to the context length; ``concat=True`` gives the
        ``torch.cat`` teaching variant instead of preallocated tensors; ``bits``
        (8 or 4) a cache of quantised keys and values (:class:`QuantizedLayerKVCache`).
        """
        c = model.config
        if concat and bits is not None:
            raise ValueError("choose concat=True or bits=..., not both")
        if concat:
            return cls([ConcatLayerKVCache() for _ in range(c.n_layers)])
        p = next(model.parameters())
        T = c.context_length if max_len is None else max_len
        G = getattr(c, "kv_heads", c.n_heads)  # key/value heads: fewer than n_heads with GQA
        if bits is not None:
            return cls([QuantizedLayerKVCache(batch_size, G, T, c.d_model // c.n_heads, bits, p.device)
                        for _ in range(c.n_layers)])
        return cls([LayerKVCache(batch_size, G, T, c.d_model // c.n_heads, p.dtype, p.device)
                    for _ in range(c.n_layers)])

    @property
    def length(self) -> int:
        """The number of positions cached (the same in every layer between forward passes)."""
        return self.layers[0].length

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions of every layer: the next token goes at position ``length``."""
        for layer in self.layers:
            layer.truncate(length)

    def nbytes(self) -> int:
        """Bytes held by the key and value tensors of all layers."""
        return sum(layer.nbytes() for layer in self.layers)


def kv_cache_bytes(n_layers: int, batch_size: int, n_heads: int, seq_len: int, d_head: int,
                   bytes_per_element: int = 4) -> int:
    """Memory of a KV cache: ``2 (K and V) x layers x B x H x T x Dh x bytes``.

    ``n_heads`` is the number of *key/value* heads: ``n_kv_heads`` for a model with
    grouped-query attention (``config.kv_heads``), which divides the memory by
    ``n_heads / n_kv_heads``.

    >>> kv_cache_bytes(n_layers=2, batch_size=3, n_heads=2, seq_len=8, d_head=8)
    6144
    """
    return 2 * n_layers * batch_size * n_heads * seq_len * d_head * bytes_per_element


def flops_per_new_token(config, t: int, use_cache: bool) -> tuple[int, int]:
    """FLOPs to get the next token's logits when the window holds ``t`` tokens: ``(linear, attention)``.

    One token through the linear layers costs ``2 x`` (multiply-adds) per weight:
    ``24 L D^2`` per token for the blocks (Q, K, V and output ``4 D^2``, the MLP
    ``8 D^2``, per layer) plus ``2 D V`` for the head. (Exactly: with ``G`` key/value
    heads K and V take ``2 D D_kv``, ``D_kv = G Dh``; a SwiGLU MLP has three
    ``D x round(8D/3)`` matrices.) Attention of one query on
    ``t`` keys costs ``4 t D`` per layer (scores ``q k^T`` and the weighted sum of
    values). Without a cache all ``t`` positions are recomputed: ``t`` times the
    linear work and ``4 L t^2 D`` in attention (the dense ``t x t`` products; a causal
    kernel may skip about half). With a cache: one position, ``4 L t D``.

    >>> from lmcourse.transformer import GPTConfig
    >>> c = GPTConfig(vocab_size=10, d_model=16, n_layers=2)
    >>> flops_per_new_token(c, 5, use_cache=True), flops_per_new_token(c, 5, use_cache=False)
    ((12608, 640), (63040, 3200))
    """
    if t < 1:
        raise ValueError(f"t must be >= 1, got {t}")
    L, D = config.n_layers, config.d_model
    block, head = _linear_weights(config)
    per_token = 2 * (L * block + head)  # 24 L D^2 + 2 D V without GQA and with a 4D MLP
    if use_cache:
        return per_token, 4 * L * t * D
    return t * per_token, 4 * L * t * t * D


def _linear_weights(config) -> tuple[int, int]:
    """Weights one token multiplies by: ``(per block, head)`` (no biases, norms or embeddings)."""
    D, V = config.d_model, config.vocab_size
    d_kv = getattr(config, "kv_heads", config.n_heads) * (D // config.n_heads)  # G Dh
    mlp = getattr(config, "mlp", "gelu")
    hidden = round(8 * D / 3) if mlp == "swiglu" else 4 * D
    attention = D * (D + 2 * d_kv) + D * D  # W_q, W_k, W_v, W_o
    return attention + (3 if mlp == "swiglu" else 2) * D * hidden, D * V


def forward_cost(config, new_tokens: int, cached: int = 0, batch_size: int = 1,
                 bytes_per_element: int = 4) -> tuple[int, int]:
    """``(FLOPs, bytes)`` of one forward over ``new_tokens`` per sequence after ``cached`` cached ones.

    A *prefill* is ``cached=0, new_tokens=T``; a *decode step* is ``new_tokens=1``.
    FLOPs: 2 per weight of the linear layers (head included) per new token, plus
    attention, ``4 D`` per layer per new query per key (``cached + new_tokens``
    keys, every one counted, as :func:`flops_per_new_token` does). Bytes: the
    fewest a forward must move, the weights read once (all ``B x new_tokens``
    tokens share them) and each sequence's keys and values read once,
    ``2 L G (cached + new_tokens) Dh`` elements per sequence. Activations, biases
    and norms are left out, so ``FLOPs / bytes`` is the highest *arithmetic
    intensity* the forward can reach: about ``B x new_tokens / 2`` FLOPs per byte
    of float32 weights while the weights dominate, and ``2 H / (G x bytes)`` in
    a decode step's attention, whatever the batch.

    >>> from lmcourse.transformer import GPTConfig
    >>> c = GPTConfig(vocab_size=10, d_model=16, n_layers=2)
    >>> forward_cost(c, 1, cached=4)  # decode: 4 x (6,304 weights + 320 cached keys and values) bytes
    (13248, 26496)
    >>> forward_cost(c, 8)  # prefill of 8 tokens: 8 times the linear FLOPs, the weights still read once
    (109056, 27264)
    """
    for name, value, low in (("new_tokens", new_tokens, 1), ("cached", cached, 0), ("batch_size", batch_size, 1),
                             ("bytes_per_element", bytes_per_element, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    L, D, t = config.n_layers, config.d_model, cached + new_tokens
    block, head = _linear_weights(config)
    kv = 2 * L * getattr(config, "kv_heads", config.n_heads) * t * (D // config.n_heads)  # per sequence
    n = batch_size * new_tokens
    flops = 2 * n * (L * block + head) + 4 * L * n * t * D
    return flops, bytes_per_element * (L * block + head + batch_size * kv)


def _slid(start: int, n: int, context_length: int, slide: int) -> int:
    """The window's new first index once ``n`` tokens exist (the window is ``ids[start:n]``)."""
    if n - start > context_length:  # the newest token does not fit: keep the last C - slide + 1
        return n - (context_length - slide + 1)
    return start


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    slide: int = 1,
    concat_cache: bool = False,
    min_p: float | None = None,
) -> torch.Tensor:
    """Continue ``prompt_ids`` ``(B, T)`` by ``max_new_tokens``; returns ids ``(B, T + max_new_tokens)``.

    Each step takes the last position's logits, applies the repetition penalty
    (over every id so far, prompt included), then :func:`lmcourse.decoding.sample_next`
    (temperature, top-k, top-p, min-p, draw; greedy with ``do_sample=False``). With
    ``use_cache`` the model runs on one new token per step against a
    :class:`KVCache`; without, on the whole window every step. Both give the same
    tokens. Past the context length the window slides (see the module docstring;
    ``slide`` tokens at a time). ``concat_cache`` selects the ``torch.cat`` teaching
    cache. The model runs in eval mode (restored afterwards). The prompt's ids are
    checked against ``model.config.vocab_size`` (:func:`lmcourse.data.check_ids`).

    >>> from lmcourse.transformer import GPT, GPTConfig
    >>> _ = torch.manual_seed(0)
    >>> model = GPT(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=2, n_heads=2))
    >>> prompt = torch.tensor([[1, 2, 3]])
    >>> out = generate(model, prompt, 10, do_sample=False)
    >>> out.shape, torch.equal(out, generate(model, prompt, 10, do_sample=False, use_cache=False))
    (torch.Size([1, 13]), True)
    """
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must be (B, T) with T >= 1, got shape {tuple(prompt_ids.shape)}")
    check_ids(prompt_ids, model.config.vocab_size, batched=True)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    C = model.config.context_length
    if not 1 <= slide <= C:
        raise ValueError(f"slide must be in [1, context_length={C}], got {slide}")
    B, T0 = prompt_ids.shape
    device = next(model.parameters()).device
    ids = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=device)  # (B, T + new)
    ids[:, :T0] = prompt_ids
    with eval_mode(model):  # dropout would make every step (and cached vs uncached) differ
        start = max(0, T0 - C)  # a prompt longer than the context: its last C tokens
        cache = KVCache.for_model(model, B, concat=concat_cache) if use_cache else None
        logits = model(ids[:, start:T0], cache=cache)[:, -1]  # (B, V); fills the cache (prefill)
        for n in range(T0, T0 + max_new_tokens):  # n tokens exist; choose token n
            if repetition_penalty is not None:
                logits = apply_repetition_penalty(logits, ids[:, :n], repetition_penalty)
            ids[:, n] = sample_next(logits, do_sample=do_sample, temperature=temperature,
                                    top_k=top_k, top_p=top_p, min_p=min_p, generator=generator)
            if n + 1 == T0 + max_new_tokens:
                break
            new_start = _slid(start, n + 1, C, slide)
            if cache is None:
                start = new_start
                logits = model(ids[:, start : n + 1])[:, -1]  # the whole window again
            elif new_start != start:  # the window moved: rebuild the cache from it
                start = new_start
                cache.reset()
                logits = model(ids[:, start : n + 1], cache=cache)[:, -1]
            else:  # one token, at position cache.length, against the cache
                logits = model(ids[:, n : n + 1], offset=cache.length, cache=cache)[:, -1]
    return ids


def tokens_per_second(model: nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int, repeats: int = 1,
                      **generate_kwargs) -> float:
    """Generated tokens per second (all rows counted) of greedy :func:`generate`, best of ``repeats``.

    Timed by :func:`lmcourse.device.best_time` on the model's device (synchronised).
    """
    device = next(model.parameters()).device
    seconds = best_time(lambda: generate(model, prompt_ids, max_new_tokens, do_sample=False, **generate_kwargs),
                        repeats=repeats, device=device)
    return prompt_ids.shape[0] * max_new_tokens / seconds


def compare_tokens_per_second(model: nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int,
                              variants: dict[str, dict], repeats: int = 2) -> dict[str, float]:
    """Tokens per second of several ways to run :func:`generate`, timed alike.

    ``variants`` maps a name to keyword arguments of :func:`generate` (``{}`` for
    the default cached run, ``{"use_cache": False}`` for none). Every variant gets
    the same treatment: ``repeats`` rounds, each running every variant once in
    turn (so a machine whose load drifts slows them all), and the best round counts.

    >>> from lmcourse.transformer import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=1, n_heads=2))
    >>> speed = compare_tokens_per_second(model, torch.tensor([[1, 2]]), 4, {"cache": {}, "none": {"use_cache": False}})
    >>> sorted(speed)
    ['cache', 'none']
    """
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        raise TypeError("variants must be a non-empty dict of name -> dict of generate() keyword arguments")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    best = dict.fromkeys(variants, 0.0)
    for _ in range(repeats):
        for name, kwargs in variants.items():
            best[name] = max(best[name], tokens_per_second(model, prompt_ids, max_new_tokens, 1, **kwargs))
    return best
