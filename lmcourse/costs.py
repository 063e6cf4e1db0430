"""What a sequence layer costs: sequential depth, arithmetic, memory, and attention in tiles.

Chapters 3 and 4 compare a recurrent layer with an attention layer the way
Vaswani et al. (2017, Table 1) do, per layer and as the length T grows:

* **sequential depth**: how many operations must run one after another.
  :func:`graph_depth` measures it on the autograd graph of a computation (the
  longest chain of operations from the output back to the inputs): a recurrence
  of T steps is a chain of about T cells, attention is a fixed handful of
  matrix products whatever T is;
* **arithmetic**: :func:`layer_cost` counts the multiply-adds, ``O(T d^2)`` for
  a recurrence and ``O(T^2 d)`` for attention's scores and weighted sum, along
  with the sequential steps and the longest path a signal travels between two
  positions;
* **memory**: :func:`peak_memory` runs a function and reports the most bytes that
  the tensors it created held *at the same time*, with every tensor it created,
  so the ``T x T`` intermediates of attention written out can be counted;
* :func:`tiled_attention` is the algorithm behind FlashAttention (Dao et al.,
  2022; the online softmax of Milakov and Gimelshein, 2018): the keys are read in
  blocks and the softmax is rescaled as each block arrives, so the ``T x T``
  matrix never exists. Same result, memory ``O(T * block)`` instead of ``O(T^2)``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# ----------------------------------------------------------------------------------
# Sequential depth


def graph_depth(output: torch.Tensor) -> int:
    """The number of operations on the longest chain of the autograd graph behind ``output``.

    Each operation that had to wait for the one before it adds one; operations
    on parallel branches do not add up. Leaves (inputs, parameters) count 0.

    >>> x = torch.ones(3, requires_grad=True)
    >>> graph_depth(((x * 2) + 1).sum()), graph_depth(x * 2 + x * 3)
    (3, 2)
    """
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"output must be a tensor, got {type(output).__name__}")
    if output.grad_fn is None:
        raise ValueError("output has no autograd graph: compute it from tensors with requires_grad=True")
    depth: dict[object, int] = {}
    stack = [(output.grad_fn, False)]
    while stack:  # iterative post-order: a chain of thousands of steps would overflow recursion
        node, expanded = stack.pop()
        if node in depth:
            continue
        children = [n for n, _ in node.next_functions if n is not None]
        if expanded:
            own = 0 if type(node).__name__ == "AccumulateGrad" else 1
            depth[node] = own + max((depth[n] for n in children), default=0)
        else:
            stack.append((node, True))
            stack.extend((n, False) for n in children if n not in depth)
    return depth[output.grad_fn]


# ----------------------------------------------------------------------------------
# Arithmetic (Vaswani et al., 2017, Table 1)


@dataclass(frozen=True)
class LayerCost:
    """The cost of one layer on a sequence of ``T`` vectors of width ``d``."""

    multiply_adds: int  # arithmetic of the layer's sequence-mixing part
    sequential_steps: int  # operations that must wait for one another
    max_path_length: int  # layers of steps a signal crosses from position 0 to position T-1


def layer_cost(kind: str, T: int, d: int) -> LayerCost:
    """Multiply-adds, sequential steps and path length of one layer, as in Vaswani et al.'s Table 1.

    * ``"rnn"``: ``h_t = tanh(W x_t + U h_{t-1})``: two ``d x d`` products per step,
      ``2 T d^2``; T steps in a row; position 0 reaches T-1 through T-1 steps;
    * ``"lstm"``: four gates, each with two ``d x d`` products: ``8 T d^2``;
    * ``"attention"``: the four ``d x d`` projections (queries, keys, values,
      output), ``4 T d^2``, plus ``Q K^T`` and ``weights V`` over all pairs,
      ``2 T^2 d``; one step; every position reads every other directly, path
      length 1.

    Both sides count their projections, so the LSTM's ``8 T d^2`` (input and
    hidden products) meets attention's ``4 T d^2 + 2 T^2 d`` at ``T = 2d``.
    (Vaswani et al.'s table gives only the orders, ``O(T d^2)`` against
    ``O(T^2 d)``, and leaves the projections out.)

    >>> layer_cost("attention", T=4, d=8)
    LayerCost(multiply_adds=1280, sequential_steps=1, max_path_length=1)
    """
    if T < 1 or d < 1:
        raise ValueError(f"T and d must be >= 1, got T={T}, d={d}")
    if kind == "rnn":
        return LayerCost(2 * T * d * d, T, max(T - 1, 1))
    if kind == "lstm":
        return LayerCost(8 * T * d * d, T, max(T - 1, 1))
    if kind == "attention":
        return LayerCost(4 * T * d * d + 2 * T * T * d, 1, 1)
    raise ValueError(f"kind must be 'rnn', 'lstm' or 'attention', got {kind!r}")


# ----------------------------------------------------------------------------------
# Memory


@dataclass
class MemoryReport:
    """What :func:`peak_memory` saw: the peak, and every tensor the function allocated."""

    peak_bytes: int = 0  # most bytes held at once by tensors the function allocated
    allocations: list[tuple[str, tuple[int, ...], int]] = field(default_factory=list)  # (op, shape, bytes)

    def count(self, shape: tuple[int, ...]) -> int:
        """How many allocated tensors had exactly this ``shape``."""
        return sum(s == tuple(shape) for _, s, _ in self.allocations)


class _Tracker(TorchDispatchMode):
    """Sees every tensor operation; counts new storages while any tensor on them is alive."""

    def __init__(self, report: MemoryReport) -> None:
        super().__init__()
        self.report, self.live, self.refs, self.current = report, {}, {}, 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.current -= self.live.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if key in self.live:  # a view of (or the same as) a tensor we already track
                self.refs[key] += 1
            elif key in inputs or nbytes == 0:
                continue  # a view of a tensor made outside the function, or nothing
            else:
                self.live[key], self.refs[key] = nbytes, 1
                self.current += nbytes
                self.report.peak_bytes = max(self.report.peak_bytes, self.current)
                self.report.allocations.append((str(func.overloadpacket.__name__), tuple(t.shape), nbytes))
            weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], object]) -> MemoryReport:
    """Run ``fn()`` and report the most bytes its new tensors held at once (exact, on any device).

    Every tensor operation inside ``fn`` is watched (a ``TorchDispatchMode``); a
    new storage counts from the operation that creates it until the last tensor
    on it is freed. Tensors that existed before (inputs, weights) count 0. Run it
    under ``torch.no_grad()``, or autograd's saved tensors (freed later, by the
    backward pass) stay out of the count.

    >>> x = torch.zeros(1000)
    >>> peak_memory(lambda: (x + 1) * 2).peak_bytes  # x + 1 and its double, 4000 bytes each
    8000
    """
    report = MemoryReport()
    with _Tracker(report):
        result = fn()
    del result
    return report


# ----------------------------------------------------------------------------------
# Attention without the T x T matrix


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = 64,
                    causal: bool = True) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` computed one block of keys at a time (online softmax).

    ``q``, ``k``, ``v`` are ``(..., T, d)``. For each block of keys the scores of all
    queries are ``(..., T, block)``; a running maximum ``m``, a running sum of
    exponentials ``l`` and a running output ``o`` are rescaled by ``exp(m_old - m_new)``
    whenever a larger score arrives, so after the last block ``o / l`` is the
    exact softmax average. This is FlashAttention's algorithm (Dao et al., 2022)
    without its fused GPU kernel: the memory saving is real, the speed is not.

    >>> q = k = v = torch.randn(1, 10, 4, generator=torch.Generator().manual_seed(0))
    >>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> torch.allclose(tiled_attention(q, k, v, block=3), ref, atol=1e-6)
    True
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q, k, v do not fit: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    Tq, Tk = q.shape[-2], k.shape[-2]
    if causal and Tq != Tk:
        raise ValueError(f"causal tiled attention needs as many queries as keys, got {Tq} and {Tk}")
    q = q / math.sqrt(q.shape[-1])
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype, device=q.device)  # (..., T, 1)
    l = torch.zeros_like(m)  # noqa: E741 (the paper's name)
    o = torch.zeros((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)  # (..., T, dv)
    rows = torch.arange(Tq, device=q.device)[:, None]
    for start in range(0, Tk, block):
        s = q @ k[..., start:start + block, :].transpose(-2, -1)  # (..., T, block): one tile of scores
        if causal:
            cols = torch.arange(start, min(start + block, Tk), device=q.device)[None, :]
            s = s.masked_fill(cols > rows, float("-inf"))
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))  # (..., T, 1)
        p = torch.exp(s - m_new)  # (..., T, block); exp(-inf) = 0 where masked
        rescale = torch.exp(m - m_new)  # shrink what was summed under the old maximum
        l = l * rescale + p.sum(-1, keepdim=True)  # noqa: E741
        o = o * rescale + p @ v[..., start:start + block, :]
        m = m_new
    return o / l
