"""Chapter 5's exercises: every plausible wrong answer costs its own task points, and only those.

Each fixture ``tests/grading_fixtures/wrong_answers/05_*.ipynb`` is the solutions
notebook with one function's solution region replaced by a wrong answer (the table
:data:`WRONG_ANSWERS`); a ``*_calls_package`` one answers by calling what its task
forbids and must score 0 there. After the solutions change, rewrite them with
``python tests/test_exercises_05.py``; a fast test says when they are out of date.
The solution's full marks and the untouched exercise's zero are asserted for every
chapter by ``tests/test_grading.py``; every test reads the chapter's one grading
batch (``tests/chapter_grades.py``).
"""

from pathlib import Path

import nbformat
import pytest
from chapter_grades import grades_of, group
from test_exercises import (  # the one fixture builder and its checks, for every chapter
    assert_table_answer_costs_its_task,
    assert_table_covers_every_task,
    assert_table_fixtures_current,
    write_table_fixtures,
)

from lmcourse.course.exercises import SOLUTIONS_DIR

SOLUTION = SOLUTIONS_DIR / "05_positions.ipynb"
FIXTURES = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

# fixture name: (task, function whose solution region is replaced, wrong body,
# a fragment of the message of the check that must catch it)
WRONG_ANSWERS = {
    "05_port_inverse": ("port", "to_half_split", """
        # the permutation the other way round: half-split slots read as interleaved ones
        d_head = w.shape[0] // n_heads
        half = rot // 2
        order = [j for i in range(half) for j in (i, i + half)] + list(range(rot, d_head))
        return w[[h * d_head + j for h in range(n_heads) for j in order]]
    """, "which rows of a head must become half-split pair i"),
    "05_port_hf_permute": ("port", "to_half_split", """
        # Hugging Face's permute from its Llama conversion script: the whole head is rotated
        dim1, dim2 = w.shape
        return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)
    """, "features 6..9 of each head are not rotated"),
    "05_port_one_head": ("port", "to_half_split", """
        # every row of the matrix taken as one head
        d_head = w.shape[0]
        order = list(range(0, rot, 2)) + list(range(1, rot, 2)) + list(range(rot, d_head))
        return w[order]
    """, "which rows of a head must become half-split pair i"),
    "05_port_calls_package": ("port", "to_half_split", """
        from lmcourse.positions import rope_half_permutation

        d_head = w.shape[0] // n_heads
        order = rope_half_permutation(rot).tolist() + list(range(rot, d_head))
        return w[[h * d_head + j for h in range(n_heads) for j in order]]
    """, "must not call"),
    "05_port_hf_sibling_calls_package": ("port", "to_half_split", """
        # a "Copied from" sibling of Llama's apply_rotary_pos_emb, to find which features turn together
        from transformers.models.mistral.modeling_mistral import apply_rotary_pos_emb

        d_head = w.shape[0] // n_heads
        probe = torch.eye(rot, dtype=torch.float64)[:, None, :]  # (rot, 1, rot): one feature each
        quarter = torch.full((1, rot), math.pi / 2, dtype=torch.float64)  # every pair a quarter turn
        turned, _ = apply_rotary_pos_emb(probe, probe, quarter.cos(), quarter.sin(), unsqueeze_dim=0)
        partner = turned[:, 0].abs().argmax(dim=-1).tolist()  # feature j turns into its partner
        pairs = [x for j in range(rot) if j < partner[j] for x in (j, partner[j])]
        order = [pairs.index(j) for j in range(rot)] + list(range(rot, d_head))
        return w[[h * d_head + j for h in range(n_heads) for j in order]]
    """, "must not call"),
    "05_gap_no_wrap": ("diagnose", "angle_gap", """
        # angles reduced to [0, 2 pi), but 0.1 and 6.2 taken as 6.1 apart
        freqs = torch.as_tensor(freqs, dtype=torch.float64)
        new = freqs if new_freqs is None else torch.as_tensor(new_freqs, dtype=torch.float64)
        seen = (torch.arange(trained, dtype=torch.float64)[:, None] * freqs) % (2 * math.pi)
        read = (torch.arange(longer, dtype=torch.float64)[:, None] * new) % (2 * math.pi)
        apart = (read[:, None, :] - seen[None, :, :]).abs()
        return apart.min(dim=1).values.max(dim=0).values
    """, "around the circle, from each new angle to the nearest"),
    "05_gap_absolute_angles": ("diagnose", "angle_gap", """
        # angles on the real line, never reduced: a full turn counts as far away
        freqs = torch.as_tensor(freqs, dtype=torch.float64)
        new = freqs if new_freqs is None else torch.as_tensor(new_freqs, dtype=torch.float64)
        seen = torch.arange(trained, dtype=torch.float64)[:, None] * freqs
        read = torch.arange(longer, dtype=torch.float64)[:, None] * new
        apart = (read[:, None, :] - seen[None, :, :]).abs()
        return apart.min(dim=1).values.max(dim=0).values
    """, "a distance around the circle lies between 0 and pi"),
    "05_gap_turn_criterion": ("diagnose", "angle_gap", """
        # a pair that completed a turn counts as having seen every angle; the others as
        # having seen the whole arc from 0 to their last angle
        freqs = torch.as_tensor(freqs, dtype=torch.float64)
        new = freqs if new_freqs is None else torch.as_tensor(new_freqs, dtype=torch.float64)
        out = torch.zeros_like(freqs)
        for i in range(len(freqs)):
            arc = (trained - 1) * freqs[i].item()
            if arc >= 2 * math.pi:
                continue
            read = torch.arange(longer, dtype=torch.float64) * new[i]
            a = read % (2 * math.pi)
            far = torch.where(a <= arc, torch.zeros_like(a), torch.minimum(a - arc, 2 * math.pi - a))
            out[i] = far.max()
        return out
    """, "around the circle, from each new angle to the nearest"),
    "05_gap_same_freqs": ("diagnose", "angle_gap", """
        # the trained angles taken with the new frequencies too
        new = torch.as_tensor(freqs if new_freqs is None else new_freqs, dtype=torch.float64)
        seen = torch.arange(trained, dtype=torch.float64)[:, None] * new
        read = torch.arange(longer, dtype=torch.float64)[:, None] * new
        apart = (read[:, None, :] - seen[None, :, :]) % (2 * math.pi)
        apart = torch.minimum(apart, 2 * math.pi - apart)
        return apart.min(dim=1).values.max(dim=0).values
    """, "the trained ones freqs"),
    "05_gap_float32": ("diagnose", "angle_gap", """
        # the right distances, in float32: angles of a few hundred radians lose their fourth digit
        freqs = torch.as_tensor(freqs, dtype=torch.float32)
        new = freqs if new_freqs is None else torch.as_tensor(new_freqs, dtype=torch.float32)
        seen = torch.arange(trained, dtype=torch.float32)[:, None] * freqs
        read = torch.arange(longer, dtype=torch.float32)[:, None] * new
        apart = (read[:, None, :] - seen[None, :, :]) % (2 * math.pi)
        apart = torch.minimum(apart, 2 * math.pi - apart)
        return apart.min(dim=1).values.max(dim=0).values.double()
    """, "compute in float64"),
    "05_gap_calls_package": ("diagnose", "angle_gap", """
        from lmcourse.positions import rope_angles

        freqs = torch.as_tensor(freqs, dtype=torch.float64)
        new = freqs if new_freqs is None else torch.as_tensor(new_freqs, dtype=torch.float64)
        d = 2 * len(freqs)
        cs, ss = rope_angles(trained, d, freqs=freqs)
        cr, sr = rope_angles(longer, d, freqs=new)
        cos = cr[:, None, :] * cs[None, :, :] + sr[:, None, :] * ss[None, :, :]
        return torch.acos(cos.clamp(-1, 1)).min(dim=1).values.max(dim=0).values
    """, "must not call"),
    "05_alibi_one_sequence": ("diagnose", "alibi_far_share", """
        # one geometric sequence from 2^(-8/H) for any H, as for a power of two
        start = 2.0 ** (-8.0 / n_heads)
        m = torch.tensor([start ** (k + 1) for k in range(n_heads)], dtype=torch.float64)[:, None]
        weight = torch.exp(-m * torch.arange(window, dtype=torch.float64))
        return weight[:, trained:].sum(dim=1) / weight.sum(dim=1)
    """, "so head 5 is the most local"),
    "05_alibi_past_trained": ("diagnose", "alibi_far_share", """
        def geometric(n):
            start = 2.0 ** (-8.0 / n)
            return [start ** (k + 1) for k in range(n)]

        p = 1 << (n_heads.bit_length() - 1)
        slopes = geometric(p) + geometric(2 * p)[0::2][: n_heads - p]
        m = torch.tensor(slopes, dtype=torch.float64)[:, None]
        weight = torch.exp(-m * torch.arange(window, dtype=torch.float64))
        return weight[:, trained + 1:].sum(dim=1) / weight.sum(dim=1)  # distance trained counted as seen
    """, "share at distances of trained or more"),
    "05_alibi_mean_over_queries": ("diagnose", "alibi_far_share", """
        # every query of the window, averaged, rather than the last one
        def geometric(n):
            start = 2.0 ** (-8.0 / n)
            return [start ** (k + 1) for k in range(n)]

        p = 1 << (n_heads.bit_length() - 1)
        slopes = geometric(p) + geometric(2 * p)[0::2][: n_heads - p]
        m = torch.tensor(slopes, dtype=torch.float64)
        total = torch.zeros(n_heads, dtype=torch.float64)
        for t in range(window):
            weight = torch.exp(-m[:, None] * torch.arange(t + 1, dtype=torch.float64))
            total += weight[:, trained:].sum(dim=1) / weight.sum(dim=1)
        return total / window
    """, "not the last query's share"),
    "05_alibi_calls_package": ("diagnose", "alibi_far_share", """
        from lmcourse.positions import alibi_slopes

        m = alibi_slopes(n_heads).double()[:, None]
        weight = torch.exp(-m * torch.arange(window, dtype=torch.float64))
        return weight[:, trained:].sum(dim=1) / weight.sum(dim=1)
    """, "must not call"),
    "05_base_ntk": ("base", "smallest_base", """
        # NTK-aware scaling: pair 0 kept, the slowest pair slowed by the factor
        s = (longer - 1) / (trained - 1)
        return float(base * s ** (d_head / (d_head - 2)))
    """, "over the long window, past the"),
    "05_base_length_ratio": ("base", "smallest_base", """
        # slowed by longer / trained: the distances run to longer - 1, not longer
        reached = [(trained - 1) * base ** (-2 * i / d_head) for i in range(d_head // 2)]
        short = [i for i, a in enumerate(reached) if a < 2 * math.pi]
        if not short:
            return float(base)
        if short[0] == 0:
            raise ValueError("pair 0 did not complete a turn")
        return float(base * (longer / trained) ** (d_head / (2 * short[0])))
    """, "over the long window, past the"),
    "05_base_last_turning_pair": ("base", "smallest_base", """
        # the last pair that completed a turn, not the first that did not
        reached = [(trained - 1) * base ** (-2 * i / d_head) for i in range(d_head // 2)]
        short = [i for i, a in enumerate(reached) if a < 2 * math.pi]
        if not short:
            return float(base)
        if short[0] <= 1:
            raise ValueError("no pair before the first that did not turn")
        s = (longer - 1) / (trained - 1)
        return float(base * s ** (d_head / (2 * (short[0] - 1))))
    """, "find the smallest"),
    "05_base_divides_by_zero": ("base", "smallest_base", """
        # right, except when pair 0 itself did not complete a turn
        reached = [(trained - 1) * base ** (-2 * i / d_head) for i in range(d_head // 2)]
        short = [i for i, a in enumerate(reached) if a < 2 * math.pi]
        if not short:
            return float(base)
        s = (longer - 1) / (trained - 1)
        return float(base * s ** (d_head / (2 * short[0])))
    """, "raise ValueError"),
    "05_base_wavelength_positions": ("base", "smallest_base", """
        # a turn completed when the wavelength fits in trained positions (not trained - 1
        # distances), and slowed by longer / trained
        wavelength = [2 * math.pi * base ** (2 * i / d_head) for i in range(d_head // 2)]
        short = [i for i, x in enumerate(wavelength) if x > trained]
        if not short:
            return float(base)
        if short[0] == 0:
            raise ValueError("pair 0 did not complete a turn")
        return float(base * (longer / trained) ** (d_head / (2 * short[0])))
    """, "over the long window, past the"),
    "05_base_calls_package": ("base", "smallest_base", """
        from lmcourse.positions import rope_wavelengths

        short = (rope_wavelengths(d_head, base) > trained - 1).nonzero().flatten().tolist()
        if not short:
            return float(base)
        if short[0] == 0:
            raise ValueError("pair 0 did not complete a turn")
        s = (longer - 1) / (trained - 1)
        return float(base * s ** (d_head / (2 * short[0])))
    """, "must not call"),
}


def write_fixtures() -> None:
    write_table_fixtures(SOLUTION, WRONG_ANSWERS, FIXTURES)


def test_fixtures_are_the_solutions_with_one_wrong_answer():
    assert_table_fixtures_current(SOLUTION, WRONG_ANSWERS, FIXTURES, "tests/test_exercises_05.py")


def test_every_task_has_a_wrong_answer_and_every_forbid_a_calls_package_fixture():
    assert_table_covers_every_task(SOLUTION, WRONG_ANSWERS)
    functions = {function for _, function, _, _ in WRONG_ANSWERS.values()}
    assert functions == {"to_half_split", "angle_gap", "alibi_far_share", "smallest_base"}


def test_every_solution_imports_math_and_torch_only_and_reads_clean():
    """Each answer may import math and torch only, so neither lmcourse nor any of Hugging Face's
    RoPE helpers and their "Copied from" siblings in other model files can be reached."""
    from lmcourse.course.exercises import cell_info
    from lmcourse.course.reading import Rules, read_cell

    solution = nbformat.read(SOLUTION, as_version=4)
    cells = [c for c in solution.cells if cell_info(c).get("role") == "solution"]
    assert len(cells) == 4
    for cell in cells:
        info = cell_info(cell)
        assert sorted(info["allow"]) == ["math", "torch"], info
        rules = Rules(allowed=frozenset(info["allow"]), forbid=tuple(info.get("forbid", ())))
        assert read_cell(cell.source, rules) == [], info["task"]
        for shortcut in ("from transformers.models.mistral.modeling_mistral import apply_rotary_pos_emb",
                         "from transformers.modeling_rope_utils import _compute_dynamic_ntk_parameters",
                         "from lmcourse.positions import rope_half_permutation", "import numpy as np"):
            assert read_cell(shortcut, rules), (info["task"], shortcut)


@pytest.mark.slow
@group("05")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"port", "diagnose", "base"}
    assert sum(r.max_points for r in rows.values()) == 11
    assert all(r.points == r.max_points and r.status == "passed" for r in rows.values()), rows


@pytest.mark.slow
@group("05")
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    assert_table_answer_costs_its_task(SOLUTION, WRONG_ANSWERS, FIXTURES, name)


# right answers by other routes, which must keep full marks: name -> (function, body, task)
ACCEPTED = {
    "05_port_view_transpose": ("to_half_split", """
        d_head, d_model = w.shape[0] // n_heads, w.shape[1]
        heads = w.view(n_heads, d_head, d_model)
        turned = heads[:, :rot].reshape(n_heads, rot // 2, 2, d_model).transpose(1, 2)
        return torch.cat([turned.reshape(n_heads, rot, d_model), heads[:, rot:]], dim=1).reshape(-1, d_model)
    """, "port"),
    "05_gap_remainder_loops": ("angle_gap", """
        new = freqs if new_freqs is None else new_freqs
        out = []
        for f, g in zip(torch.as_tensor(freqs).tolist(), torch.as_tensor(new).tolist(), strict=True):
            out.append(max(min(abs(math.remainder(r * g - s * f, 2 * math.pi)) for s in range(trained))
                           for r in range(longer)))
        return torch.tensor(out, dtype=torch.float64)
    """, "diagnose"),
    "05_base_bisection": ("smallest_base", """
        def fine(b):
            for i in range(d_head // 2):
                old = (trained - 1) * base ** (-2 * i / d_head)
                if old < 2 * math.pi and (longer - 1) * b ** (-2 * i / d_head) > old:
                    return False
            return True

        if trained - 1 < 2 * math.pi:
            raise ValueError("pair 0 turns at 1 radian per position whatever the base")
        if fine(base):
            return float(base)
        lo = hi = math.log(base)
        while not fine(math.exp(hi)):
            hi += 1.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if fine(math.exp(mid)) else (mid, hi)
        return math.exp(hi)
    """, "base"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_an_accepted_variant_scores_full_marks(tmp_path, name):
    from test_exercises import assert_accepted_variant_full_marks

    function, body, task = ACCEPTED[name]
    assert_accepted_variant_full_marks(SOLUTION, function, body, task, tmp_path)


if __name__ == "__main__":
    write_fixtures()
    print(f"wrote {len(WRONG_ANSWERS)} fixtures to {FIXTURES}")
