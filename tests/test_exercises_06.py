"""Chapter 6's exercises: every plausible wrong answer costs its own task points, and only those.

Each fixture ``tests/grading_fixtures/wrong_answers/06_*.ipynb`` is the solutions
notebook with one function's solution region replaced by a wrong answer (the table
:data:`WRONG_ANSWERS`); a ``*_calls_package`` one answers by calling what its task
forbids (or importing what it does not allow) and must score 0 there. After the
solutions change, rewrite them with ``python tests/test_exercises_06.py``; a fast test
says when they are out of date. The solution's full marks and the untouched exercise's
zero are asserted for every chapter by ``tests/test_grading.py``; every test reads the
chapter's one grading batch (``tests/chapter_grades.py``).
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

SOLUTION = SOLUTIONS_DIR / "06_weight_tying.ipynb"
FIXTURES = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

# count_params's answers below share all but the lines that differ
_COUNT_HEAD = """
        c = config
        V, D, L, T, H = (c.vocab_size, c.d_model, c.n_layers, c.context_length,
                         c.n_heads)
        b = 1 if c.bias else 0
        d_head = D // H
        kv = c.n_kv_heads or H
"""
_COUNT_MLP = """
        if c.mlp == "swiglu":
            hidden = round(8 * D / 3)
            mlp = 2 * hidden * D + b * 2 * hidden + hidden * D + b * D
        else:
            mlp = 4 * D * D + b * 4 * D + 4 * D * D + b * D
"""
_COUNT_TAIL = """
        block = 2 * norm + attention + mlp
        positions = T * D if c.positional == "learned" else 0
        final = norm if c.norm_position == "pre" else 0
        head = 0 if c.tie_weights else V * D
        return V * D + positions + L * block + final + head
"""
_NORM = """
        norm = D if c.norm == "rms" else D + b * D
"""
_ATTENTION = """
        qkv = D + 2 * kv * d_head
        attention = qkv * D + b * qkv + D * D + b * D
        attention += 2 * d_head if c.qk_norm else 0
"""

# tied_grad's answers share the forward pass
_GRAD_HEAD = """
        V = E.shape[0]
        keep = y != -100
        x, y = x[keep], y[keep]
        h = scale * E[x]
        t = torch.tanh(h @ E.T / cap)
        p = torch.softmax(cap * t, dim=-1)
"""

# fixture name: (task, function whose solution region is replaced, wrong body,
# a fragment of the message of the check that must catch it)
WRONG_ANSWERS = {
    "06_factorise_unweighted": ("factorise", "factorise_tied", """
        # the plain squared error: the larger matrix's role takes the fit
        V, D = A.shape
        k = budget // (V + 2 * D)
        if k < 1:
            raise ValueError("budget too small")
        U, S, Vh = torch.linalg.svd(torch.cat([A, W], dim=1), full_matrices=False)
        k = min(k, len(S))
        return U[:, :k] * S[:k], Vh[:k, :D], Vh[:k, D:]
    """, "is reachable within the budget"),
    "06_factorise_input_first": ("factorise", "factorise_tied", """
        # E from the input embedding alone, then the best projections for it
        V, D = A.shape
        k = budget // (V + 2 * D)
        if k < 1:
            raise ValueError("budget too small")
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
        k = min(k, len(S))
        E = U[:, :k] * S[:k]
        return E, Vh[:k], torch.linalg.lstsq(E, W).solution
    """, "is reachable within the budget"),
    "06_factorise_sum_of_roles": ("factorise", "factorise_tied", """
        # one matrix for both roles: the two scaled matrices added, then each role's best projection
        V, D = A.shape
        k = budget // (V + 2 * D)
        if k < 1:
            raise ValueError("budget too small")
        U, S, Vh = torch.linalg.svd(A / A.norm() + W / W.norm(), full_matrices=False)
        E = U[:, :min(k, len(S))]
        return E, torch.linalg.lstsq(E, A).solution, torch.linalg.lstsq(E, W).solution
    """, "is reachable within the budget"),
    "06_factorise_scales_not_restored": ("factorise", "factorise_tied", """
        # the right subspace, but the projections fit A / |A| and W / |W|
        V, D = A.shape
        k = budget // (V + 2 * D)
        if k < 1:
            raise ValueError("budget too small")
        U, S, Vh = torch.linalg.svd(torch.cat([A / A.norm(), W / W.norm()], dim=1), full_matrices=False)
        k = min(k, len(S))
        return U[:, :k] * S[:k], Vh[:k, :D], Vh[:k, D:]
    """, "is reachable within the budget"),
    "06_factorise_one_projection_counted": ("factorise", "factorise_tied", """
        # the budget spent as if the model had one projection
        V, D = A.shape
        k = budget // (V + D)
        if k < 1:
            raise ValueError("budget too small")
        a, w = A.norm(), W.norm()
        U, S, Vh = torch.linalg.svd(torch.cat([A / a, W / w], dim=1), full_matrices=False)
        k = min(k, len(S))
        return U[:, :k] * S[:k], Vh[:k, :D] * a, Vh[:k, D:] * w
    """, "over the budget"),
    "06_factorise_budget_strict": ("factorise", "factorise_tied", """
        # a budget read as a strict bound: one k fewer when it is met exactly
        V, D = A.shape
        k = (budget - 1) // (V + 2 * D)
        if k < 1:
            raise ValueError("budget too small")
        a, w = A.norm(), W.norm()
        U, S, Vh = torch.linalg.svd(torch.cat([A / a, W / w], dim=1), full_matrices=False)
        k = min(k, len(S))
        return U[:, :k] * S[:k], Vh[:k, :D] * a, Vh[:k, D:] * w
    """, "use all that it affords"),
    "06_factorise_no_error_for_a_tiny_budget": ("factorise", "factorise_tied", """
        # k = 0 returned as empty matrices, rather than refused
        V, D = A.shape
        k = budget // (V + 2 * D)
        a, w = A.norm(), W.norm()
        U, S, Vh = torch.linalg.svd(torch.cat([A / a, W / w], dim=1), full_matrices=False)
        k = min(k, len(S))
        return U[:, :k] * S[:k], Vh[:k, :D] * a, Vh[:k, D:] * w
    """, "raise ValueError"),
    "06_factorise_calls_package": ("factorise", "factorise_tied", """
        V, D = A.shape
        k = budget // (V + 2 * D)
        if k < 1:
            raise ValueError("budget too small")
        a, w = A.norm(), W.norm()
        U, S, Vv = torch.svd_lowrank(torch.cat([A / a, W / w], dim=1), q=k, niter=20)
        return U * S, Vv.T[:, :D] * a, Vv.T[:, D:] * w
    """, "must not call"),
    "06_param_count_ignores_kv_heads": ("param_count", "count_params", _COUNT_HEAD + _NORM + """
        qkv = 3 * D  # one key and one value head per query head, always
        attention = qkv * D + b * qkv + D * D + b * D
        attention += 2 * d_head if c.qk_norm else 0
    """ + _COUNT_MLP + _COUNT_TAIL, "the modern shape has"),
    "06_param_count_rms_with_bias": ("param_count", "count_params", _COUNT_HEAD + """
        norm = D + b * D  # a bias in RMSNorm too
    """ + _ATTENTION + _COUNT_MLP + _COUNT_TAIL, "norm='rms'"),
    "06_param_count_swiglu_two_matrices": ("param_count", "count_params", _COUNT_HEAD + _NORM + _ATTENTION + """
        hidden = round(8 * D / 3) if c.mlp == "swiglu" else 4 * D
        mlp = 2 * hidden * D + b * hidden + b * D  # fc and proj, as in the GELU MLP
    """ + _COUNT_TAIL, "the modern shape has"),
    "06_param_count_qk_norm_full_width": ("param_count", "count_params", _COUNT_HEAD + _NORM + """
        qkv = D + 2 * kv * d_head
        attention = qkv * D + b * qkv + D * D + b * D
        attention += 2 * D if c.qk_norm else 0  # a gain over every head's features
    """ + _COUNT_MLP + _COUNT_TAIL, "the modern shape has"),
    "06_param_count_post_norm_final": ("param_count", "count_params", _COUNT_HEAD + _NORM + _ATTENTION
                                       + _COUNT_MLP + """
        block = 2 * norm + attention + mlp
        positions = T * D if c.positional == "learned" else 0
        head = 0 if c.tie_weights else V * D
        return V * D + positions + L * block + norm + head  # a final norm whatever the position
    """, "norm_position='post'"),
    "06_param_count_builds_layers": ("param_count", "count_params", """
        # every layer built on the meta device (no storage) and its parameters counted
        c = config
        D, H = c.d_model, c.n_heads
        with torch.device("meta"):
            def norm():
                n = torch.nn.RMSNorm(D) if c.norm == "rms" else torch.nn.LayerNorm(D, bias=c.bias)
                return sum(p.numel() for p in n.parameters())

            hidden = round(8 * D / 3) if c.mlp == "swiglu" else 4 * D
            layers = [torch.nn.Linear(D, D + 2 * c.kv_heads * (D // H), bias=c.bias),
                      torch.nn.Linear(D, D, bias=c.bias),
                      torch.nn.Linear(D, 2 * hidden if c.mlp == "swiglu" else hidden, bias=c.bias),
                      torch.nn.Linear(hidden, D, bias=c.bias)]
            block = 2 * norm() + sum(p.numel() for m in layers for p in m.parameters())
            block += 2 * (D // H) if c.qk_norm else 0
            positions = c.context_length * D if c.positional == "learned" else 0
            final = norm() if c.norm_position == "pre" else 0
        head = 0 if c.tie_weights else c.vocab_size * D
        return c.vocab_size * D + positions + c.n_layers * block + final + head
    """, "must not build a model or a layer"),
    "06_param_count_calls_package": ("param_count", "count_params", """
        from lmcourse.transformer import GPT

        return GPT(config).num_params()
    """, "must not call"),
    "06_tied_grad_output_only": ("tied_grad", "tied_grad", _GRAD_HEAD + """
        da = (p - F.one_hot(y, V).to(E.dtype)) / len(y) * (1 - t * t)
        return da.T @ h  # the output layer's part alone
    """, "the rows of the input tokens differ"),
    "06_tied_grad_cap_ignored": ("tied_grad", "tied_grad", _GRAD_HEAD + """
        da = (p - F.one_hot(y, V).to(E.dtype)) / len(y)  # as if z = h E^T
        return da.T @ h + torch.zeros_like(E).index_add_(0, x, scale * (da @ E))
    """, "never an input"),
    "06_tied_grad_lookup_unscaled": ("tied_grad", "tied_grad", _GRAD_HEAD + """
        da = (p - F.one_hot(y, V).to(E.dtype)) / len(y) * (1 - t * t)
        return da.T @ h + torch.zeros_like(E).index_add_(0, x, da @ E)  # s forgotten on the input side
    """, "the rows of the input tokens differ"),
    "06_tied_grad_assignment": ("tied_grad", "tied_grad", _GRAD_HEAD + """
        da = (p - F.one_hot(y, V).to(E.dtype)) / len(y) * (1 - t * t)
        lookup = torch.zeros_like(E)
        lookup[x] = scale * (da @ E)  # a repeated token keeps one of its rows
        return da.T @ h + lookup
    """, "an input several times"),
    "06_tied_grad_mean_over_padding": ("tied_grad", "tied_grad", """
        V, N = E.shape[0], len(y)
        keep = y != -100
        x, y = x[keep], y[keep]
        h = scale * E[x]
        t = torch.tanh(h @ E.T / cap)
        p = torch.softmax(cap * t, dim=-1)
        da = (p - F.one_hot(y, V).to(E.dtype)) / N * (1 - t * t)  # N counts the padding
        return da.T @ h + torch.zeros_like(E).index_add_(0, x, scale * (da @ E))
    """, "padded targets (-100)"),
    "06_tied_grad_float32": ("tied_grad", "tied_grad", """
        V = E.shape[0]
        keep = y != -100
        x, y, E32 = x[keep], y[keep], E.float()  # computed in float32
        h = scale * E32[x]
        t = torch.tanh(h @ E32.T / cap)
        p = torch.softmax(cap * t, dim=-1)
        da = (p - F.one_hot(y, V).float()) / len(y) * (1 - t * t)
        return (da.T @ h + torch.zeros_like(E32).index_add_(0, x, scale * (da @ E32))).to(E.dtype)
    """, "from autograd (by up to"),
    "06_tied_grad_calls_package": ("tied_grad", "tied_grad", """
        E_ = E.clone().requires_grad_(True)
        z = cap * torch.tanh(scale * E_[x] @ E_.T / cap)
        F.cross_entropy(z, y).backward()
        return E_.grad
    """, "must not call"),
}


def write_fixtures() -> None:
    write_table_fixtures(SOLUTION, WRONG_ANSWERS, FIXTURES)


def test_fixtures_are_the_solutions_with_one_wrong_answer():
    assert_table_fixtures_current(SOLUTION, WRONG_ANSWERS, FIXTURES, "tests/test_exercises_06.py")


def test_every_task_has_a_wrong_answer_and_every_forbid_a_calls_package_fixture():
    assert_table_covers_every_task(SOLUTION, WRONG_ANSWERS)
    functions = {function for _, function, _, _ in WRONG_ANSWERS.values()}
    assert functions == {"factorise_tied", "count_params", "tied_grad"}
    assert {task for name, (task, *_) in WRONG_ANSWERS.items() if name.endswith("_calls_package")} == {
        "factorise", "param_count", "tied_grad"}


def test_every_solution_imports_math_and_torch_only_and_reads_clean():
    """Each answer may import math and torch only, so neither lmcourse (a model to count, the
    package's cost formulas) nor numpy, scipy or scikit-learn can be reached."""
    from lmcourse.course.exercises import cell_info
    from lmcourse.course.reading import Rules, read_cell

    solution = nbformat.read(SOLUTION, as_version=4)
    cells = [c for c in solution.cells if cell_info(c).get("role") == "solution"]
    assert len(cells) == 3
    for cell in cells:
        info = cell_info(cell)
        assert sorted(info["allow"]) == ["math", "torch"], info
        rules = Rules(allowed=frozenset(info["allow"]), forbid=tuple(info.get("forbid", ())))
        assert read_cell(cell.source, rules) == [], info["task"]
        for shortcut in ("from lmcourse.transformer import GPT", "from lmcourse.generation import flops_per_new_token",
                         "import numpy as np", "from scipy.linalg import svd",
                         "from sklearn.decomposition import TruncatedSVD"):
            assert read_cell(shortcut, rules), (info["task"], shortcut)


def test_the_gradient_task_rules_out_every_autograd_entry_point():
    """Reverse mode, forward mode and the functional transforms, each named in tied_grad's forbid list."""
    from lmcourse.course.exercises import cell_info

    solution = nbformat.read(SOLUTION, as_version=4)
    forbid = next(cell_info(c)["forbid"] for c in solution.cells if cell_info(c).get("task") == "tied_grad"
                  and cell_info(c).get("role") == "solution")
    for name in ("torch.Tensor.backward", "torch.autograd.grad", "torch.autograd.backward",
                 "torch.autograd.forward_ad.make_dual", "torch.autograd.functional.jacobian",
                 "torch.func.grad", "torch.func.vjp", "torch.func.jacfwd", "torch.func.jacrev"):
        assert name in forbid, name


@pytest.mark.slow
@group("06")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"factorise", "param_count", "tied_grad"}
    assert sum(r.max_points for r in rows.values()) == 11
    assert all(r.points == r.max_points and r.status == "passed" for r in rows.values()), rows


@pytest.mark.slow
@group("06")
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    assert_table_answer_costs_its_task(SOLUTION, WRONG_ANSWERS, FIXTURES, name)


# right answers by other routes, which must keep full marks: name -> (function, body, task)
ACCEPTED = {
    "06_factorise_gram_eigh": ("factorise_tied", """
        # the leading eigenvectors of the token-side Gram matrix of the scaled pair, then projections
        V, D = A.shape
        k = budget // (V + 2 * D)
        if k < 1:
            raise ValueError("no room for k = 1")
        a, w = A.norm(), W.norm()
        M = torch.cat([A / a, W / w], dim=1)
        vals, vecs = torch.linalg.eigh(M @ M.T)
        k = min(k, V, 2 * D)
        E = vecs[:, -k:]  # orthonormal columns: the projections are E^T A and E^T W
        return E, E.T @ A, E.T @ W
    """, "factorise"),
    "06_param_count_by_module": ("count_params", """
        c = config
        D, Dh = c.d_model, c.d_model // c.n_heads

        def linear(i, o):
            return i * o + (o if c.bias else 0)

        def norm(n):
            return n if c.norm == "rms" else n * (2 if c.bias else 1)

        kv = c.kv_heads * Dh
        hidden = round(8 * D / 3) if c.mlp == "swiglu" else 4 * D
        mlp = linear(D, 2 * hidden if c.mlp == "swiglu" else hidden) + linear(hidden, D)
        attn = linear(D, D + 2 * kv) + linear(D, D) + (2 * Dh if c.qk_norm else 0)
        parts = {"tokens": c.vocab_size * D,
                 "positions": c.context_length * D if c.positional == "learned" else 0,
                 "blocks": c.n_layers * (2 * norm(D) + attn + mlp),
                 "final norm": norm(D) if c.norm_position == "pre" else 0,
                 "head": 0 if c.tie_weights else c.vocab_size * D}
        return sum(parts.values())
    """, "param_count"),
    "06_tied_grad_by_positions": ("tied_grad", """
        # position by position, with the softmax written out
        G = torch.zeros_like(E)
        n = int((y != -100).sum())
        for t in range(len(x)):
            if y[t] == -100:
                continue
            h = scale * E[x[t]]
            u = torch.tanh(E @ h / cap)  # (V,)
            z = cap * u
            p = torch.exp(z - z.max())
            p = p / p.sum()
            g = p.clone()
            g[y[t]] -= 1
            g = g * (1 - u * u) / n  # dL/d(h . E_v)
            G += g[:, None] * h[None, :]  # output rows
            G[x[t]] += scale * (g @ E)  # the input row
        return G
    """, "tied_grad"),
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
