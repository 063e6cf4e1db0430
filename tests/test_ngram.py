"""Tests of lmcourse.ngram against hand-worked counts and a dictionary reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmcourse.bench import available
from lmcourse.bench import run as run_bench
from lmcourse.bench.ngram import ReferenceKneserNey
from lmcourse.ngram import SMOOTHINGS, NGramLM

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
