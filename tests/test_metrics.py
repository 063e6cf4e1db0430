import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lmcourse.chain_rule import bigram_probs, sequence_log_prob, token_log_probs, uniform_probs, unigram_probs
from lmcourse.device import get_device
from lmcourse.metrics import bits_per_char, mean_nll, perplexity


def test_perplexity_is_exp_of_mean_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 11, (3, 7), generator=g)
    # independent reference in float64: log of softmax probabilities, picked by hand
    probs = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    nll_ref = -sum(math.log(probs[b, t, targets[b, t]]) for b in range(3) for t in range(7)) / 21
    assert math.isclose(mean_nll(logits, targets).item(), nll_ref, rel_tol=1e-12)
    assert math.isclose(perplexity(mean_nll(logits, targets).item()), math.exp(nll_ref), rel_tol=1e-12)
    assert math.isclose(perplexity(F.cross_entropy(logits.view(-1, 11), targets.view(-1)).item()), math.exp(nll_ref))


def test_uniform_perplexity_is_vocab_size():
    V = 37
    logits = torch.zeros(5, V)
    assert math.isclose(perplexity(mean_nll(logits, torch.arange(5)).item()), V, rel_tol=1e-6)
    assert perplexity(float("inf")) == math.inf
    with pytest.raises(ValueError):
        perplexity(float("nan"))


def test_bits_per_char():
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
    assert bits_per_char(3.0, chars_per_token=2.5) == pytest.approx(3.0 / 2.5 / math.log(2))
    with pytest.raises(ValueError):
        bits_per_char(1.0, chars_per_token=0)


def test_mean_nll_shape_error():
    with pytest.raises(ValueError, match="do not match"):
        mean_nll(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_count_models_are_distributions_and_match_hand_counts():
    ids = [0, 1, 1, 2, 0, 1]
    V = 3
    assert torch.allclose(uniform_probs(V).sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(unigram_probs(ids, V), torch.tensor([2, 3, 1], dtype=torch.float64) / 6)
    P = bigram_probs(ids, V, k=1.0)
    assert torch.allclose(P.sum(1), torch.ones(3, dtype=torch.float64))
    # after 1: pairs (1,1), (1,2) -> counts [0, 1, 1] + 1 -> [1, 2, 2] / 5
    assert torch.allclose(P[1], torch.tensor([1, 2, 2], dtype=torch.float64) / 5)
    with pytest.raises(ValueError):
        bigram_probs(ids, V, k=0.0)
    with pytest.raises(ValueError, match="token id 3 is out of range for a vocabulary of 3 ids"):
        unigram_probs([0, 3], V)


def test_chain_rule_sum_of_logs_equals_log_of_product():
    ids = [0, 1, 1, 2, 0, 1]
    P = bigram_probs(ids, 3, k=0.5)
    product = math.prod(P[a, b].item() for a, b in itertools.pairwise(ids))
    assert math.isclose(sequence_log_prob(ids, P), math.log(product), rel_tol=1e-12)
    assert token_log_probs(ids, P).shape == (5,)


def test_device_override(monkeypatch):
    monkeypatch.setenv("LMCOURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.setenv("LMCOURSE_DEVICE", "potato")
    with pytest.raises(ValueError, match="not a device"):
        get_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("LMCOURSE_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="no CUDA"):
            get_device()


def test_entry_points_reject_out_of_range_ids():
    msg = r"token id 9 is out of range for a vocabulary of 5 ids \(valid: 0..4\)"
    with pytest.raises(ValueError, match=msg):
        unigram_probs([0, 9], 5)
    with pytest.raises(ValueError, match=msg):
        bigram_probs(torch.tensor([9, 0]), 5)
    with pytest.raises(ValueError, match=msg):
        token_log_probs([1, 9], bigram_probs([0, 1], 5))
    with pytest.raises(ValueError, match=msg):
        sequence_log_prob([1, 9], uniform_probs(5))
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        unigram_probs([0, -1], 5)
    with pytest.raises(ValueError, match=msg):
        mean_nll(torch.zeros(2, 3, 5), torch.tensor([[0, 1, 2], [3, 4, 9]]))
    with pytest.raises(ValueError, match="token id -2 is out of range"):
        mean_nll(torch.zeros(3, 5), torch.tensor([0, -2, 1]))
