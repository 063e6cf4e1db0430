"""Tests of the additions to lmcourse.chain_rule: lengths with an end-of-text token, and
entropy / cross-entropy / KL, against brute-force enumeration and torch's own functions."""

import itertools
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from lmcourse.chain_rule import (
    bigram_counts,
    bigram_probs,
    cross_entropy,
    entropy,
    kl_divergence,
    length_distribution,
    sample,
    sequence_log_prob,
    unigram_probs,
)


def tiny_bigram(V=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (200,), generator=g)
    return bigram_probs(ids, V, k=0.5)


def test_conditionals_sum_to_one_over_all_continuations():
    # Given the first token, the chain rule's products over all V**L continuations sum to 1.
    P = tiny_bigram()
    for first in range(4):
        for L in (1, 2, 4):
            total = sum(math.exp(sequence_log_prob([first, *s], P)) for s in itertools.product(range(4), repeat=L))
            assert math.isclose(total, 1.0, abs_tol=1e-12)


def test_length_distribution_matches_enumeration():
    P, eot = tiny_bigram(), 2
    others = [t for t in range(4) if t != eot]
    got = length_distribution(P, eot, max_length=5)
    for L in range(6):
        brute = 0.0
        for s in itertools.product(others, repeat=L):
            seq = [eot, *s, eot]
            brute += math.prod(float(P[a, b]) for a, b in itertools.pairwise(seq))
        assert math.isclose(float(got[L]), brute, rel_tol=1e-12)
    # every text ends: the lengths' probabilities sum to 1
    assert math.isclose(float(length_distribution(P, eot, 400).sum()), 1.0, abs_tol=1e-12)


def test_length_distribution_of_a_unigram_is_geometric():
    p = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)  # stop with probability 0.2 each step
    got = length_distribution(p, eot=0, max_length=6)
    assert torch.allclose(got, torch.tensor([0.2 * 0.8**L for L in range(7)], dtype=torch.float64), rtol=1e-12)


def test_length_distribution_without_a_way_to_end():
    P = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # token 1 never leads to 0
    assert float(length_distribution(P, eot=0, max_length=10).sum()) == 0.0


def test_length_distribution_rejects_bad_input():
    P = tiny_bigram()
    with pytest.raises(ValueError, match="eot must be a token id"):
        length_distribution(P, eot=4, max_length=3)
    with pytest.raises(ValueError, match="max_length"):
        length_distribution(P, eot=0, max_length=-1)
    with pytest.raises(ValueError, match="probs must be"):
        length_distribution(torch.ones(2, 3), eot=0, max_length=3)
    with pytest.raises(ValueError, match="probs must be"):
        length_distribution([0.5, 0.5], eot=0, max_length=3)


def test_entropy_cross_entropy_kl_against_torch():
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        p = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
        q = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
        h = torch.distributions.Categorical(probs=p).entropy().item()
        kl = F.kl_div(q.log(), p, reduction="sum").item()
        assert math.isclose(entropy(p), h, rel_tol=1e-12)
        assert math.isclose(kl_divergence(p, q), kl, rel_tol=1e-10)
        assert math.isclose(cross_entropy(p, q), -(p * q.log()).sum().item(), rel_tol=1e-12)
        assert math.isclose(cross_entropy(p, q), entropy(p) + kl_divergence(p, q), rel_tol=1e-12)
        assert kl_divergence(p, q) > 0 and kl_divergence(p, p) == 0.0


def test_zero_probabilities():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    assert math.isclose(entropy(p), math.log(2), rel_tol=1e-15)  # 0 ln 0 = 0
    q = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert kl_divergence(p, q) == math.inf and cross_entropy(p, q) == math.inf
    assert math.isclose(kl_divergence(q, p), math.log(2), rel_tol=1e-15)


def test_distribution_checks():
    p = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="q must sum to 1"):
        kl_divergence(p, torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="q has shape"):
        cross_entropy(p, torch.tensor([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match=">= 0"):
        entropy(torch.tensor([1.5, -0.5]))
    with pytest.raises(TypeError, match="p must be a torch.Tensor"):
        entropy([0.5, 0.5])


def test_bigram_counts_against_a_counter():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 5, (500,), generator=g)
    ref = Counter(zip(ids[:-1].tolist(), ids[1:].tolist(), strict=True))
    counts = bigram_counts(ids, 5)
    assert counts.shape == (5, 5) and int(counts.sum()) == 499
    assert all(int(counts[a, b]) == ref[a, b] for a in range(5) for b in range(5))
    # add-k is the counts plus k, row-normalised
    k = 0.3
    smoothed = counts.double() + k
    assert torch.allclose(bigram_probs(ids, 5, k=k), smoothed / smoothed.sum(1, keepdim=True), atol=1e-15)


def test_counting_maximises_the_likelihood():
    """c(ab) / c(a) beats every other table on the text it counted (random perturbations on the simplex)."""
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 4, (300,), generator=g)
    counts = bigram_counts(ids, 4).double()
    ml = counts / counts.sum(1, keepdim=True)

    def loglik(P):
        return float(torch.special.xlogy(counts, P).sum())

    best = loglik(ml)
    for _ in range(200):
        other = torch.distributions.Dirichlet(torch.ones(4, 4, dtype=torch.float64)).sample()
        mix = 0.9 * ml + 0.1 * other
        assert loglik(mix) < best


def test_sample_draws_from_the_model():
    P = tiny_bigram(V=3, seed=2)
    g = torch.Generator().manual_seed(0)
    drawn = sample(P, 0, 30_000, generator=g)
    assert drawn.shape == (30_000,) and drawn.dtype == torch.long
    freq = bigram_counts(torch.cat([torch.tensor([0]), drawn]), 3).double()
    freq = freq / freq.sum(1, keepdim=True)
    assert (freq - P).abs().max() < 0.02
    U = unigram_probs([0, 0, 1, 2], 3)
    drawn = sample(U, 1, 40_000, generator=torch.Generator().manual_seed(1))
    assert (torch.bincount(drawn, minlength=3).double() / 40_000 - U).abs().max() < 0.01
    # the same generator seed gives the same text
    a = sample(P, 0, 50, generator=torch.Generator().manual_seed(5))
    b = sample(P, 0, 50, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and len(sample(P, 0, 0)) == 0


@pytest.mark.parametrize("args", [
    (torch.ones(2, 3) / 3, 0, 5),  # not square
    (torch.ones(3) / 3, 3, 5),  # first out of range
    (torch.ones(3) / 3, 0, -1),  # negative length
])
def test_sample_rejects_bad_input(args):
    with pytest.raises(ValueError):
        sample(*args)
