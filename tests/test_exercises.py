import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from chapter_grades import assert_other_tasks_full, grades_of, group, solution_of
from nbformat.v4 import new_code_cell, new_notebook

from lmcourse.course.exercises import (
    BEGIN_SOLUTION,
    END_SOLUTION,
    EXERCISES_DIR,
    SOLUTIONS_DIR,
    checks_of,
    generate,
    make_exercise,
)


def _nb(*cells):
    return new_notebook(cells=list(cells))


def test_exercises_are_in_sync_with_solutions():
    result = subprocess.run([sys.executable, "-m", "lmcourse", "exercises", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_solution_has_an_exercise_and_checks():
    solutions = sorted(p.name for p in SOLUTIONS_DIR.glob("*.ipynb"))
    assert solutions, "no solutions notebooks"
    assert solutions == sorted(p.name for p in EXERCISES_DIR.glob("*.ipynb"))
    for name in solutions:
        nb = nbformat.read(SOLUTIONS_DIR / name, as_version=4)
        assert nb.metadata["lmcourse"]["chapter"] == name[:2]
        assert len({c.task for c in checks_of(nb)}) >= 3, f"{name}: at least three tasks"


def test_solution_regions_become_stubs_at_their_indent_and_hidden_tests_vanish():
    sol = new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n")
    sol.metadata["lmcourse"] = {"role": "solution", "task": "double"}
    chk = new_code_cell("assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(5) == 10\n### END HIDDEN TESTS")
    chk.metadata["lmcourse"] = {"role": "check", "task": "double", "check": "double", "points": 1}
    chk.outputs = [nbformat.v4.new_output("stream", text="x")]
    chk.execution_count = 3
    ex = make_exercise(_nb(sol, chk))
    assert ex.cells[0].source == 'def f(x):\n    raise NotImplementedError("double: replace this line with your code")'
    assert ex.cells[1].source == "assert f(1) == 2"
    assert ex.cells[1].outputs == [] and ex.cells[1].execution_count is None
    assert "f(5)" in chk.source, "the source notebook is left untouched"


def test_reference_answers_stay_in_the_solutions():
    question = nbformat.v4.new_markdown_cell("Why does the loss rise?")
    answer = nbformat.v4.new_markdown_cell("**Answer.** Because ...")
    answer.metadata["lmcourse"] = {"role": "answer"}
    nb = _nb(question, answer, nbformat.v4.new_markdown_cell("## Task 2"))
    ex = make_exercise(nb)
    assert [c.source for c in ex.cells] == ["Why does the loss rise?", "## Task 2"]
    assert len(nb.cells) == 3, "the source notebook is left untouched"


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
        ("x = 1\n### END SOLUTION\n", "without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n", "nested"),
    ],
)
def test_malformed_markers_are_reported(source, message):
    cell = new_code_cell(source)
    cell.metadata["lmcourse"] = {"role": "solution", "task": "t"}
    with pytest.raises(ValueError, match=message):
        make_exercise(_nb(cell))


def test_solution_marker_outside_a_solution_cell_is_an_error():
    with pytest.raises(ValueError, match="not marked as a solution"):
        make_exercise(_nb(new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")))


def test_check_mode_reports_stale_missing_and_extra(tmp_path):
    sols, exs = tmp_path / "solutions", tmp_path / "exercises"
    sols.mkdir()
    cell = new_code_cell("x = 1")
    nbformat.write(_nb(cell), sols / "01_a.ipynb")
    assert generate(sols, exs, check=True) == [f"{exs / '01_a.ipynb'} is missing"]
    assert generate(sols, exs) == []
    assert generate(sols, exs, check=True) == []
    (exs / "01_a.ipynb").write_text((exs / "01_a.ipynb").read_text().replace("x = 1", "x = 2"))
    (exs / "02_b.ipynb").write_text("{}")
    problems = generate(sols, exs, check=True)
    assert len(problems) == 2 and "differs" in problems[0] and "no source" in problems[1]


# ---------------------------------------------------------------------------
# Chapters 1 to 10: plausible wrong answers that must cost their task points.
#
# Each fixture tests/grading_fixtures/wrong_answers/NN_*.ipynb is the chapter's
# solutions notebook with one function's solution region replaced (the table
# WRONG_ANSWERS, per chapter). After the solutions change, rewrite them with
# ``python tests/test_exercises.py``; a fast test says when they are out of date.
# A fixture named *_calls_package calls the reference the task forbids: it may
# pass every check and must score 0 on that task through the grader's
# enforcement of the solution cell's "forbid" list (lmcourse.course.forbid).

FIXTURES = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

# fixture name: (task, function whose solution region is replaced, wrong body,
# a fragment of the grader's message for that task)
WRONG_ANSWERS: dict[str, tuple[str, str, str, str]] = {}


def _wrong(name: str, task: str, function: str, body: str, message: str) -> None:
    assert name not in WRONG_ANSWERS, name
    WRONG_ANSWERS[name] = (task, function, body, message)


# --- the table, chapter by chapter -------------------------------------------

# chapter 2
_wrong("02_witten_bell_share_of_events", "witten_bell", "witten_bell", """
    counts = counts.double()
    c_a = counts.sum(dim=1, keepdim=True)
    new = (counts > 0).sum(dim=1, keepdim=True).double()
    low = new / c_a.clamp(min=1)  # first times as a share of c(a) alone
    mixed = (1 - low) * counts / c_a.clamp(min=1) + low * p_low.double()
    return torch.where(c_a > 0, mixed, p_low.double().expand_as(counts))
""", "differs from Witten-Bell")
_wrong("02_witten_bell_unseen_context_uniform", "witten_bell", "witten_bell", """
    counts = counts.double()
    Vn = counts.shape[0]
    c_a = counts.sum(dim=1, keepdim=True)
    new = (counts > 0).sum(dim=1, keepdim=True).double()
    mixed = (counts + new * p_low.double()) / (c_a + new).clamp(min=1)
    return torch.where(c_a > 0, mixed, torch.full_like(counts, 1 / Vn))
""", "a context never seen: its row is p_low")
_wrong("02_continuation_occurrences", "kneser_ney", "continuation_probs", """
    counts = counts.double()
    return counts.sum(dim=0) / counts.sum()  # frequencies, not contexts
""", "count contexts, not occurrences")
_wrong("02_kneser_ney_frequency_lower_order", "kneser_ney", "kneser_ney_bigram", """
    def discount(c):
        n1, n2 = float((c == 1).sum()), float((c == 2).sum())
        return n1 / (n1 + 2 * n2)

    counts = counts.double()
    Vn = counts.shape[0]
    seen = (counts > 0).double()
    p1 = counts.sum(dim=0) / counts.sum()  # plain unigram frequencies
    d2 = discount(counts)
    c_a = counts.sum(dim=1, keepdim=True)
    freed2 = d2 * seen.sum(dim=1, keepdim=True)
    p2 = ((counts - d2).clamp(min=0) + freed2 * p1) / c_a.clamp(min=1)
    return torch.where(c_a > 0, p2, p1.expand(Vn, Vn))
""", "every bigram some probability")
_wrong("02_kneser_ney_unigram_not_smoothed", "kneser_ney", "kneser_ney_bigram", """
    def discount(c):
        n1, n2 = float((c == 1).sum()), float((c == 2).sum())
        return n1 / (n1 + 2 * n2)

    counts = counts.double()
    Vn = counts.shape[0]
    seen = (counts > 0).double()
    cont = seen.sum(dim=0)
    p1 = (cont + 1e-12) / (cont + 1e-12).sum()  # no discount, no uniform
    d2 = discount(counts)
    c_a = counts.sum(dim=1, keepdim=True)
    freed2 = d2 * seen.sum(dim=1, keepdim=True)
    p2 = ((counts - d2).clamp(min=0) + freed2 * p1) / c_a.clamp(min=1)
    return torch.where(c_a > 0, p2, p1.expand(Vn, Vn))
""", "never seen gets the unigram order")
_wrong("02_kneser_ney_calls_package", "kneser_ney", "kneser_ney_bigram", """
    from lmcourse.ngram import NGramLM

    lm = NGramLM(2, "kneser_ney", vocab_size=V).fit(ids)
    return torch.stack([lm.distribution([a]) for a in range(V)])
""", "must not call")
_wrong("02_em_lambda_ratio_of_means", "em_lambda", "em_lambda", """
    return float(p.mean() / (p.mean() + q.mean()))
""", "one EM step from 0.5")
_wrong("02_em_lambda_low_order_share", "em_lambda", "em_lambda", """
    lam = 0.5
    for _ in range(steps):
        share = (1 - lam) * q / (lam * p + (1 - lam) * q)
        lam = float(share.mean())
    return lam
""", "one EM step")

# chapter 3
_wrong("03_gru_reset_before_matmul", "gru", "my_gru_cell", """
    H = h.shape[-1]
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    hr, hz, _ = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + (r * h) @ w_hh[2 * H:].T + b_hh[2 * H:])  # Cho et al.
    return (1 - z) * n + z * h
""", "r multiplies h W_hn^T + b_hn")
_wrong("03_gru_update_swapped", "gru", "my_gru_cell", """
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return z * n + (1 - z) * h
""", "differs from nn.GRUCell")
_wrong("03_gru_calls_package", "gru", "my_gru_cell", """
    return torch.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
""", "must not call")
_wrong("03_tbptt_summed_loss", "tbptt", "tbptt_step", """
    if state is not None:
        state = tuple(s.detach() for s in state)
    logits, state = model(x, state)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
""", "a mean over positions")
_wrong("03_tbptt_sum_backward_mean_reported", "tbptt", "tbptt_step", """
    if state is not None:
        state = tuple(s.detach() for s in state)
    logits, state = model(x, state)
    total = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
    optimizer.zero_grad()
    total.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    loss = total / y.numel()
""", "clip=1000000000.0: losses")
_wrong("03_tbptt_no_clip", "tbptt", "tbptt_step", """
    if state is not None:
        state = tuple(s.detach() for s in state)
    logits, state = model(x, state)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", "clip=0.05: losses")
_wrong("03_bptt_no_tanh_derivative", "bptt_by_hand", "state_grads", """
    h = h0
    for x in xs:
        h = torch.tanh(x @ w_ih.T + h @ w_hh.T)
    g = h.clone()
    grads = [g]
    for _ in range(len(xs)):
        g = g @ w_hh
        grads.append(g)
    return torch.stack(grads[::-1])
""", "the derivative of tanh")
_wrong("03_bptt_transposed", "bptt_by_hand", "state_grads", """
    hs = [h0]
    for x in xs:
        hs.append(torch.tanh(x @ w_ih.T + hs[-1] @ w_hh.T))
    g = hs[-1].clone()
    grads = [g]
    for t in range(len(xs), 0, -1):
        g = (g * (1 - hs[t] ** 2)) @ w_hh.T
        grads.append(g)
    return torch.stack(grads[::-1])
""", "on which side W_hh multiplies")
_wrong("03_bptt_sum_loss", "bptt_by_hand", "state_grads", """
    hs = [h0]
    for x in xs:
        hs.append(torch.tanh(x @ w_ih.T + hs[-1] @ w_hh.T))
    g = torch.ones_like(h0)  # the gradient of sum(h_T), not of |h_T|^2 / 2
    grads = [g]
    for t in range(len(xs), 0, -1):
        g = (g * (1 - hs[t] ** 2)) @ w_hh
        grads.append(g)
    return torch.stack(grads[::-1])
""", "the last row is dL/dh_T")
_wrong("03_bptt_calls_package", "bptt_by_hand", "state_grads", """
    hs = [h0.clone().requires_grad_(True)]
    for x in xs:
        hs.append(torch.tanh(x @ w_ih.T + hs[-1] @ w_hh.T))
    for h in hs:
        h.retain_grad()
    (0.5 * (hs[-1] ** 2).sum()).backward()
    return torch.stack([h.grad for h in hs])
""", "must not call")
_wrong("03_bptt_forward_ad_calls_package", "bptt_by_hand", "state_grads", """
    import torch.autograd.forward_ad as fwAD
    H = h0.shape[0]
    rows = []
    for t in range(len(xs) + 1):
        grad = torch.zeros(H, dtype=h0.dtype)
        for i in range(H):
            with fwAD.dual_level():
                h = h0
                if t == 0:
                    h = fwAD.make_dual(h0, torch.eye(H, dtype=h0.dtype)[i])
                for s, x in enumerate(xs, start=1):
                    h = torch.tanh(x @ w_ih.T + h @ w_hh.T)
                    if s == t:
                        h = fwAD.make_dual(fwAD.unpack_dual(h).primal,
                                           torch.eye(H, dtype=h0.dtype)[i])
                loss = 0.5 * (h ** 2).sum()
                grad[i] = fwAD.unpack_dual(loss).tangent
        rows.append(grad)
    return torch.stack(rows)
""", "must not call")
_wrong("03_gru_torch_gru_calls_package", "gru", "my_gru_cell", """
    out, _ = torch.gru(x[None], h[None], [w_ih, w_hh, b_ih, b_hh], True, 1,
                       0.0, False, False, False)
    return out[0]
""", "must not call")
_wrong("03_context_reads_target", "context", "last_k_nll", """
    if int(targets.min()) < k:
        raise ValueError(f"every target needs {k} tokens before it")
    windows = torch.stack([ids[t - k + 1:t + 1] for t in targets.tolist()])
    with torch.no_grad():
        logits, _ = model(windows)
    logp = torch.log_softmax(logits[:, -1].double(), dim=-1)
    return -logp.gather(1, ids[targets][:, None])[:, 0]
""", "not the target itself")
_wrong("03_context_one_sided", "context", "effective_context", """
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    full = -logp[targets - 1].gather(1, ids[targets][:, None])[:, 0]
    for k in sorted(ks):
        if last_k_nll(model, ids, targets, k).mean() - full.mean() <= tol:
            return k
    return None
""", "above or below it")
_wrong("03_context_largest_k_as_reference", "context", "effective_context", """
    best = last_k_nll(model, ids, targets, max(ks)).mean()
    for k in sorted(ks):
        if abs(last_k_nll(model, ids, targets, k).mean() - best) <= tol:
            return k
    return None
""", "not with the largest k")
_wrong("03_context_first_in_list", "context", "effective_context", """
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    full = -logp[targets - 1].gather(1, ids[targets][:, None])[:, 0]
    for k in ks:
        if abs(last_k_nll(model, ids, targets, k).mean() - full.mean()) <= tol:
            return k
    return None
""", "the smallest k in ks")
_wrong("03_context_calls_package", "context", "last_k_nll", """
    from lmcourse.lstm import window_nll
    return window_nll(model, ids, targets, k).double()
""", "must not call")

# chapter 4
_wrong("04_window_off_by_one", "window_mask", "sliding_window_mask", """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    return (s <= t) & (t - s <= window)
""", "each position sees itself and the one before")
_wrong("04_window_calls_package", "window_mask", "sliding_window_mask", """
    from lmcourse.attention import causal_mask

    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    t = torch.arange(T)
    return causal_mask(T) & (t[:, None] - t[None, :] < window)
""", "must not call")
_wrong("04_mha_scale_by_D", "mha", "causal_mha", """
    B, T, D = x.shape
    Dh = D // n_heads
    q, k, v = (x @ w_qkv.T + b_qkv).split(D, dim=-1)
    q, k, v = (z.view(B, T, n_heads, Dh).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # the model width
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    y = scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v
    return y.transpose(1, 2).reshape(B, T, D) @ w_out.T + b_out
""", "scale by sqrt(D / H)")
_wrong("04_mha_heads_without_transpose", "mha", "causal_mha", """
    B, T, D = x.shape
    Dh = D // n_heads
    q, k, v = (x @ w_qkv.T + b_qkv).split(D, dim=-1)
    q, k, v = (z.reshape(B, n_heads, T, Dh) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(Dh)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    y = scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v
    return y.reshape(B, T, D) @ w_out.T + b_out
""", "")
_wrong("04_mha_softmax_over_queries", "mha", "causal_mha", """
    B, T, D = x.shape
    Dh = D // n_heads
    q, k, v = (x @ w_qkv.T + b_qkv).split(D, dim=-1)
    q, k, v = (z.view(B, T, n_heads, Dh).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(Dh)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    y = scores.masked_fill(future, float("-inf")).softmax(dim=-2) @ v
    return y.transpose(1, 2).reshape(B, T, D) @ w_out.T + b_out
""", "softmax runs over the keys")
_wrong("04_mha_calls_package", "mha", "causal_mha", """
    B, T, D = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(D, dim=-1)
    q, k, v = (z.view(B, T, n_heads, -1).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(B, T, D) @ w_out.T + b_out
""", "must not call")
_wrong("04_leak_counts_own_position", "leak", "first_leak", """
    x = torch.randn(1, T, D, generator=gen, dtype=torch.float64)
    base = attn(x)
    leaks = []
    for s in range(1, T):
        x2 = x.clone()
        x2[0, s] = torch.randn(D, generator=gen, dtype=torch.float64)
        moved = (attn(x2) - base)[0, :s + 1].abs().amax(dim=-1) > 1e-9
        if moved.any():
            leaks.append(int(moved.nonzero()[0]))
    return min(leaks) if leaks else None
""", "a causal function has no leak")
_wrong("04_leak_last_position_only", "leak", "first_leak", """
    x = torch.randn(1, T, D, generator=gen, dtype=torch.float64)
    if T < 2:
        return None
    x2 = x.clone()
    x2[0, -1] = torch.randn(D, generator=gen, dtype=torch.float64)
    moved = (attn(x2) - attn(x))[0, :-1].abs().amax(dim=-1) > 1e-9
    return int(moved.nonzero()[0]) if moved.any() else None
""", "change every later position")

_wrong("04_online_full_matrix", "online", "online_attention", """
    T = q.shape[-2]
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
    return torch.softmax(s, dim=-1) @ v
""", "read the keys a block at")
_wrong("04_online_no_rescale", "online", "online_attention", """
    B, H, T, d = q.shape
    top = torch.full((B, H, T, 1), -math.inf, dtype=q.dtype)
    total = torch.zeros(B, H, T, 1, dtype=q.dtype)
    out = torch.zeros_like(q)
    rows = torch.arange(T)[:, None]
    for start in range(0, T, block):
        kb = k[..., start:start + block, :]
        vb = v[..., start:start + block, :]
        scores = q @ kb.transpose(-2, -1) / math.sqrt(d)
        cols = torch.arange(start, start + kb.shape[-2])[None, :]
        scores = scores.masked_fill(cols > rows, -math.inf)
        new_top = torch.maximum(top, scores.amax(dim=-1, keepdim=True))
        p = torch.exp(scores - new_top)
        total = total * torch.exp(top - new_top) + p.sum(dim=-1, keepdim=True)
        out = out + p @ vb  # the old outputs are not rescaled
        top = new_top
    return out / total
""", "rescaled when a larger score arrives")
_wrong("04_online_no_running_max", "online", "online_attention", """
    B, H, T, d = q.shape
    total = torch.zeros(B, H, T, 1, dtype=q.dtype)
    out = torch.zeros_like(q)
    rows = torch.arange(T)[:, None]
    for start in range(0, T, block):
        kb = k[..., start:start + block, :]
        vb = v[..., start:start + block, :]
        scores = q @ kb.transpose(-2, -1) / math.sqrt(d)
        cols = torch.arange(start, start + kb.shape[-2])[None, :]
        p = torch.exp(scores).masked_fill(cols > rows, 0.0)
        total = total + p.sum(dim=-1, keepdim=True)
        out = out + p @ vb
    return out / total
""", "overflows or drifts")
_wrong("04_online_calls_package", "online", "online_attention", """
    from lmcourse.costs import tiled_attention
    return tiled_attention(q, k, v, block=block)
""", "must not call")

# chapter 5: tests/test_exercises_05.py

# chapter 6: tests/test_exercises_06.py

# chapter 7: tests/test_exercises_07.py

# chapter 8: tests/test_exercises_08.py

# chapter 9
_wrong("09_min_p_on_logits", "min_p", "min_p_rows", """
    top = logits.max(dim=-1, keepdim=True).values
    return logits.masked_fill(logits < min_p[:, None] * top, NEG_INF)
""", "row 0 keeps P >= 0.25")
_wrong("09_min_p_pooled_max", "min_p", "min_p_rows", """
    probs = torch.softmax(logits, dim=-1)
    top = probs.max()  # the batch's maximum, not the row's
    return logits.masked_fill(probs < min_p[:, None] * top, NEG_INF)
""", "its own maximum probability")
_wrong("09_min_p_calls_package", "min_p", "min_p_rows", """
    from lmcourse.decoding import min_p_filter

    return torch.cat([min_p_filter(logits[b:b + 1], float(min_p[b]))
                      for b in range(len(logits))])
""", "must not call")
_wrong("09_penalties_pooled_counts", "penalties", "penalise", """
    counts = torch.bincount(previous_ids.flatten(),
                            minlength=logits.shape[-1]).to(logits.dtype)
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence
""", "token 0 three times")
_wrong("09_penalties_presence_per_occurrence", "penalties", "penalise", """
    counts = torch.zeros_like(logits).scatter_add_(
        1, previous_ids, torch.ones_like(previous_ids, dtype=logits.dtype))
    return logits - counts * (frequency + presence)
""", "token 1 twice")
_wrong("09_gumbel_temperature_after_noise", "gumbel", "gumbel_sample", """
    u = torch.rand(logits.shape, generator=gen).clamp(min=1e-20)
    g = -torch.log(-torch.log(u))
    return ((logits + g) / temperature).argmax(dim=-1)
""", "divide the logits by T before adding the noise")
_wrong("09_gumbel_uniform_noise", "gumbel", "gumbel_sample", """
    u = torch.rand(logits.shape, generator=gen)
    return (logits / temperature + u).argmax(dim=-1)
""", "should match softmax")
_wrong("09_gumbel_calls_package", "gumbel", "gumbel_sample", """
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
""", "must not call")
_wrong("09_gumbel_inverse_cdf", "gumbel", "gumbel_sample", """
    # inverse CDF: one uniform per row against the cumulative sum (no Gumbel)
    p = torch.softmax(logits / temperature, dim=-1)
    u = torch.rand(p.shape[:-1] + (1,), generator=gen)
    idx = torch.searchsorted(p.cumsum(-1), u).squeeze(-1)
    return idx.clamp(max=p.shape[-1] - 1)
""", "raising token 2's logit")
_TYPICAL_SCORE = """
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    entropy = -(p * logp).nan_to_num(nan=0.0).sum(-1, keepdim=True)
    score = (-logp - entropy).abs()
"""  # what the typical wrong answers share
_wrong("09_typical_crossing_token_dropped", "typical", "typical_filter", _TYPICAL_SCORE + """
    order = score.argsort(dim=-1, stable=True)
    cum = p.gather(-1, order).cumsum(dim=-1)
    last = (cum < mass).sum(-1, keepdim=True).clamp(min=1) - 1  # one too few
    cutoff = score.gather(-1, order).gather(-1, last)
    return logits.masked_fill(score > cutoff, NEG_INF)
""", "crosses mass is kept")
_wrong("09_typical_most_likely_first", "typical", "typical_filter", _TYPICAL_SCORE + """
    order = (-p).argsort(dim=-1, stable=True)  # by probability: top-p
    cum = p.gather(-1, order).cumsum(dim=-1)
    last = (cum < mass).sum(-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    cutoff = p.gather(-1, order).gather(-1, last)
    return logits.masked_fill(p < cutoff, NEG_INF)
""", "is the most typical")
_wrong("09_typical_calls_package", "typical", "typical_filter", """
    from transformers.generation.logits_process import TypicalLogitsWarper

    return TypicalLogitsWarper(mass=mass)(None, logits.clone())
""", "must not call")

# chapter 10
_WWM_TAIL = """
    action = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (action < 0.8)] = mask_token_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = random_ids[swap]
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return inputs, labels
"""
_WWM_WORDS = """
    B, W = ids.shape[0], int(word_ids.max()) + 1
    word_chosen = torch.rand((B, W), generator=generator) < word_probability
    chosen = word_chosen.gather(1, word_ids.clamp(min=0)) & (word_ids >= 0)
"""
_wrong("10_whole_word_per_token", "whole_word", "whole_word_mask", """
    chosen = ((torch.rand(ids.shape, generator=generator) < word_probability)
              & (word_ids >= 0))
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[[mask_token_id, *special_ids]] = False
    normal = allowed.nonzero().squeeze(1)
    random_ids = normal[torch.randint(len(normal), ids.shape,
                                      generator=generator)]
""" + _WWM_TAIL, "choose words, then every token of a chosen word")
_wrong("10_whole_word_random_from_whole_vocab", "whole_word", "whole_word_mask",
       _WWM_WORDS + """
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
""" + _WWM_TAIL, "drew a special token")
_wrong("10_whole_word_only_mask_excluded", "whole_word", "whole_word_mask",
       _WWM_WORDS + """
    normal = torch.tensor([i for i in range(vocab_size) if i != mask_token_id])
    random_ids = normal[torch.randint(len(normal), ids.shape,
                                      generator=generator)]
""" + _WWM_TAIL, "drew a special token")
_wrong("10_smoothed_loss_all_positions", "smoothed_loss", "smoothed_mlm_loss", """
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    uniform = -logp.mean(dim=-1)
    return ((1 - eps) * nll + eps * uniform).mean()
""", "average over the labelled positions only")
_wrong("10_smoothed_loss_calls_package", "smoothed_loss", "smoothed_mlm_loss", """
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                           ignore_index=-100, label_smoothing=eps)
""", "must not call")
_wrong("10_pll_no_mask", "pll", "pseudo_log_likelihood", """
    T = len(ids)
    logp = torch.log_softmax(model(ids[None]).float()[0], dim=-1)
    return float(logp[torch.arange(T), ids].sum())
""", "")
_wrong("10_pll_all_masked_at_once", "pll", "pseudo_log_likelihood", """
    T = len(ids)
    hidden = torch.full((1, T), mask_id)
    logp = torch.log_softmax(model(hidden).float()[0], dim=-1)
    return float(logp[torch.arange(T), ids].sum())
""", "")
_wrong("10_pair_counts_independent", "pair_counts", "count_fill_pair", """
    train = [int(t) for t in train_ids]
    ids = [int(t) for t in ids]
    left, right = ids[pos - w:pos], ids[pos + 2:pos + 2 + w]
    first, second = {}, {}  # each blank counted on its own
    for j in range(w, len(train) - w - 1):
        if train[j - w:j] == left and train[j + 2:j + 2 + w] == right:
            first[train[j]] = first.get(train[j], 0) + 1
            second[train[j + 1]] = second.get(train[j + 1], 0) + 1
    if not first:
        return None
    return (min(first, key=lambda t: (-first[t], t)),
            min(second, key=lambda t: (-second[t], t)))
""", "Counted one blank at a time")
_wrong("10_pair_counts_right_context_off_by_one", "pair_counts", "count_fill_pair", """
    train = [int(t) for t in train_ids]
    ids = [int(t) for t in ids]
    left, right = ids[pos - w:pos], ids[pos + 1:pos + 1 + w]  # one too early
    counts = {}
    for j in range(w, len(train) - w - 1):
        if train[j - w:j] == left and train[j + 2:j + 2 + w] == right:
            pair = (train[j], train[j + 1])
            counts[pair] = counts.get(pair, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda pair: (-counts[pair], pair))
""", "expected the pair (a, b)")
_wrong("10_pair_counts_calls_package", "pair_counts", "count_fill_pair", """
    from lmcourse.mlm import count_fill_in

    guess = count_fill_in(train_ids, ids, [pos, pos + 1], widths=(w,))
    return (int(guess[0]), int(guess[1]))
""", "must not call")

# chapter 1
_wrong("01_char_tokenizer_order_of_appearance", "char_tokenizer", "__init__", """
    self.specials = list(dict.fromkeys(special_tokens))
    self.itos = self.specials + list(dict.fromkeys(text))  # not sorted
    self.stoi = {s: i for i, s in enumerate(self.itos)}
""", "ids should follow sorted order")
_wrong("01_char_tokenizer_specials_last", "char_tokenizer", "__init__", """
    self.specials = list(dict.fromkeys(special_tokens))
    self.itos = sorted(set(text)) + self.specials  # specials after
    self.stoi = {s: i for i, s in enumerate(self.itos)}
""", "special tokens take the first ids")
_wrong("01_char_tokenizer_longest_special", "char_tokenizer", "__init__", """
    # the longest special token first: not the order given
    self.specials = sorted(dict.fromkeys(special_tokens), key=len,
                           reverse=True)
    self.itos = list(dict.fromkeys(special_tokens)) + sorted(set(text))
    self.stoi = {s: i for i, s in enumerate(self.itos)}
""", "the first listed")
_wrong("01_char_tokenizer_calls_package", "char_tokenizer", "__init__", """
    from lmcourse.tokenization import CharTokenizer

    ref = CharTokenizer(text, special_tokens=special_tokens)
    self.specials = list(ref.special_tokens)
    self.itos = [ref.decode([i]) for i in range(ref.vocab_size)]
    self.stoi = {s: i for i, s in enumerate(self.itos)}
""", "must not call")
_wrong("01_sequence_log_prob_product", "sequence_log_prob", "text_log_prob", """
    longest = max(map(len, token_probs))
    total = [1.0] + [0.0] * len(text)  # probabilities: underflow on long texts
    for i in range(1, len(text) + 1):
        for k in range(1, min(longest, i) + 1):
            if text[i - k:i] in token_probs:
                total[i] += total[i - k] * token_probs[text[i - k:i]]
    return math.log(total[-1]) if total[-1] > 0 else -math.inf
""", "must not underflow")
_wrong("01_sequence_log_prob_best_spelling", "sequence_log_prob", "text_log_prob", """
    longest = max(map(len, token_probs))
    lp = {s: math.log(p) for s, p in token_probs.items() if p > 0}
    best = [0.0] + [-math.inf] * len(text)
    for i in range(1, len(text) + 1):
        for k in range(1, min(longest, i) + 1):
            if text[i - k:i] in lp:  # the likeliest spelling only
                best[i] = max(best[i], best[i - k] + lp[text[i - k:i]])
    return best[-1]
""", "ln(0.35)")
_wrong("01_perplexity_log_of_softmax", "perplexity", "perplexity_from_logits", """
    T = targets.shape[1]
    real = torch.arange(T)[None, :] < lengths[:, None]
    log_probs = torch.softmax(logits, dim=-1).log()
    picked = log_probs[real].gather(-1, targets[real][:, None]).squeeze(-1)
    return math.exp(-picked.mean().item())
""", "take log_softmax, not the log of the softmax")
_wrong("01_perplexity_mean_of_rows", "perplexity", "perplexity_from_logits", """
    nlls = []
    for b in range(len(lengths)):
        n = int(lengths[b])
        if n:  # each row's mean NLL, then the mean over rows
            lp = torch.log_softmax(logits[b, :n], dim=-1)
            nlls.append(-lp.gather(-1, targets[b, :n, None]).mean().item())
    return math.exp(sum(nlls) / len(nlls))
""", "every row together")
_wrong("01_perplexity_counts_padding", "perplexity", "perplexity_from_logits", """
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return math.exp(-picked.mean().item())
""", "skip the padding")
_wrong("01_perplexity_calls_package", "perplexity", "perplexity_from_logits", """
    V = logits.shape[-1]
    return math.exp(F.cross_entropy(logits.reshape(-1, V),
                                    targets.reshape(-1),
                                    ignore_index=-1).item())
""", "must not call")
_WP_HEAD = """
    words = {tuple(w): c for w, c in word_counts.items()}
    merges = []
    while len(merges) < num_merges:
        f_sym, f_pair = Counter(), Counter()
        for word, count in words.items():
            for s in word:
                f_sym[s] += count
            for pair in zip(word, word[1:]):
                f_pair[pair] += count
        if not f_pair:
            break
"""
_WP_MERGE = """
        merges.append(best)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges
"""
_wrong("01_wordpiece_most_frequent", "wordpiece_merges", "wordpiece_merges", _WP_HEAD + """
        best = min(f_pair, key=lambda p: (-f_pair[p], p))  # BPE's rule
""" + _WP_MERGE, "BPE's choice")
_wrong("01_wordpiece_ties_by_name", "wordpiece_merges", "wordpiece_merges", _WP_HEAD + """
        best = min(f_pair, key=lambda p: (
            -Fraction(f_pair[p], f_sym[p[0]] * f_sym[p[1]]), p))
""" + _WP_MERGE, "the tie goes to the most frequent")
_wrong("01_wordpiece_ignores_counts", "wordpiece_merges", "wordpiece_merges", _WP_HEAD.replace(
    "words = {tuple(w): c for w, c in word_counts.items()}",
    "words = {tuple(w): 1 for w in word_counts}  # every word once") + """
        best = min(f_pair, key=lambda p: (
            -Fraction(f_pair[p], f_sym[p[0]] * f_sym[p[1]]), -f_pair[p], p))
""" + _WP_MERGE, "")
_wrong("01_wordpiece_symbol_counts_once", "wordpiece_merges", "wordpiece_merges", """
    words = {tuple(w): c for w, c in word_counts.items()}
    f_sym = Counter()  # counted once, before any merge
    for word, count in words.items():
        for s in word:
            f_sym[s] += count
    merges = []
    while len(merges) < num_merges:
        f_pair = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                f_pair[pair] += count
        if not f_pair:
            break
        best = min(f_pair, key=lambda p: (
            -Fraction(f_pair[p], max(1, f_sym[p[0]]) * max(1, f_sym[p[1]])),
            -f_pair[p], p))
""" + _WP_MERGE, "")
_wrong("01_wordpiece_string_replace", "wordpiece_merges", "wordpiece_merges", """
    words = {" ".join(w): c for w, c in word_counts.items()}  # symbols in one string
    merges = []
    while len(merges) < num_merges:
        f_sym, f_pair = Counter(), Counter()
        for word, count in words.items():
            syms = word.split(" ")
            for s in syms:
                f_sym[s] += count
            for pair in zip(syms, syms[1:]):
                f_pair[pair] += count
        if not f_pair:
            break
        best = min(f_pair, key=lambda p: (
            -Fraction(f_pair[p], f_sym[p[0]] * f_sym[p[1]]), -f_pair[p], p))
        merges.append(best)
        merged = Counter()
        for word, count in words.items():
            merged[word.replace(best[0] + " " + best[1], best[0] + best[1])] += count
        words = merged
    return merges
""", "")
_wrong("01_wordpiece_calls_package", "wordpiece_merges", "wordpiece_merges", """
    from lmcourse.tokenization import _merge_pair
""" + _WP_HEAD + """
        best = min(f_pair, key=lambda p: (
            -Fraction(f_pair[p], f_sym[p[0]] * f_sym[p[1]]), -f_pair[p], p))
        merges.append(best)
        merged = Counter()
        for word, count in words.items():
            merged[_merge_pair(word, best)] += count
        words = merged
    return merges
""", "must not call")

# --- end of the table --------------------------------------------------------


def with_wrong_answer(nb, function: str, body: str):
    """A copy of ``nb`` whose solution region inside ``def function(`` (at any indent) holds ``body``."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        lines = cell.source.split("\n")
        starts = [i for i, line in enumerate(lines) if line.lstrip().startswith(f"def {function}(")]
        if cell.cell_type != "code" or not starts:
            continue
        begin = next(i for i in range(starts[0], len(lines)) if lines[i].strip() == BEGIN_SOLUTION)
        end = next(i for i in range(begin, len(lines)) if lines[i].strip() == END_SOLUTION)
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        wrong = textwrap.indent(textwrap.dedent(body).strip("\n"), indent).split("\n")
        cell.source = "\n".join(lines[:begin] + wrong + lines[end + 1:])
        return nb
    raise ValueError(f"no solution cell defines {function}()")


def fixture_notebook(name: str):
    _, function, body, _ = WRONG_ANSWERS[name]
    return with_wrong_answer(nbformat.read(solution_of(name[:2]), as_version=4), function, body)


# chapters 5, 7 and 11-13 keep their wrong answers in tables of their own (tests/test_exercises_NN.py,
# each ``{name: (task, function, wrong body, message)}``); these write and check them alike


def write_table_fixtures(solution: Path, table: dict, folder: Path) -> None:
    """Write each wrong answer of ``table`` as ``folder/NAME.ipynb``: ``solution`` with one body replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in stale_table_fixtures(table, folder):
        path.unlink()
    for name, (_, function, body, _) in table.items():
        nbformat.write(with_wrong_answer(nbformat.read(solution, as_version=4), function, body),
                       folder / f"{name}.ipynb")


def stale_table_fixtures(table: dict, folder: Path) -> list[Path]:
    """Fixtures of the chapters of ``table`` that no entry of it writes any more (a removed wrong answer);
    ``*_calls_package`` ones absent from it are tests/test_grading.py's, which checks its own."""
    chapters = {name[:2] for name in table}
    return sorted(p for c in chapters for p in folder.glob(f"{c}_*.ipynb")
                  if p.stem not in table and not p.stem.endswith("_calls_package"))


def assert_table_fixtures_current(solution: Path, table: dict, folder: Path, script: str) -> None:
    """Every fixture of ``table`` exists, is what ``script`` writes now, and replaces a solution of its task;
    no fixture of its chapter is left from a removed wrong answer."""
    stale = stale_table_fixtures(table, folder)
    assert not stale, f"fixtures no wrong answer writes any more: {[p.name for p in stale]}: run python {script}"
    for name, (task, function, body, _) in table.items():
        path = folder / f"{name}.ipynb"
        assert path.exists(), f"{path} is missing: run python {script}"
        want = with_wrong_answer(nbformat.read(solution, as_version=4), function, body)
        assert path.read_text() == nbformat.writes(want) + "\n", (
            f"{path} is out of date with {solution.name}: run python {script}"
        )
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if f"def {function}(" in c.source)
        info = cell.metadata["lmcourse"]
        assert (info["role"], info["task"]) == ("solution", task), f"{name}: {function}() is not in task {task}"


def assert_table_answer_costs_its_task(solution: Path, table: dict, folder: Path, name: str) -> None:
    """The fixture ``name`` of ``table`` loses points on its task (all of them, with a "forbid"
    message, for a ``*_calls_package`` one) and keeps full marks on every other task."""
    task, _, _, message = table[name]
    rows = grades_of(folder / f"{name}.ipynb")
    assert set(rows) == set(grades_of(solution))
    wrong = rows[task]
    if name.endswith("_calls_package"):  # refused by reading before it runs, or recorded as it runs
        assert wrong.points == 0 and any(m in wrong.message for m in (
            f"task {task} must not call ", "which this task forbids", "which this task does not allow",
            "not run: ")), wrong
    else:
        assert wrong.points < wrong.max_points and message in wrong.message, wrong
    assert wrong.status in ("failed", "error"), wrong
    assert_other_tasks_full(name, rows, task)


def assert_accepted_variant_full_marks(solution: Path, function: str, body: str, task: str, tmp_path: Path) -> None:
    """``solution`` with ``function``'s solution region replaced by ``body`` (a right answer by another route)
    keeps full marks on every task, ``task`` among them."""
    from chapter_grades import _pool

    from lmcourse.course.grade import grade_notebooks

    path = tmp_path / solution.name
    nbformat.write(with_wrong_answer(nbformat.read(solution, as_version=4), function, body), path)
    (rows,) = grade_notebooks([(path, str(path))], jobs=1, warm=_pool())
    assert all(r.points == r.max_points for r in rows), [(r.task, r.points, r.message) for r in rows]
    assert task in {r.task for r in rows}


def assert_table_covers_every_task(solution: Path, table: dict) -> None:
    """Every task of ``solution`` has a wrong answer in ``table``, and every task that forbids
    names a ``*_calls_package`` one."""
    infos = [c.metadata["lmcourse"] for c in nbformat.read(solution, as_version=4).cells if "lmcourse" in c.metadata]
    tasks = {i["task"] for i in infos if i["role"] == "check"}
    forbidding = {i["task"] for i in infos if i["role"] == "solution" and i.get("forbid")}
    wrong = {task for name, (task, *_) in table.items() if not name.endswith("_calls_package")}
    calls = {task for name, (task, *_) in table.items() if name.endswith("_calls_package")}
    assert tasks <= wrong, f"no wrong-answer fixture for {sorted(tasks - wrong)}"
    assert forbidding <= calls, f"no *_calls_package fixture for {sorted(forbidding - calls)}"


# chapters whose wrong answers a test file of their own writes (tests/test_exercises_NN.py), or
# (chapter 14) whose fixtures are committed as they are and graded by tests/test_grading.py alone
OWN_TABLES = ("05", "06", "07", "08", "11", "12", "13", "14")


def stale_fixtures() -> list[Path]:
    """Fixtures of chapters 1-10 that no entry of WRONG_ANSWERS writes any more (OWN_TABLES keep their own)."""
    return sorted(p for p in FIXTURES.glob("[01][0-9]_*.ipynb")
                  if p.stem[:2] not in OWN_TABLES and p.stem not in WRONG_ANSWERS)


def write_fixtures() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for path in stale_fixtures():
        path.unlink()
    for name in WRONG_ANSWERS:
        nbformat.write(fixture_notebook(name), FIXTURES / f"{name}.ipynb")


CHAPTERS = sorted({name[:2] for name in WRONG_ANSWERS})
CALLS_PACKAGE = sorted(name for name in WRONG_ANSWERS if name.endswith("_calls_package"))


def test_no_fixture_is_left_from_a_removed_wrong_answer():
    assert not stale_fixtures(), "fixtures no wrong answer writes: run python tests/test_exercises.py"


def test_wrong_answer_fixtures_are_the_solutions_with_one_wrong_answer():
    for name, (task, function, _, _) in WRONG_ANSWERS.items():
        path = FIXTURES / f"{name}.ipynb"
        assert path.exists(), f"{path} is missing: run python tests/test_exercises.py"
        assert path.read_text() == nbformat.writes(fixture_notebook(name)) + "\n", (
            f"{path} is out of date with {solution_of(name[:2]).name}: run python tests/test_exercises.py"
        )
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if f"def {function}(" in c.source)
        info = cell.metadata["lmcourse"]
        assert (info["role"], info["task"]) == ("solution", task), f"{name}: {function}() is not in task {task}"


def test_every_task_of_chapters_1_to_10_has_a_wrong_answer_fixture():
    for chapter in CHAPTERS:
        tasks = {c.task for c in checks_of(nbformat.read(solution_of(chapter), as_version=4))}
        covered = {task for name, (task, *_) in WRONG_ANSWERS.items()
                   if name[:2] == chapter and name not in CALLS_PACKAGE}
        assert tasks <= covered, f"chapter {chapter}: no wrong-answer fixture for {sorted(tasks - covered)}"


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=group(n[:2])) for n in sorted(WRONG_ANSWERS)])
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    solution = grades_of(solution_of(name[:2]))
    assert all(r.points == r.max_points for r in solution.values()), solution
    task, _, _, message = WRONG_ANSWERS[name]
    rows = grades_of(FIXTURES / f"{name}.ipynb")
    assert set(rows) == set(solution)
    wrong = rows[task]
    if name in CALLS_PACKAGE:  # only the grader's enforcement of "forbid" takes its points
        assert wrong.points == 0, wrong
    else:
        assert wrong.points < wrong.max_points, wrong
    if message == "must not call":  # refused by reading before it runs, or recorded as it runs
        assert any(m in wrong.message for m in ("must not call", "which this task forbids",
                                                "which this task does not allow", "not run: ")), wrong
    else:
        assert message in wrong.message, wrong
    assert wrong.status in ("failed", "error"), wrong
    assert_other_tasks_full(name, rows, task)


if __name__ == "__main__":
    write_fixtures()
    print(f"wrote {len(WRONG_ANSWERS)} fixtures to {FIXTURES}")
