"""Chapter 6's measures of how alike a matrix's rows point, against direct float64 computations."""

import itertools
import math

import pytest
import torch

from lmcourse.embedding_geometry import common_direction, frequency_groups, mean_pairwise_cosine


def test_mean_pairwise_cosine_is_the_mean_over_every_pair_of_distinct_rows():
    rows = torch.randn(9, 5, generator=torch.Generator().manual_seed(0))
    pairs = [torch.nn.functional.cosine_similarity(rows[i].double(), rows[j].double(), dim=0).item()
             for i, j in itertools.combinations(range(9), 2)]
    assert mean_pairwise_cosine(rows) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)


def test_mean_pairwise_cosine_at_its_ends_and_for_a_hand_worked_case():
    assert mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine(torch.ones(3, 4) * torch.tensor([[1.0], [2.0], [5.0]])) == pytest.approx(1.0)
    # rows at 0, 60 and 0 degrees: pair cosines 0.5, 1 and 0.5
    rows = torch.tensor([[1.0, 0.0], [math.cos(math.pi / 3), math.sin(math.pi / 3)], [2.0, 0.0]])
    assert mean_pairwise_cosine(rows) == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_common_direction_is_the_length_of_the_mean_over_the_mean_length():
    rows = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    assert common_direction(rows) == pytest.approx(1.0)
    rows = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert common_direction(rows) == pytest.approx(math.sqrt(2) / 2)


def test_frequency_groups_sorts_by_count_and_counts_absent_tokens_as_rarest():
    ids = torch.tensor([4] * 10 + [2] * 7 + [6] * 6 + [7] * 5 + [0] * 3 + [1])
    rare, frequent = frequency_groups(ids, 8, rare_below=4)
    assert rare.tolist() == [3, 5, 1, 0]  # counts 0, 0, 1, 3
    assert frequent.tolist() == [4, 2, 6, 7]  # counts 10, 7, 6, 5
    rare, frequent = frequency_groups(ids, 8, rare_below=2, n_frequent=2)
    assert rare.tolist() == [3, 5, 1] and frequent.tolist() == [4, 2]


def test_bad_input_gets_a_clear_message():
    with pytest.raises(ValueError, match="zero"):
        mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 2 rows"):
        common_direction(torch.ones(1, 3))
    with pytest.raises(ValueError, match="outside a vocabulary"):
        frequency_groups(torch.tensor([0, 7]), 5, rare_below=2)
    with pytest.raises(ValueError, match="at least 2 in each group"):
        frequency_groups(torch.tensor([0, 0, 1, 1]), 2, rare_below=1)
