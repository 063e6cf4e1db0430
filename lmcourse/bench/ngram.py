"""Benchmark of :class:`lmcourse.ngram.NGramLM` on the course corpus.

    python -m lmcourse bench ngram [--orders 1-8] [--smoothing kneser_ney] [--ref-chars 300000] [--threads 1]

For each n: fit time on the train split, scoring time and perplexity on the
validation split. Then, on a slice of both splits small enough for it, the same
figures for :class:`ReferenceKneserNey`, a straightforward ``collections.Counter``
implementation with a Python loop per token, next to the vectorised model on the
same slice, so the speed-up is a ratio from one run (and the perplexities agree).
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from typing import Sequence

import torch

from ..data import load_shakespeare
from ..device import best_time
from ..metrics import bits_per_char, perplexity
from ..ngram import SMOOTHINGS, NGramLM
from ..tokenization import shakespeare_char_tokenizer


class ReferenceKneserNey:
    """Interpolated (modified) Kneser-Ney with dictionaries: the textbook recursion, slowly.

    ``P_m(w | h) = (c(h w) - D(c)) / c(h) + gamma(h) / c(h) * P_{m-1}(w | h')`` with raw
    counts at the top order, continuation counts ``N1+(. g)`` below, ``P_0 = 1 / V``
    and an unseen context falling through to the lower order.
    """

    def __init__(self, n: int, vocab_size: int, modified: bool = False) -> None:
        self.n, self.V, self.modified = n, vocab_size, modified

    def fit(self, tokens: Sequence[int]) -> "ReferenceKneserNey":
        toks = [int(t) for t in tokens]
        raw = [Counter(tuple(toks[i : i + m]) for i in range(len(toks) - m + 1)) for m in range(1, self.n + 1)]
        self.counts: list[dict[tuple, int]] = []
        for m in range(1, self.n + 1):
            if m < self.n:  # continuation counts: distinct tokens seen before the m-gram
                cont: Counter = Counter(g[1:] for g in raw[m])
                self.counts.append(dict(cont))
            else:
                self.counts.append(dict(raw[m - 1]))
        self.total: list[dict[tuple, int]] = []
        self.by_count: list[dict[tuple, list[int]]] = []  # per context: #followers with count 1, 2, 3+
        self.d: list[tuple[float, float, float]] = []
        for counts in self.counts:
            total: dict[tuple, int] = defaultdict(int)
            by_count: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
            for g, c in counts.items():
                total[g[:-1]] += c
                by_count[g[:-1]][min(c, 3) - 1] += 1
            self.total.append(dict(total))
            self.by_count.append(dict(by_count))
            nr = Counter(min(c, 5) for c in counts.values())
            n1, n2, n3, n4 = (nr[r] for r in (1, 2, 3, 4))
            if n1 == 0 or n2 == 0:
                self.d.append((1.0, 1.0, 1.0) if n1 + n2 else (0.5, 0.5, 0.5))
                continue
            y = n1 / (n1 + 2 * n2)
            if self.modified and min(n1, n2, n3, n4) > 0:  # else one D, as NGramLM does
                ds = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
                self.d.append(tuple(min(x if x > 0 else y, r) for r, x in zip((1, 2, 3), ds, strict=True)))  # type: ignore[arg-type]
            else:
                self.d.append((y, y, y))
        return self

    def prob(self, context: Sequence[int], token: int) -> float:
        p = 1.0 / self.V
        ctx = tuple(int(t) for t in context)
        for m in range(1, self.n + 1):
            if m - 1 > len(ctx):
                break
            h = ctx[len(ctx) - (m - 1) :] if m > 1 else ()
            total = self.total[m - 1].get(h, 0)
            if total == 0:
                continue
            c = self.counts[m - 1].get(h + (int(token),), 0)
            d = self.d[m - 1]
            gamma = sum(di * ni for di, ni in zip(d, self.by_count[m - 1][h], strict=True))
            p = ((c - d[min(c, 3) - 1] if c else 0.0) + gamma * p) / total
        return p

    def perplexity(self, tokens: Sequence[int]) -> float:
        toks = [int(t) for t in tokens]
        nll = -sum(math.log(self.prob(toks[max(0, t - self.n + 1) : t], toks[t])) for t in range(1, len(toks)))
        return perplexity(nll / (len(toks) - 1))


def _timed(fn):
    """``fn()`` and the seconds one run of it took (:func:`lmcourse.device.best_time` of one run)."""
    out = []
    seconds = best_time(lambda: out.append(fn()), repeats=1)
    return out[0], seconds


def _orders(spec: str) -> list[int]:
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse bench ngram", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", default="1-8", help="n values, e.g. 1-8 or 5 (default 1-8)")
    parser.add_argument("--smoothing", default="kneser_ney", choices=SMOOTHINGS)
    parser.add_argument("--ref-chars", type=int, default=300_000, help="train characters for the reference (0: skip)")
    parser.add_argument("--ref-val-chars", type=int, default=30_000, help="validation characters for the reference")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the work is memory-bound, and one thread "
                             "stays steady when other programs share the CPU; 0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    orders = _orders(args.orders)

    tok = shakespeare_char_tokenizer()
    train = torch.tensor(tok.encode(load_shakespeare("train")))
    val = torch.tensor(tok.encode(load_shakespeare("val")))
    V = tok.vocab_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; vocabulary {V} characters")
    print(f"whole corpus: train {len(train):,} chars, validation {len(val):,} chars; smoothing {args.smoothing}")
    print(f"{'n':>2} {'fit s':>7} {'score s':>8} {'val ppl':>9} {'bits/char':>9}")
    for n in orders:
        lm, fit_s = _timed(lambda n=n: NGramLM(n, args.smoothing, vocab_size=V).fit(train))
        ppl, score_s = _timed(lambda lm=lm: lm.perplexity(val))
        bpc = bits_per_char(math.log(ppl)) if math.isfinite(ppl) else math.inf
        print(f"{n:>2} {fit_s:>7.2f} {score_s:>8.2f} {ppl:>9.3f} {bpc:>9.3f}", flush=True)

    if args.ref_chars <= 0 or args.smoothing not in ("kneser_ney", "modified_kneser_ney"):
        return 0
    tr, va = train[: args.ref_chars], val[: args.ref_val_chars]
    tr_list, va_list = tr.tolist(), va.tolist()
    modified = args.smoothing == "modified_kneser_ney"
    print(f"\nslice: train {len(tr):,} chars, validation {len(va):,} chars; "
          "reference = collections.Counter + a Python loop per token")
    print(f"{'n':>2} {'ref fit s':>9} {'ref score s':>11} {'fast fit s':>10} {'fast score s':>12} "
          f"{'fit x':>6} {'score x':>7} {'ref ppl':>9} {'fast ppl':>9}")
    for n in orders:
        ref, ref_fit = _timed(lambda n=n: ReferenceKneserNey(n, V, modified).fit(tr_list))
        ref_ppl, ref_score = _timed(lambda ref=ref: ref.perplexity(va_list))
        lm, fit_s = _timed(lambda n=n: NGramLM(n, args.smoothing, vocab_size=V).fit(tr))
        ppl, score_s = _timed(lambda lm=lm: lm.perplexity(va))
        print(f"{n:>2} {ref_fit:>9.2f} {ref_score:>11.2f} {fit_s:>10.3f} {score_s:>12.3f} "
              f"{ref_fit / fit_s:>6.0f} {ref_score / score_s:>7.0f} {ref_ppl:>9.4f} {ppl:>9.4f}", flush=True)
        if not math.isclose(ref_ppl, ppl, rel_tol=1e-9):
            print(f"   perplexities differ: reference {ref_ppl!r}, vectorised {ppl!r}")
            return 1
    return 0
