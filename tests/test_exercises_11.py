"""Chapter 11's exercises: every plausible wrong answer costs its own task points, and only those.

Each fixture ``tests/grading_fixtures/wrong_answers/11_*.ipynb`` is the solutions
notebook with one function's solution region replaced by a wrong answer (the table
:data:`WRONG_ANSWERS`). After the solutions change, rewrite them with
``python tests/test_exercises_11.py``; a fast test says when they are out of date.
The solution's full marks and the untouched exercise's zero are asserted for every
chapter by ``tests/test_grading.py``; every test reads the chapter's one grading
batch (``tests/chapter_grades.py``).
"""

from pathlib import Path

import pytest
from chapter_grades import grades_of, group
from test_exercises import (  # the one fixture builder and its checks, for every chapter
    assert_table_fixtures_current,
    write_table_fixtures,
)

from lmcourse.course.exercises import SOLUTIONS_DIR

SOLUTION = SOLUTIONS_DIR / "11_modern_gpt.ipynb"
FIXTURES = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

# fixture name: (task, function whose solution region is replaced, wrong body,
# a fragment of the message of the check that must catch it)
WRONG_ANSWERS = {
    "11_heads_no_repeats": ("heads", "head_kinds", """
        x = torch.randint(0, vocab, (4, 120), generator=generator)  # no copy
        maps = attention_maps(x)
        t = torch.arange(60, 120)
        kinds = {}
        for layer in range(n_layers):
            for head in range(n_heads):
                wh = maps[layer][:, head]
                prev = wh[:, t, t - 1].mean().item()
                after = wh[:, t, t - 59].mean().item()
                kinds[layer, head] = ("induction" if after > 0.5 else
                                      "previous" if prev > 0.5 else "other")
        return kinds
    """, "the probe needs a copy of every token earlier"),
    "11_heads_same_token_not_after": ("heads", "head_kinds", """
        half = min(vocab, 60)
        rows = [torch.randperm(vocab, generator=generator)[:half]
                for _ in range(4)]
        x = torch.stack([torch.cat([r, r]) for r in rows])
        maps = attention_maps(x)
        q = torch.arange(half, 2 * half)
        kinds = {}
        for layer in range(n_layers):
            for head in range(n_heads):
                wh = maps[layer][:, head]
                prev = wh[:, q, q - 1].mean().item()
                same = wh[:, q, q - half].mean().item()  # the earlier A itself
                kinds[layer, head] = ("induction" if same > 0.5 else
                                      "previous" if prev > 0.5 else "other")
        return kinds
    """, "looks just after the previous occurrence"),
    "11_heads_calls_package": ("heads", "head_kinds", """
        from lmcourse.copying import repeated_random
        half = min(vocab, 60)
        x = torch.stack([repeated_random(list(range(vocab)), half, generator)
                         for _ in range(4)])
        maps = attention_maps(x)
        q = torch.arange(half, 2 * half)
        kinds = {}
        for layer in range(n_layers):
            for head in range(n_heads):
                wh = maps[layer][:, head]
                prev = wh[:, q, q - 1].mean().item()
                after = wh[:, q, q - half + 1].mean().item()
                kinds[layer, head] = ("induction" if after > 0.5 else
                                      "previous" if prev > 0.5 else "other")
        return kinds
    """, "which this task does not allow"),
    "11_rms_norm_mean_subtracted": ("rms_norm", "rms_norm", """
        centred = x - x.mean(dim=-1, keepdim=True)  # LayerNorm's centring
        var = centred.pow(2).mean(dim=-1, keepdim=True)
        return centred * torch.rsqrt(var + eps) * weight
    """, "does not subtract the mean"),
    "11_rms_norm_no_eps": ("rms_norm", "rms_norm", """
        return x / x.pow(2).mean(dim=-1, keepdim=True).sqrt() * weight
    """, "NaN: add eps"),
    "11_rms_norm_sum": ("rms_norm", "rms_norm", """
        return x / torch.sqrt(x.pow(2).sum(dim=-1, keepdim=True) + eps) * weight
    """, "root mean square 1"),
    "11_rms_norm_wrong_axis": ("rms_norm", "rms_norm", """
        mean_square = x.pow(2).mean(dim=0, keepdim=True)
        return x * torch.rsqrt(mean_square + eps) * weight
    """, "root mean square 1"),
    "11_swiglu_gelu": ("swiglu", "swiglu", """
        return (F.gelu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T
    """, "SiLU, not GELU"),
    "11_swiglu_gate_up_swapped": ("swiglu", "swiglu", """
        return (F.silu(x @ w_up.T) * (x @ w_gate.T)) @ w_down.T
    """, "not symmetric"),  # passes the visible checks: only the hidden one catches it
    "11_swiglu_no_transpose": ("swiglu", "swiglu", """
        return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down
    """, "RuntimeError"),
    "11_swiglu_hidden_floor": ("swiglu", "swiglu_hidden", """
        return 8 * d_model // 3
    """, "round to the nearest integer"),
    "11_muon_gram_wrong_order": ("muon", "ns_step", """
        A = X.T @ X  # the Gram matrix on the wrong side
        return a * X + (b * A + c * A @ A) @ X
    """, "RuntimeError"),
    "11_muon_no_normalisation": ("muon", "orthogonalise", """
        X = G
        for _ in range(steps):
            X = ns_step(X, *MUON_ABC)
        return X
    """, "Frobenius norm"),
    "11_copying_first_char_included": ("copying", "later_vs_first", """
        seen = set()
        parts = {"first": [], "later": []}
        for match in re.finditer(WORD, text):
            word = match.group().lower()
            if word in known:
                continue
            kind = "later" if word in seen else "first"
            seen.add(word)
            parts[kind].append(nll[match.start() - 1:match.end() - 1])
        return tuple(torch.cat(parts[kind]).mean().item()
                     for kind in ("first", "later"))
    """, "leave out each word's first character"),
    "11_copying_case_sensitive": ("copying", "later_vs_first", """
        seen = set()
        parts = {"first": [], "later": []}
        for match in re.finditer(WORD, text):
            word = match.group()
            if word.lower() in known:
                continue
            kind = "later" if word in seen else "first"
            seen.add(word)
            parts[kind].append(nll[match.start():match.end() - 1])
        return tuple(torch.cat(parts[kind]).mean().item()
                     for kind in ("first", "later"))
    """, "compare words lower-cased"),
    "11_copying_mean_of_word_means": ("copying", "later_vs_first", """
        seen = set()
        parts = {"first": [], "later": []}
        for match in re.finditer(WORD, text):
            word = match.group().lower()
            if word in known:
                continue
            kind = "later" if word in seen else "first"
            seen.add(word)
            if match.end() - match.start() > 1:
                chars = nll[match.start():match.end() - 1]
                parts[kind].append(chars.mean().item())
        return tuple(sum(parts[kind]) / len(parts[kind])
                     for kind in ("first", "later"))
    """, "average over characters"),
    "11_cache_sees_target": ("cache", "cache_mixture", """
        ids = list(ids)
        out = base.clone().double()
        for t in range(1, len(ids)):
            if t < k:
                continue
            counts = torch.zeros(base.shape[1], dtype=torch.float64)
            for e in range(max(k, t - window + k), t + 1):  # e = t: the answer
                if ids[e - k:e] == ids[t - k:t]:
                    counts[ids[e]] += 1
            if counts.sum() > 0:
                out[t - 1] = ((1 - weight) * base[t - 1]
                              + weight * counts / counts.sum())
        return out
    """, "nothing matches for positions 1 and 2"),
    "11_cache_no_window": ("cache", "cache_mixture", """
        ids = list(ids)
        out = base.clone().double()
        for t in range(1, len(ids)):
            if t < k:
                continue
            counts = torch.zeros(base.shape[1], dtype=torch.float64)
            for e in range(k, t):  # the whole past, not the last window
                if ids[e - k:e] == ids[t - k:t]:
                    counts[ids[e]] += 1
            if counts.sum() > 0:
                out[t - 1] = ((1 - weight) * base[t - 1]
                              + weight * counts / counts.sum())
        return out
    """, "random text"),  # passes the visible checks: only the hidden ones catch it
    "11_cache_unnormalised": ("cache", "cache_mixture", """
        ids = list(ids)
        out = (1 - weight) * base.clone().double()  # base's share everywhere
        for t in range(1, len(ids)):
            if t < k:
                continue
            counts = torch.zeros(base.shape[1], dtype=torch.float64)
            for e in range(max(k, t - window + k), t):
                if ids[e - k:e] == ids[t - k:t]:
                    counts[ids[e]] += 1
            if counts.sum() > 0:
                out[t - 1] += weight * counts / counts.sum()
        return out
    """, "nothing matches for positions 1 and 2"),
}


def write_fixtures() -> None:
    write_table_fixtures(SOLUTION, WRONG_ANSWERS, FIXTURES)


def test_fixtures_are_the_solutions_with_one_wrong_answer():
    assert_table_fixtures_current(SOLUTION, WRONG_ANSWERS, FIXTURES, "tests/test_exercises_11.py")


@pytest.mark.slow
@group("11")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"rms_norm", "swiglu", "muon", "copying", "cache", "heads"}
    assert sum(r.max_points for r in rows.values()) == 22
    assert all(r.points == r.max_points and r.status == "passed" for r in rows.values()), rows


@pytest.mark.slow
@group("11")
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    task, _, _, message = WRONG_ANSWERS[name]
    rows = grades_of(FIXTURES / f"{name}.ipynb")
    assert set(rows) == set(grades_of(SOLUTION))
    wrong = rows[task]
    assert wrong.points < wrong.max_points, wrong
    assert wrong.status in ("failed", "error") and message in wrong.message, wrong
    others = {t: r for t, r in rows.items() if t != task}
    assert all(r.points == r.max_points for r in others.values()), others


if __name__ == "__main__":
    write_fixtures()
    print(f"wrote {len(WRONG_ANSWERS)} fixtures to {FIXTURES}")
