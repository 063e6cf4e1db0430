"""Chapter 13's exercises: every plausible wrong answer costs its own task points, and only those.

Each fixture ``tests/grading_fixtures/wrong_answers/13_*.ipynb`` is the solutions
notebook with one function's solution region replaced by a wrong answer (the table
:data:`WRONG_ANSWERS`); a ``*_calls_package`` one answers by calling what its task
forbids and must score 0 there. After the solutions change, rewrite them with
``python tests/test_exercises_13.py``; a fast test says when they are out of date.
"""

from pathlib import Path

import pytest
from chapter_grades import grades_of, group
from test_exercises import (  # the one fixture builder and its checks, for every chapter
    assert_table_answer_costs_its_task,
    assert_table_covers_every_task,
    assert_table_fixtures_current,
    write_table_fixtures,
)

from lmcourse.course.exercises import SOLUTIONS_DIR

SOLUTION = SOLUTIONS_DIR / "13_data.ipynb"
FIXTURES = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

# fixture name: (task, function whose solution region is replaced, wrong body,
# a fragment of the message of the check that must catch it)
WRONG_ANSWERS = {
    "13_minhash_signature_sets": ("minhash", "minhash_estimate", """
        # the Jaccard of the two signatures' value sets, not the share of agreeing positions
        g = torch.Generator().manual_seed(seed)
        alpha = torch.randint(1, PRIME, (k, 1), generator=g)
        beta = torch.randint(0, PRIME, (k, 1), generator=g)

        def signature(s):
            x = torch.tensor(sorted(set(s)), dtype=torch.int64)[None, :]
            return set(((alpha * x + beta) % PRIME).min(dim=1).values.tolist())

        sa, sb = signature(a), signature(b)
        j = len(sa & sb) / len(sa | sb)
        return j, math.sqrt(j * (1 - j) / k)
    """, "far off"),
    "13_minhash_error_without_root": ("minhash", "minhash_estimate", """
        g = torch.Generator().manual_seed(seed)
        alpha = torch.randint(1, PRIME, (k, 1), generator=g)
        beta = torch.randint(0, PRIME, (k, 1), generator=g)

        def signature(s):
            x = torch.tensor(sorted(set(s)), dtype=torch.int64)[None, :]
            return ((alpha * x + beta) % PRIME).min(dim=1).values

        j = (signature(a) == signature(b)).double().mean().item()
        return j, j * (1 - j) / k  # the variance, not the standard error
    """, "standard error"),
    "13_minhash_calls_package": ("minhash", "minhash_estimate", """
        from lmcourse.dedup import minhash_jaccard, minhash_params, minhash_signature

        p = minhash_params(k, seed)
        j = minhash_jaccard(minhash_signature(torch.tensor(a).numpy(), p),
                            minhash_signature(torch.tensor(b).numpy(), p))
        return j, math.sqrt(j * (1 - j) / k)
    """, ""),
    "13_lsh_rows_and_bands_swapped": ("lsh", "choose_bands", """
        def p(s, b, r):  # b and r swapped in the S-curve
            return 1 - (1 - s**b) ** r

        best = None
        for r in range(1, k_max + 1):
            for b in range(1, k_max // r + 1):
                if p(s_hi, b, r) >= 1 - miss and p(s_lo, b, r) <= spurious:
                    key = (b * r, p(s_lo, b, r))
                    if best is None or key < best[0]:
                        best = (key, (b, r))
        return None if best is None else best[1]
    """, "b=6, r=4"),
    "13_lsh_threshold_rule": ("lsh", "choose_bands", """
        # the rule of thumb: put the curve's steep point (1/b)^(1/r) midway, ignore the budgets
        target = (s_hi + s_lo) / 2
        best = None
        for r in range(1, k_max + 1):
            for b in range(1, k_max // r + 1):
                key = (abs((1 / b) ** (1 / r) - target), b * r)
                if best is None or key < best[0]:
                    best = (key, (b, r))
        return best[1]
    """, "b=6, r=4"),
    "13_lsh_calls_package": ("lsh", "choose_bands", """
        from lmcourse.dedup import lsh_probability

        best = None
        for r in range(1, k_max + 1):
            for b in range(1, k_max // r + 1):
                hi, lo = lsh_probability(s_hi, b, r), lsh_probability(s_lo, b, r)
                if hi >= 1 - miss and lo <= spurious:
                    if best is None or (b * r, lo) < best[0]:
                        best = ((b * r, lo), (b, r))
        return None if best is None else best[1]
    """, ""),
    "13_exposure_product_underflows": ("exposure", "exposure", """
        # probabilities multiplied: long secrets underflow to 0 and tie
        p_c = canary.exp().prod()
        p_o = others.exp().prod(dim=1)
        rank = 1 + int((p_o > p_c).sum())
        return math.log2(others.shape[0] + 1) - math.log2(rank)
    """, "underflows"),
    "13_exposure_space_without_canary": ("exposure", "exposure", """
        canary_lp = -canary.sum()
        others_lp = -others.sum(dim=1)
        rank = 1 + int((others_lp < canary_lp).sum())
        return math.log2(others.shape[0]) - math.log2(rank)  # |R| - 1, not |R|
    """, "expected 2.0 bits"),
    "13_exposure_ties_against": ("exposure", "exposure", """
        canary_lp = -canary.sum()
        others_lp = -others.sum(dim=1)
        rank = 1 + int((others_lp <= canary_lp).sum())  # ties push the canary down
        return math.log2(others.shape[0] + 1) - math.log2(rank)
    """, "do not push it down"),
    "13_exposure_calls_package": ("exposure", "exposure", """
        from lmcourse.memorisation import exposure_from_rank, rank_among

        rank = rank_among(-canary.sum().item(), -others.sum(dim=1))
        return exposure_from_rank(rank, others.shape[0] + 1)
    """, ""),
}


def write_fixtures() -> None:
    write_table_fixtures(SOLUTION, WRONG_ANSWERS, FIXTURES)


def test_fixtures_are_the_solutions_with_one_wrong_answer():
    assert_table_fixtures_current(SOLUTION, WRONG_ANSWERS, FIXTURES, "tests/test_exercises_13.py")


def test_every_task_has_a_wrong_answer_and_every_forbid_a_calls_package_fixture():
    assert_table_covers_every_task(SOLUTION, WRONG_ANSWERS)


@pytest.mark.slow
@group("13")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"minhash", "lsh", "exposure"}
    assert all(r.points == r.max_points and r.status == "passed" for r in rows.values()), rows


@pytest.mark.slow
@group("13")
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    assert_table_answer_costs_its_task(SOLUTION, WRONG_ANSWERS, FIXTURES, name)


if __name__ == "__main__":
    write_fixtures()
    print(f"wrote {len(WRONG_ANSWERS)} fixtures to {FIXTURES}")
