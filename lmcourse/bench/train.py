"""Training throughput and model FLOPs utilisation of the course's GPT sizes.

    python -m lmcourse bench train [--configs tiny,small,gpt_char,gpt_modern] [--steps 6] [--threads 1] [--device cpu]

For each named GPT run of :mod:`lmcourse.runs`: tokens per second of the course's
training step, :meth:`lmcourse.train.Trainer.step` itself (fused Q/K/V,
``scaled_dot_product_attention``, AdamW or Muon, clipping, bf16 autocast on CUDA) and of a plain reference step (a
textbook GPT with one Q/K/V projection per head, an explicit masked softmax, and
a bare Adam update), measured in the same run, and their ratio. Model FLOPs
utilisation is ``6 N tokens/s`` (forward + backward of the ``N`` parameters;
attention's own FLOPs are left out, as usual) over a peak measured here: the
FLOP/s of a large matrix product in the compute dtype.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data import random_windows
from ..device import best_time
from ..runs import named_runs
from ..train import Trainer
from ..transformer import GPT, GPTConfig


class _TextbookBlock(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q = nn.ModuleList(nn.Linear(d, d // h) for _ in range(h))
        self.k = nn.ModuleList(nn.Linear(d, d // h) for _ in range(h))
        self.v = nn.ModuleList(nn.Linear(d, d // h) for _ in range(h))
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
        y = self.ln1(x)
        outs = []
        for q, k, v in zip(self.q, self.k, self.v, strict=True):  # one head at a time
            Q, K, V = q(y), k(y), v(y)
            scores = (Q @ K.transpose(-2, -1)) / math.sqrt(Q.shape[-1])
            outs.append(torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ V)
        x = x + self.proj(torch.cat(outs, dim=-1))
        return x + self.mlp(self.ln2(x))


class TextbookGPT(nn.Module):
    """The same shape as :class:`lmcourse.transformer.GPT`, written the plain way (untied head)."""

    def __init__(self, vocab_size: int, context_length: int, d_model: int, n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab_size, d_model), nn.Embedding(context_length, d_model)
        self.blocks = nn.ModuleList(_TextbookBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln_f, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def peak_flops(device: torch.device, n: int = 1024, repeats: int = 10) -> tuple[float, str]:
    """FLOP/s of an ``n x n`` matrix product (bf16 on CUDA, float32 elsewhere)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        n = 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):  # warm-up
        a @ b

    def products() -> None:
        for _ in range(repeats):
            a @ b

    seconds = best_time(products, repeats=1, device=device)  # one run of `repeats` products: their mean
    return 2 * n**3 * repeats / seconds, str(dtype).removeprefix("torch.")


def _time_steps(step, steps: int, device: torch.device) -> float:
    """Mean seconds per step over ``steps`` consecutive steps, after 2 warm-up steps."""
    step(0)
    step(1)  # warm-up

    def run() -> None:
        for s in range(steps):
            step(s + 2)

    return best_time(run, repeats=1, device=device) / steps  # one run of all steps: the mean


def bench(name: str, steps: int, device: torch.device) -> dict:
    spec = named_runs()[name]
    m, c = spec.model, spec.train
    ids = torch.randint(0, m.vocab_size, (100_000,), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    tokens = c.batch_size * c.context_length

    torch.manual_seed(0)
    model = GPT(m).to(device).train()
    trainer = Trainer(model, ids, c, device)  # the engine itself: course_step is what train() runs
    course_step = trainer.step

    ref = TextbookGPT(m.vocab_size, m.context_length, m.d_model, m.n_layers, m.n_heads).to(device).train()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=c.lr)

    def reference_step(s: int) -> None:  # the textbook loop: float32, no schedule, no clipping
        x, y = random_windows(ids, c.batch_size, c.context_length, generator=gen)
        logits = ref(x.to(device))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.to(device).reshape(-1))
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()

    course_s = _time_steps(course_step, steps, device)
    ref_s = _time_steps(reference_step, steps, device)
    n_params = model.num_params()
    return {"name": name, "params": n_params, "ref_params": sum(p.numel() for p in ref.parameters()),
            "tokens": tokens, "course_tok_s": tokens / course_s, "ref_tok_s": tokens / ref_s,
            "course_flops": 6 * n_params * tokens / course_s,
            "ref_flops": 6 * sum(p.numel() for p in ref.parameters()) * tokens / ref_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,small,gpt_char,gpt_modern", help="named GPT runs of lmcourse.runs")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    gpts = [n for n, spec in named_runs().items()
            if isinstance(spec.model, GPTConfig) and spec.train.objective == "clm"]
    unknown = set(names) - set(gpts)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from the causal GPT runs {gpts}")
    peak, dtype = peak_flops(device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")
    print(f"measured peak: {peak / 1e9:.1f} GFLOP/s ({dtype} matrix product)")
    print(f"{'config':<10} {'params':>9} {'tokens/step':>11} {'course tok/s':>12} {'MFU':>6} "
          f"{'ref tok/s':>10} {'ref MFU':>7} {'speed-up':>8}")
    results = {}
    for name in names:
        r = results[name] = bench(name, args.steps, device)
        print(f"{name:<10} {r['params']:>9,} {r['tokens']:>11,} {r['course_tok_s']:>12,.0f} "
              f"{r['course_flops'] / peak:>6.1%} {r['ref_tok_s']:>10,.0f} {r['ref_flops'] / peak:>7.1%} "
              f"{r['course_tok_s'] / r['ref_tok_s']:>7.2f}x", flush=True)
    if {"gpt_char", "gpt_modern"} <= set(results):
        old, new = results["gpt_char"], results["gpt_modern"]
        print(f"gpt_modern / gpt_char in this run: {new['course_tok_s'] / old['course_tok_s']:.2f}x the tokens/s, "
              f"{new['course_flops'] / old['course_flops']:.2f}x the MFU (6N per token: attention's FLOPs, "
              "4x longer in gpt_modern's context, are not counted)")
    return 0
