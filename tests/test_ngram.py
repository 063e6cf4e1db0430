"""Tests of lmcourse.ngram against hand-worked counts and a dictionary reference."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmcourse.bench import available
from lmcourse.bench import run as run_bench
from lmcourse.bench.ngram import ReferenceKneserNey
from lmcourse.ngram import (
    SMOOTHINGS,
    NGramLM,
    _discounts,
    good_turing_counts,
    held_out_counts,
    leave_one_out_log_likelihood,
    zipf_fit,
)

SMOOTHED = [s for s in SMOOTHINGS if s != "mle"]


def corpus(length=3000, vocab=6, seed=0):
    """Random text with structure: a Markov chain with a few likely successors per token."""
    g = torch.Generator().manual_seed(seed)
    trans = torch.rand(vocab, vocab, generator=g) ** 4
    x = [0]
    for _ in range(length - 1):
        x.append(int(torch.multinomial(trans[x[-1]], 1, generator=g)))
    return torch.tensor(x)


@pytest.mark.parametrize("smoothing", SMOOTHED)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_distribution_sums_to_one(smoothing, n):
    # Vocabulary 8 but training text uses only 0..5: tokens 6, 7 are never seen.
    lm = NGramLM(n, smoothing, vocab_size=8, k=0.5, lam=0.6).fit(corpus(800))
    g = torch.Generator().manual_seed(n)
    for length in range(0, n + 2):  # shorter, equal and longer contexts than n - 1
        for _ in range(15):
            ctx = torch.randint(0, 8, (length,), generator=g)
            dist = lm.distribution(ctx)
            assert dist.shape == (8,)
            assert (dist > 0).all()
            assert math.isclose(float(dist.sum()), 1.0, abs_tol=1e-12)
            assert math.isclose(lm.prob(ctx, 3), float(dist[3]), rel_tol=1e-12)


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_kneser_ney_matches_dictionary_reference(modified, n):
    train, val = corpus(2000, seed=1), corpus(300, seed=2)
    smoothing = "modified_kneser_ney" if modified else "kneser_ney"
    lm = NGramLM(n, smoothing, vocab_size=7).fit(train)
    ref = ReferenceKneserNey(n, 7, modified).fit(train.tolist())
    assert math.isclose(lm.perplexity(val), ref.perplexity(val.tolist()), rel_tol=1e-10)
    for ctx in ([], [3], [6, 6, 6, 6], val[:7].tolist()):  # 6 is never seen in training
        for w in range(7):
            assert math.isclose(lm.prob(ctx, w), ref.prob(ctx[-(n - 1):] if n > 1 else [], w), rel_tol=1e-10)


def test_kneser_ney_uses_continuation_counts():
    # "a b a b a c": token 0 (a) is frequent, but only ever follows 1 (b).
    x = [0, 1, 0, 1, 0, 2]
    lm = NGramLM(2, "kneser_ney", vocab_size=3).fit(x)
    # Continuation counts N1+(. w): a <- {b}, b <- {a}, c <- {a}; total 3 bigram types.
    d1 = lm.discounts[0][0]  # unigram level: counts (1, 1, 1), so n1 = 3, n2 = 0 -> D = 1
    assert d1 == 1.0
    # Unigram level with D = 1: P(w) = (N1+(.w) - 1 + 1 * 3 / 3) / 3 = 1/3 for each.
    assert lm.distribution([]).tolist() == pytest.approx([1 / 3] * 3, rel=1e-12)


def test_mle_counts_and_zero_probability():
    x = [0, 1, 0, 1, 1, 2]
    lm = NGramLM(2, "mle").fit(x)
    assert lm.vocab_size == 3
    assert lm.distribution([0]).tolist() == [0.0, 1.0, 0.0]
    assert lm.distribution([1]).tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert lm.distribution([2]).tolist() == [0.0, 0.0, 0.0]  # never seen as a context
    assert lm.prob([0], 0) == 0.0
    assert lm.log_likelihood([0, 0]) == -math.inf
    assert lm.perplexity([0, 1, 0, 0]) == math.inf  # reported, not raised
    assert math.isclose(lm.perplexity([0, 1, 0]), math.exp(-math.log(1 / 3) / 2))  # P(1|0) P(0|1)


def test_add_k_formula():
    x = [0, 1, 0, 1, 1, 2]
    lm = NGramLM(2, "add_k", k=0.5).fit(x)
    # (c(1 w) + k) / (c(1) + k V), with c(1 .) = (1, 1, 1), c(1) = 3
    assert lm.distribution([1]).tolist() == pytest.approx([1.5 / 4.5] * 3)
    assert lm.prob([2], 0) == pytest.approx(1 / 3)  # unseen context: uniform


def test_interpolated_formula():
    x = [0, 1, 0, 1, 1, 2]
    lm = NGramLM(2, "interpolated", lam=[0.5, 0.8]).fit(x)
    uni = [0.5 * c / 6 + 0.5 / 3 for c in (2, 3, 1)]
    want = [0.8 * ml + 0.2 * u for ml, u in zip([0.0, 1.0, 0.0], uni, strict=True)]
    assert lm.distribution([0]).tolist() == pytest.approx(want)
    assert lm.distribution([2]).tolist() == pytest.approx(uni)  # unseen context: lower order


@pytest.mark.parametrize("smoothing", SMOOTHED)
def test_perplexity_is_exp_of_cross_entropy(smoothing):
    lm = NGramLM(3, smoothing, vocab_size=7).fit(corpus(1000))
    val = corpus(60, seed=3)
    rows = torch.stack([lm.distribution(val[max(0, t - 2) : t]) for t in range(1, len(val))])
    ce = F.nll_loss(rows.log(), val[1:])
    assert math.isclose(lm.perplexity(val), math.exp(float(ce)), rel_tol=1e-10)
    assert math.isclose(lm.log_likelihood(val), -float(ce) * (len(val) - 1), rel_tol=1e-10)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_restricted_equals_a_fresh_fit(smoothing):
    train, val = corpus(1500), corpus(200, seed=5)
    big = NGramLM(5, "kneser_ney", vocab_size=7).fit(train)
    for n in (1, 2, 4):
        small = big.restricted(n, smoothing, k=0.1)
        fresh = NGramLM(n, smoothing, vocab_size=7, k=0.1).fit(train)
        assert small.token_log_probs(val).tolist() == fresh.token_log_probs(val).tolist()
    with pytest.raises(ValueError, match="between 1 and the fitted order"):
        big.restricted(6)


def test_sample_is_seeded_and_in_vocabulary():
    lm = NGramLM(3, vocab_size=7).fit(corpus(1000))
    a = lm.sample([0, 1], 50, torch.Generator().manual_seed(0))
    b = lm.sample([0, 1], 50, torch.Generator().manual_seed(0))
    assert a.shape == (50,) and a.tolist() == b.tolist()
    assert 0 <= int(a.min()) and int(a.max()) < 7
    # An MLE model only ever produces n-grams it has seen.
    x = corpus(500)
    mle = NGramLM(3, "mle").fit(x)
    s = [int(t) for t in x[:2]] + mle.sample(x[:2], 40, torch.Generator().manual_seed(1)).tolist()
    seen = {tuple(x[i : i + 3].tolist()) for i in range(len(x) - 2)}
    assert all(tuple(s[i : i + 3]) in seen for i in range(len(s) - 2))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        NGramLM(0)
    with pytest.raises(ValueError, match="k > 0"):
        NGramLM(2, "add_k", k=0)
    with pytest.raises(ValueError, match="smoothing must be one of"):
        NGramLM(2, "laplace")
    with pytest.raises(ValueError, match="lam must be"):
        NGramLM(2, "interpolated", lam=[0.5])
    with pytest.raises(ValueError, match="training sequence is empty"):
        NGramLM(2).fit([])
    with pytest.raises(ValueError, match="training sequence is empty"):
        NGramLM(2, vocab_size=5).fit([])
    with pytest.raises(
        ValueError, match="in the training sequence: token id 9 is out of range for a vocabulary of 5 ids"
    ):
        NGramLM(2, vocab_size=5).fit([1, 9])
    with pytest.raises(ValueError, match="not fitted"):
        NGramLM(2, vocab_size=5).prob([1], 2)
    with pytest.raises(ValueError, match="does not fit in int64"):
        NGramLM(6, vocab_size=50_000).fit([1, 2, 3])
    lm = NGramLM(2, vocab_size=5).fit([0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="in token: token id 5 is out of range"):
        lm.prob([1], 5)
    with pytest.raises(ValueError, match="in the context: token id -1 is out of range"):
        lm.distribution([-1])
    with pytest.raises(ValueError, match="in the sequence: token id 7 is out of range"):
        lm.perplexity([1, 7])
    with pytest.raises(ValueError, match="at least two tokens"):
        lm.perplexity([1])


def test_ids_are_checked_against_a_known_vocabulary_only():
    lm = NGramLM(3, vocab_size=5).fit([0, 1, 2, 3, 4, 0])
    for call in (lambda: lm.prob([1, 2], 9), lambda: lm.distribution([9]), lambda: lm.log_likelihood([0, 9]),
                 lambda: lm.token_log_probs(torch.tensor([9, 1])), lambda: lm.perplexity([1, 9]),
                 lambda: lm.sample([9], 2), lambda: NGramLM(2, vocab_size=5).fit([0, 9])):
        with pytest.raises(ValueError, match="token id 9 is out of range for a vocabulary of 5 ids"):
            call()
    # no vocab_size given: fit() infers it from the data, so any id >= 0 is accepted there...
    inferred = NGramLM(2).fit([0, 9, 3])
    assert inferred.vocab_size == 10
    with pytest.raises(ValueError, match="token id -1 in the training sequence is negative"):
        NGramLM(2).fit([0, -1])
    # ...and later input is checked against the inferred size
    with pytest.raises(ValueError, match="in token: token id 10 is out of range for a vocabulary of 10 ids"):
        inferred.prob([0], 10)


def test_bench_dispatcher():
    assert "ngram" in available()
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_bench("no_such_bench")


def test_modified_discounts_fall_back_when_counts_of_counts_are_degenerate():
    # Continuation counts at order 1 of "ab ac ad ... ": with n3 = n4 = 0 Chen & Goodman's
    # D2 = 2 - 3 Y n3 / n2 = 2 (a gram seen twice keeps nothing) and D3+ = 3 - 4 Y n4 / n3 is 0 / 0.
    x = [0, 1, 0, 2, 3, 4, 1, 3, 5, 2]  # continuation counts of 0..5: 1, 2, 2, 2, 1, 1
    lm = NGramLM(2, "modified_kneser_ney", vocab_size=6).fit(x)
    nr = lm.count_of_counts(1)
    assert nr[1:5].tolist() == [3.0, 3.0, 0.0, 0.0]
    y = 3 / (3 + 2 * 3)  # D = n1 / (n1 + 2 n2)
    assert lm.discounts[0] == pytest.approx((y, y, y), rel=1e-15)
    assert NGramLM(2, "kneser_ney", vocab_size=6).fit(x).discounts[0] == pytest.approx((y, y, y))
    assert math.isclose(float(lm.distribution([3]).sum()), 1.0, rel_tol=1e-12)


def test_modified_discounts_by_hand():
    # n1..n4 = 4, 3, 2, 1 at the top order: Y = 4 / 10, D1 = 1 - 2 Y 3 / 4, D2 = 2 - 3 Y 2 / 3,
    # D3+ = 3 - 4 Y 1 / 2 (Chen & Goodman 1998, eq. 26)
    counts = torch.tensor([1, 1, 1, 1, 2, 2, 2, 3, 3, 4], dtype=torch.float64)
    y = 0.4
    assert _discounts(counts, True) == pytest.approx((1 - 2 * y * 3 / 4, 2 - 3 * y * 2 / 3, 3 - 4 * y / 2))
    assert _discounts(counts, False) == pytest.approx((y, y, y))


@pytest.mark.parametrize("modified", [False, True])
def test_fixed_discounts_match_the_reference_recursion(modified):
    train, val = corpus(2000, seed=1), corpus(300, seed=2)
    smoothing = "modified_kneser_ney" if modified else "kneser_ney"
    fixed = [0.3, (0.6, 1.1, 1.7), 0.9]
    lm = NGramLM(3, smoothing, vocab_size=7, discounts=fixed).fit(train)
    triples = [(0.3, 0.3, 0.3), (0.6, 1.1, 1.7), (0.9, 0.9, 0.9)]
    assert lm.discounts == triples
    ref = ReferenceKneserNey(3, 7, modified).fit(train.tolist())
    ref.d = triples  # the dictionary recursion with the same discounts
    assert math.isclose(lm.perplexity(val), ref.perplexity(val.tolist()), rel_tol=1e-10)
    for ctx in ([], [3], [6, 6]):
        assert math.isclose(float(lm.distribution(ctx).sum()), 1.0, rel_tol=1e-12)
    # the estimated discounts, passed back in, give the same model
    est = NGramLM(3, smoothing, vocab_size=7).fit(train)
    again = est.restricted(3, discounts=est.discounts)
    assert again.token_log_probs(val).tolist() == est.token_log_probs(val).tolist()


def _absolute_discounting_reference(train, n, V, d, ctx, w):
    """Interpolated absolute discounting from dictionaries, float64, raw counts at every order."""
    counts = [Counter(tuple(train[i : i + m]) for i in range(len(train) - m + 1)) for m in range(1, n + 1)]
    p = 1.0 / V
    for m in range(1, n + 1):
        h = tuple(ctx[len(ctx) - (m - 1) :]) if m > 1 else ()
        if m > 1 and len(ctx) < m - 1:
            break
        follow = {g[-1]: c for g, c in counts[m - 1].items() if g[:-1] == h}
        total = sum(follow.values())
        if total == 0:  # unseen context: keep the lower order
            continue
        c = follow.get(w, 0)
        p = (max(c - d[m - 1], 0.0) + d[m - 1] * len(follow) * p) / total
    return p


def test_absolute_discounting_against_a_dictionary_reference():
    """Raw counts at every order (no continuation counts), one discount per order."""
    train, V, d = corpus(1500, seed=4).tolist(), 6, [0.4, 0.7, 0.55]
    lm = NGramLM(3, "absolute_discounting", vocab_size=V, discounts=d).fit(train)
    for ctx in ([], [2], [0, 1], [5, 5], [3, 0]):
        dist = lm.distribution(ctx)
        assert math.isclose(float(dist.sum()), 1.0, rel_tol=1e-12)
        for w in range(V):
            ref = _absolute_discounting_reference(train, 3, V, d, ctx, w)
            assert math.isclose(float(dist[w]), ref, rel_tol=1e-10), (ctx, w)
    # it differs from Kneser-Ney with the same discounts only below the top order
    kn = NGramLM(3, "kneser_ney", vocab_size=V, discounts=d).fit(train)
    assert not torch.allclose(kn.distribution([0, 1]), lm.distribution([0, 1]))
    top = NGramLM(1, "absolute_discounting", vocab_size=V, discounts=[0.4]).fit(train)
    assert torch.allclose(top.distribution([]), NGramLM(1, "kneser_ney", vocab_size=V, discounts=[0.4])
                          .fit(train).distribution([]), rtol=0, atol=1e-15)
    # estimated discounts come from the raw counts: D = n1 / (n1 + 2 n2) of each order
    est = NGramLM(3, "absolute_discounting", vocab_size=V).fit(train)
    for m in (2, 3):
        n_r = Counter(Counter(tuple(train[i : i + m]) for i in range(len(train) - m + 1)).values())
        assert math.isclose(est.discounts[m - 1][0], n_r[1] / (n_r[1] + 2 * n_r[2]), rel_tol=1e-12)


def test_fixed_discounts_are_checked():
    with pytest.raises(ValueError, match="Kneser-Ney smoothing only"):
        NGramLM(2, "add_k", discounts=[0.5, 0.5])
    with pytest.raises(ValueError, match="one entry per order"):
        NGramLM(2, discounts=[0.5])
    with pytest.raises(ValueError, match="0 < D1 <= 1"):
        NGramLM(2, discounts=[0.5, (1.2, 1.5, 2.0)])
    with pytest.raises(ValueError, match="0 < D1 <= 1"):
        NGramLM(2, discounts=[0.0, 0.5])
    with pytest.raises(ValueError, match="one number or"):
        NGramLM(2, discounts=[0.5, (0.5, 1.0)])


def test_leave_one_out_objective_against_brute_force():
    # A backing-off absolute-discount unigram model: a seen word gets (c - D) / N, the freed mass
    # D n_+ / N is shared evenly by the unseen words. Take each token out, predict it from the
    # rest: the total log-likelihood is F(D) plus terms free of D.
    g = torch.Generator().manual_seed(0)
    tokens = (torch.rand(400, generator=g) ** 3 * 60).long().tolist()
    V = 80

    def brute(D):
        total, counts = 0.0, Counter(tokens)
        for w in tokens:
            counts[w] -= 1
            N, seen = sum(counts.values()), sum(1 for c in counts.values() if c > 0)
            if counts[w] > 0:
                p = (counts[w] - D) / N
            else:
                p = D * seen / N / (V - seen)
            total += math.log(p)
            counts[w] += 1
        return total

    nr = torch.bincount(torch.tensor(list(Counter(tokens).values()))).double()
    F = [leave_one_out_log_likelihood(nr, d) for d in (0.2, 0.5, 0.8)]
    B = [brute(d) for d in (0.2, 0.5, 0.8)]
    assert math.isclose(F[0] - F[1], B[0] - B[1], rel_tol=1e-9)
    assert math.isclose(F[2] - F[1], B[2] - B[1], rel_tol=1e-9)
    # the maximiser lies below the closed form n1 / (n1 + 2 n2), and close to it
    grid = torch.linspace(0.01, 0.99, 981).tolist()
    best = max(grid, key=lambda d: leave_one_out_log_likelihood(nr, d))
    bound = float(nr[1] / (nr[1] + 2 * nr[2]))
    assert best <= bound + 1e-3 and best > bound - 0.2
    # with only singletons and doubletons the bound is the maximiser itself
    only12 = torch.tensor([0.0, 30.0, 10.0])
    best12 = max(grid, key=lambda d: leave_one_out_log_likelihood(only12, d))
    assert abs(best12 - 30 / 50) < 1e-3
    with pytest.raises(ValueError, match="discount must be in"):
        leave_one_out_log_likelihood(nr, 1.0)
    with pytest.raises(ValueError, match="count_of_counts"):
        leave_one_out_log_likelihood(torch.tensor([1.0, 2.0]), 0.5)


def test_zipf_fit_against_numpy():
    g = torch.Generator().manual_seed(0)
    counts = (torch.rand(500, generator=g) * 1000).round() + 1
    slope, intercept = zipf_fit(counts, 5, 300)
    f = np.sort(counts.double().numpy())[::-1][4:300]
    want = np.polyfit(np.log(np.arange(5, 301)), np.log(f), 1)
    assert math.isclose(slope, want[0], rel_tol=1e-9) and math.isclose(intercept, want[1], rel_tol=1e-9)
    ranks = torch.arange(1, 201, dtype=torch.float64)
    assert zipf_fit(7.0 * ranks**-1.3)[0] == pytest.approx(-1.3, rel=1e-12)
    with pytest.raises(ValueError, match="min_rank"):
        zipf_fit(counts, 0, 10)
    with pytest.raises(ValueError, match="max_rank"):
        zipf_fit(counts, 1, 10_000)


def test_stored_ngrams_and_count_of_counts_against_sets():
    x = corpus(1500, seed=4)
    lm = NGramLM(4, "kneser_ney", vocab_size=7).fit(x)
    toks = x.tolist()
    grams = [Counter(tuple(toks[i : i + m]) for i in range(len(toks) - m + 1)) for m in range(1, 5)]
    assert lm.stored_ngrams == [len(gm) for gm in grams]
    top = Counter(grams[3].values())  # raw counts at the top order
    nr = lm.count_of_counts(4)
    assert all(nr[r] == top.get(r, 0) for r in range(1, len(nr)))
    cont = Counter(Counter(g[1:] for g in grams[3]).values())  # continuation counts of trigrams
    assert all(lm.count_of_counts(3)[r] == cont.get(r, 0) for r in range(1, 6))
    contexts = sum(len({g[:-1] for g in gm}) for gm in grams)
    assert lm.stored_numbers == 2 * sum(lm.stored_ngrams) + 3 * contexts
    with pytest.raises(ValueError, match="order must be between 1 and n = 4"):
        lm.count_of_counts(5)


def test_good_turing_counts_by_hand():
    nr = torch.tensor([0.0, 10.0, 4.0, 0.0, 2.0])  # n1 = 10, n2 = 4, n3 = 0, n4 = 2
    got = good_turing_counts(nr)
    assert got[0] == 2 * 4 / 10 and got[1] == 0.0  # r* = (r + 1) n_{r+1} / n_r
    assert math.isnan(got[2])  # n3 = 0: no estimate
    with pytest.raises(ValueError):
        good_turing_counts(torch.tensor([0.0, 1.0]))


def test_held_out_counts_against_a_counter():
    a, b = corpus(3000, seed=1), corpus(3000, seed=2)
    for order in (1, 2, 3):
        ca = Counter(tuple(a[i : i + order].tolist()) for i in range(len(a) - order + 1))
        cb = Counter(tuple(b[i : i + order].tolist()) for i in range(len(b) - order + 1))
        got = held_out_counts(a, b, order, 6, max_count=4)
        for r in range(1, 5):
            grams = [g for g, c in ca.items() if c == r]
            if grams:
                assert math.isclose(float(got[r - 1]), sum(cb[g] for g in grams) / len(grams), rel_tol=1e-12)
            else:
                assert math.isnan(float(got[r - 1]))


def test_modified_discounts_are_good_turing_counts():
    """D_r = r - Y r*, with r* Good-Turing's adjusted count and Y = n1 / (n1 + 2 n2)."""
    lm = NGramLM(3, "modified_kneser_ney").fit(corpus(20_000, vocab=8, seed=4))
    nr = lm.count_of_counts(3)
    y = float(nr[1] / (nr[1] + 2 * nr[2]))
    gt = good_turing_counts(nr[:5])
    assert all(n > 0 for n in nr[1:5])
    for r in (1, 2, 3):
        assert math.isclose(lm.discounts[2][r - 1], r - y * float(gt[r - 1]), rel_tol=1e-12)


def _nltk_model(cls, tokens, n, **kwargs):
    """An nltk.lm model fitted on every 1..n-gram of ``tokens`` (ids as strings, no padding)."""
    from nltk.util import everygrams

    words = [str(t) for t in tokens.tolist()]
    model = cls(order=n, **kwargs) if cls.__name__ != "Lidstone" else cls(kwargs["gamma"], order=n)
    model.fit([list(everygrams(words, max_len=n))], vocabulary_text=words)
    return model


def test_against_nltk():
    """An independent implementation (nltk.lm): maximum likelihood, add-k and interpolated Kneser-Ney.

    nltk's Kneser-Ney uses one discount for every order and stops at the undiscounted
    continuation unigram, where lmcourse interpolates the unigram order with 1/V; a
    (near-)zero discount at order 1 makes the two the same model. The text starts with
    a token that never recurs, so that no n-gram queried occurs only at the start
    (where nltk's raw context counts and the continuation counts differ).
    """
    pytest.importorskip("nltk.lm")
    from nltk.lm import MLE, KneserNeyInterpolated, Lidstone

    text = torch.cat([torch.tensor([6]), corpus(3000, vocab=6, seed=3)])
    n, V = 3, 7
    contexts = sorted({tuple(text[i : i + n - 1].tolist()) for i in range(1, len(text) - n + 1)})
    checks = [
        (NGramLM(n, "mle", vocab_size=V).fit(text), _nltk_model(MLE, text, n)),
        (NGramLM(n, "add_k", k=0.3, vocab_size=V + 1).fit(text), _nltk_model(Lidstone, text, n, gamma=0.3)),
    ]
    d = 0.6
    checks.append((
        NGramLM(n, "kneser_ney", vocab_size=V, discounts=[1e-12] + [d] * (n - 1)).fit(text),
        _nltk_model(KneserNeyInterpolated, text, n, discount=d),
    ))
    for ours, theirs in checks:
        assert len(theirs.vocab) == V + 1  # nltk adds <UNK>
        compared = 0
        for ctx in contexts:
            dist = ours.distribution(list(ctx))
            for w in range(6):
                ref = theirs.unmasked_score(str(w), tuple(str(c) for c in ctx))
                assert math.isclose(float(dist[w]), ref, rel_tol=1e-9, abs_tol=1e-12), (type(theirs).__name__, ctx, w)
                compared += 1
        assert compared >= 100
    # and a whole held-out text, token by token, for Kneser-Ney
    ours, theirs = checks[-1]
    held = corpus(400, vocab=6, seed=9)
    lp = ours.token_log_probs(held)
    for i in range(n - 1, len(held)):
        ctx = tuple(str(t) for t in held[i - n + 1 : i].tolist())
        assert math.isclose(float(lp[i - 1]), math.log(theirs.unmasked_score(str(int(held[i])), ctx)), rel_tol=1e-9)
