"""Benchmark of the KV cache (chapter 8): generation speed with and without it.

    python -m lmcourse bench kv-cache [--lengths 64,128,256,512,1024] [--max-uncached 512]
                                      [--threads 1] [--repeats 1] [--batch 1] [--device cpu]

For the course's GPT shapes (randomly initialised: speed does not depend on the
weights), greedy generation from a 16-token prompt, for each number of new
tokens: tokens per second without a cache (the whole window re-run every step),
with the preallocated cache of :mod:`lmcourse.generation`, and with the
``torch.cat`` teaching cache (:class:`~lmcourse.generation.ConcatLayerKVCache`),
all in the same run and timed alike (best of ``--repeats`` rounds, each round
running every variant in turn: :func:`~lmcourse.generation.compare_tokens_per_second`),
so the ratios are comparable. The models' context length is
set to hold the whole generation, so this measures the cache, not the sliding
window. With one sequence the ``torch.cat`` copies are small; a second run at a
larger batch (``--big-batch``) compares the two caches where they are not, and so
does the time of one step with a long cache (alternating blocks of steps). Then the
cache memory, ``2 x layers x B x H x T x Dh x 4`` bytes, from the
formula and from the tensors. The uncached path costs O(T^2) per generation, so it
is timed up to ``--max-uncached`` new tokens only.

Last (``--roofline``), prefill against decode on a wider model (D = 768, 4 layers):
this device's matmul FLOP/s and read bandwidth, and the FLOP/s and bytes/s that a
prefill and a decode step reach, beside their arithmetic intensity
(:func:`~lmcourse.generation.forward_cost`).
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from ..device import best_time
from ..generation import KVCache, compare_tokens_per_second, forward_cost, kv_cache_bytes, tokens_per_second
from ..transformer import GPT, GPTConfig

SIZES = {  # name: (n_layers, d_model, n_heads), vocabulary of the character tokenizer
    "4 layers x 128 (gpt_char)": (4, 128, 4),
    "6 layers x 192": (6, 192, 6),
}
PROMPT = 16


def _interleaved(model: GPT, prompt: torch.Tensor, n: int, repeats: int) -> tuple[float, float]:
    """Best tokens/s of the preallocated and the torch.cat cache, runs alternating (a busy machine drifts)."""
    best = compare_tokens_per_second(model, prompt, n, {"cache": {}, "cat": {"concat_cache": True}}, repeats)
    return best["cache"], best["cat"]


@torch.no_grad()
def forward_seconds(model: GPT, batch_size: int, new_tokens: int, cached: int = 0, repeats: int = 3) -> float:
    """Best wall-clock seconds of one forward over ``new_tokens`` per sequence after ``cached`` cached positions.

    ``cached=0`` times a prefill; ``new_tokens=1`` a decode step. The cache is filled
    once (token 0 everywhere: the time does not depend on the ids) and cut back to
    ``cached`` positions before every timed forward, so each one does the same work.
    """
    if min(batch_size, new_tokens, repeats) < 1 or cached < 0:
        raise ValueError(f"batch_size, new_tokens and repeats must be >= 1 and cached >= 0, got "
                         f"{batch_size}, {new_tokens}, {repeats} and {cached}")
    device = next(model.parameters()).device
    cache = KVCache.for_model(model, batch_size, max_len=cached + new_tokens)
    if cached:
        model(torch.zeros(batch_size, cached, dtype=torch.long, device=device), cache=cache)
    x = torch.zeros(batch_size, new_tokens, dtype=torch.long, device=device)

    def step() -> None:
        cache.truncate(cached)
        model(x, offset=cached, cache=cache)

    step()  # warm-up
    return best_time(step, repeats=repeats, device=device)


def matmul_flops_per_second(n: int = 1024, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """FLOP/s of an ``n x n`` float32 matrix product, ``2 n^3`` FLOPs (best of ``repeats``): the compute roof."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
    a @ b  # warm-up
    return 2 * n**3 / best_time(lambda: a @ b, repeats=repeats, device=device)


def read_bytes_per_second(n_bytes: int, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Bytes/s of reading a float32 tensor of ``n_bytes`` once (a sum, best of ``repeats``): the memory roof."""
    if n_bytes < 4:
        raise ValueError(f"n_bytes must be >= 4, got {n_bytes}")
    x = torch.ones(n_bytes // 4, device=device)
    x.sum()  # warm-up
    return 4 * (n_bytes // 4) / best_time(x.sum, repeats=repeats, device=device)


def prefill_decode(model: GPT, prompt_tokens: int = 128, batch_sizes: tuple[int, ...] = (1, 8),
                   repeats: int = 3) -> list[dict]:
    """A prefill of ``prompt_tokens`` (batch 1) and a decode step after them at each batch size, measured.

    One dict per forward: ``phase``, ``batch``, ``tokens`` (new tokens in all),
    ``flops`` and ``bytes`` (:func:`~lmcourse.generation.forward_cost`, float32),
    ``intensity`` (FLOPs per byte), ``seconds`` (:func:`forward_seconds`) and what
    was reached, ``flops_per_s`` and ``bytes_per_s``.
    """
    runs = [("prefill", 1, prompt_tokens, 0)] + [("decode", b, 1, prompt_tokens) for b in batch_sizes]
    rows = []
    for phase, batch, new, cached in runs:
        flops, nbytes = forward_cost(model.config, new, cached, batch, bytes_per_element=4)
        seconds = forward_seconds(model, batch, new, cached, repeats)
        rows.append(dict(phase=phase, batch=batch, tokens=batch * new, flops=flops, bytes=nbytes,
                         intensity=flops / nbytes, seconds=seconds, flops_per_s=flops / seconds,
                         bytes_per_s=nbytes / seconds))
    return rows


@torch.no_grad()
def linear_layers(model: GPT, rows: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128), repeats: int = 5) -> list[dict]:
    """The blocks' matrix products alone, timed for each number of input rows (sequences in a decode step).

    Every ``nn.Linear`` of ``model.blocks`` (each layer's query/key/value, output,
    and MLP projections) applied in turn to ``m`` rows, the best of ``repeats``:
    the part of a decode step of ``m`` sequences that reads the weights. One dict per
    ``m``: ``rows``, ``flops`` (2 per weight per row), ``bytes`` (the weights and
    biases once, the inputs and outputs, float32), ``intensity``, ``seconds``,
    ``flops_per_s``.
    """
    if not rows or min(rows) < 1 or repeats < 1:
        raise ValueError(f"rows must be >= 1 and repeats >= 1, got {rows} and {repeats}")
    device = next(model.parameters()).device
    linears = [m for m in model.blocks.modules() if isinstance(m, nn.Linear)]
    weights = sum(m.in_features * m.out_features for m in linears)
    biases = sum(m.out_features for m in linears if m.bias is not None)
    out = []
    for m in rows:
        inputs = [torch.zeros(m, lin.in_features, device=device) for lin in linears]

        def run(inputs=inputs) -> None:
            for lin, x in zip(linears, inputs, strict=True):
                lin(x)

        run()  # warm-up
        seconds = best_time(run, repeats=repeats, device=device)
        flops = 2 * m * weights
        nbytes = 4 * (weights + biases + m * sum(lin.in_features + lin.out_features for lin in linears))
        out.append(dict(rows=m, flops=flops, bytes=nbytes, intensity=flops / nbytes, seconds=seconds,
                        flops_per_s=flops / seconds))
    return out


@torch.no_grad()
def step_ms(model: GPT, batch: int, cached_len: int, blocks: int = 6, steps: int = 10) -> tuple[float, float]:
    """Milliseconds of one cached step with ``cached_len`` positions cached: (preallocated, torch.cat).

    Blocks of ``steps`` steps alternate between the two caches and the best block counts, so a
    machine whose load drifts treats both alike (each block timed by :func:`lmcourse.device.best_time`).
    """
    device = next(model.parameters()).device
    x = torch.zeros(batch, 1, dtype=torch.long, device=device)
    caches = []
    for concat in (False, True):
        cache = KVCache.for_model(model, batch, max_len=cached_len + blocks * steps, concat=concat)
        model(torch.zeros(batch, cached_len, dtype=torch.long, device=x.device), cache=cache)
        caches.append(cache)
    best = [float("inf"), float("inf")]
    for _ in range(blocks):
        for i, cache in enumerate(caches):
            def block(cache=cache) -> None:
                for _ in range(steps):
                    model(x, offset=cache.length, cache=cache)

            best[i] = min(best[i], best_time(block, repeats=1, device=device) / steps * 1e3)
    return best[0], best[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lmcourse bench kv-cache", description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="64,128,256,512,1024", help="numbers of new tokens, comma-separated")
    ap.add_argument("--max-uncached", type=int, default=512, help="time the uncached path up to this many tokens")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="best of this many rounds, each running every variant once in turn")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--big-batch", type=int, default=8, help="then cache vs torch.cat cache at this batch size")
    ap.add_argument("--big-batch-lengths", default="256,1024")
    ap.add_argument("--roofline", action=argparse.BooleanOptionalAction, default=True,
                    help="then prefill vs decode on a D = 768 model (--no-roofline to skip)")
    args = ap.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",")]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, prompt {PROMPT} tokens, "
          f"load average {load:.1f} on {os.cpu_count()} CPUs")
    for name, (L, D, H) in SIZES.items():
        torch.manual_seed(0)
        config = GPTConfig(vocab_size=75, context_length=PROMPT + max(lengths), d_model=D, n_layers=L, n_heads=H)
        model = GPT(config).to(device).eval()
        prompt = torch.randint(0, 75, (args.batch, PROMPT), generator=torch.Generator().manual_seed(0)).to(device)
        print(f"\n{name}: {model.num_params() / 1e6:.2f}M parameters, context {config.context_length}")
        print(f"{'new':>6} {'no cache':>10} {'cache':>10} {'cat cache':>10} {'speed-up':>9} {'vs cat':>7}  (tokens/s)")
        tokens_per_second(model, prompt, 8)  # warm-up
        for n in lengths:
            variants = {"cache": {}, "cat": {"concat_cache": True}}
            if n <= args.max_uncached:
                variants["none"] = {"use_cache": False}
            speed = compare_tokens_per_second(model, prompt, n, variants, args.repeats)  # all timed alike
            cached, concat = speed["cache"], speed["cat"]
            if "none" in speed:
                ratio = f"{cached / speed['none']:8.1f}x"
                plain_s = f"{speed['none']:10.0f}"
            else:
                plain_s, ratio = f"{'-':>10}", f"{'-':>9}"
            print(f"{n:6d} {plain_s} {cached:10.0f} {concat:10.0f} {ratio} {cached / concat:6.2f}x", flush=True)
        if args.big_batch > 0:
            big = torch.randint(0, 75, (args.big_batch, PROMPT), generator=torch.Generator().manual_seed(1)).to(device)
            for n in [int(n) for n in args.big_batch_lengths.split(",")]:
                cached, concat = _interleaved(model, big, n, args.repeats)
                print(f"batch {args.big_batch}, {n} new tokens: cache {cached:.0f} tokens/s, torch.cat cache "
                      f"{concat:.0f} tokens/s: {cached / concat:.2f}x", flush=True)
        for b in (1, args.big_batch):
            pre, cat = step_ms(model, b, max(lengths) - 64)
            print(f"one step, batch {b}, {max(lengths) - 64} positions cached: preallocated {pre:.2f} ms, "
                  f"torch.cat {cat:.2f} ms: {cat / pre:.2f}x", flush=True)
        cache = KVCache.for_model(model, args.batch)
        formula = kv_cache_bytes(L, args.batch, H, config.context_length, D // H, 4)
        assert cache.nbytes() == formula, (cache.nbytes(), formula)
        per_token = kv_cache_bytes(L, 1, H, 1, D // H, 4)
        print(f"cache memory: {per_token} bytes per token per sequence; preallocated for T={config.context_length}: "
              f"{formula / 2**20:.2f} MiB (formula) = {cache.nbytes() / 2**20:.2f} MiB (tensors)")
    if args.roofline:
        _print_roofline(device, args.repeats)
    return 0


def _print_roofline(device: torch.device, repeats: int) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=75, context_length=256, d_model=768, n_layers=4, n_heads=12)).to(device).eval()
    weights = 4 * model.num_params()
    peak, bandwidth = matmul_flops_per_second(device=device), read_bytes_per_second(weights, device=device)
    print(f"\nroofline, D = 768, 4 layers, {weights / 2**20:.0f} MiB of float32 weights: matmul "
          f"{peak / 1e9:.1f} GFLOP/s, reading {bandwidth / 1e9:.1f} GB/s, ridge point {peak / bandwidth:.1f} FLOP/byte")
    for r in prefill_decode(model, repeats=repeats):
        bound = min(peak, r["intensity"] * bandwidth)
        print(f"{r['phase']:>8} batch {r['batch']:2d}, {r['tokens']:3d} tokens: {r['intensity']:6.1f} FLOP/byte, "
              f"{r['seconds'] * 1e3:7.2f} ms, {r['flops_per_s'] / 1e9:6.1f} GFLOP/s (roofline {bound / 1e9:6.1f}), "
              f"{r['bytes_per_s'] / 1e9:5.1f} GB/s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
