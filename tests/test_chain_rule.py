"""Tests of the additions to lmcourse.chain_rule: lengths with an end-of-text token, and
entropy / cross-entropy / KL, against brute-force enumeration and torch's own functions."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lmcourse.chain_rule import (
    bigram_probs,
    cross_entropy,
    entropy,
    kl_divergence,
    length_distribution,
    sequence_log_prob,
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
