"""Exposure on hand-worked cases and by full enumeration; extraction against a step-by-step greedy loop."""

import itertools
import math

import pytest
import torch

from lmcourse.memorisation import (
    continuation_nll,
    exposure_from_rank,
    exposure_normal,
    exposure_sampled,
    extractable,
    greedy_continue,
    greedy_match_length,
    greedy_matches,
    insert_blocks,
    random_secret,
    rank_among,
)
from lmcourse.transformer import GPT, GPTConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=6, context_length=12, d_model=16, n_layers=1, n_heads=2)).eval()


def test_exposure_by_hand():
    # |R| = 8 secrets; the canary's log-perplexity is beaten by one other: rank 2, exposure log2(8/2) = 2 bits
    candidates = [5.0, 1.0, 7.0, 3.5, 6.0, 9.0, 8.0]
    assert rank_among(3.0, candidates) == 2
    assert exposure_from_rank(2, 8) == 2.0
    assert exposure_from_rank(8, 8) == 0.0
    with pytest.raises(ValueError, match="rank"):
        exposure_from_rank(9, 8)


def test_continuation_nll_is_the_chain_rule(model):
    prefix, cont = [1, 2, 3], torch.tensor([[4, 0, 5]])
    ids = torch.tensor([prefix + cont[0].tolist()])
    logp = torch.log_softmax(model(ids[:, :-1]).double(), -1)[0]
    expected = -sum(logp[2 + i, t].item() for i, t in enumerate(cont[0].tolist()))
    assert continuation_nll(model, prefix, cont).item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="exceed the context"):
        continuation_nll(model, list(range(6)) * 2, cont)


def test_exposure_by_enumerating_the_whole_space(model):
    # secrets of 3 tokens over 4 symbols: |R| = 64, every candidate scored
    space = torch.tensor(list(itertools.product(range(1, 5), repeat=3)))
    nll = continuation_nll(model, [0, 5], space)
    canary = 17
    others = torch.cat([nll[:canary], nll[canary + 1:]])
    rank = rank_among(nll[canary].item(), others)
    assert rank == 1 + int((nll < nll[canary]).sum())  # rank in the sorted list of all 64
    exact = exposure_from_rank(rank, 64)
    # the sampled estimate with every other candidate as the "sample": -log2(rank / 64), the same number
    assert exposure_sampled(nll[canary].item(), others) == pytest.approx(exact)


def test_sampled_exposure_converges_to_the_rank():
    g = torch.Generator().manual_seed(0)
    population = torch.randn(2**16, generator=g, dtype=torch.float64)
    canary = float(population.sort().values[63])  # rank 64 of 65,536: exposure 10 bits
    sample = population[torch.randint(len(population), (20_000,), generator=g)]
    assert exposure_sampled(canary, sample) == pytest.approx(10.0, abs=0.3)
    # a normal population: the normal fit extrapolates to the same place
    assert exposure_normal(canary, sample) == pytest.approx(10.0, abs=0.3)
    assert exposure_normal(-40.0, sample) > 1000  # far tail: no underflow to inf
    assert math.isfinite(exposure_normal(-40.0, sample))


def test_greedy_matches_a_plain_loop(model):
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(6, (4, 5), generator=g)
    ids = prompts.clone()
    for _ in range(10):  # past the context of 12: the window slides
        ids = torch.cat([ids, model(ids[:, -12:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy_continue(model, prompts, 10), ids[:, 5:])
    assert greedy_matches(model, prompts, ids[:, 5:]).all()
    wrong = ids[:, 5:].clone()
    wrong[0, -1] = (wrong[0, -1] + 1) % 6
    assert greedy_matches(model, prompts, wrong).tolist() == [False, True, True, True]
    stream = ids[1]
    assert extractable(model, stream, [0], prompt=5, suffix=10).tolist() == [True]
    with pytest.raises(ValueError, match="prompt \\+ suffix"):
        extractable(model, stream, [10], prompt=5, suffix=10)


def test_insert_blocks_inserts_whole_speeches():
    text = "".join(f"S{i}:\nline {i}\n\n" for i in range(50))
    g = torch.Generator().manual_seed(0)
    out = insert_blocks(text, [("CANARY:\nMy number is 123.\n", 7), ("OTHER:\nx\n", 0)], g)
    assert out.count("CANARY:\nMy number is 123.\n\n") == 7 and "OTHER" not in out
    assert out.replace("CANARY:\nMy number is 123.\n\n", "") == text
    assert len(random_secret(9, g)) == 9 and random_secret(9, g).isdigit()
    with pytest.raises(ValueError):
        random_secret(0, g)


def test_greedy_match_length_counts_up_to_the_first_miss(model):
    g = torch.Generator().manual_seed(2)
    prompts = torch.randint(6, (3, 4), generator=g)
    out = greedy_continue(model, prompts, 6)
    stream = torch.cat([prompts[0], out[0]])
    assert greedy_match_length(model, stream, [0], prompt=4, suffix=6).tolist() == [6]
    broken = stream.clone()
    broken[4 + 2] = (broken[4 + 2] + 1) % 6  # the third continuation token is wrong
    assert greedy_match_length(model, broken, [0], prompt=4, suffix=6).tolist() == [2]
