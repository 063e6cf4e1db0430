"""Chapter 8's exercises: every plausible wrong answer costs its own task points, and only those.

Each fixture ``tests/grading_fixtures/wrong_answers/08_*.ipynb`` is the solutions
notebook with one function's solution region replaced by a wrong answer (the table
:data:`WRONG_ANSWERS`); a ``*_calls_package`` one answers by calling what its task
forbids and must score 0 there. After the solutions change, rewrite them with
``python tests/test_exercises_08.py``; a fast test says when they are out of date.
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

SOLUTION = SOLUTIONS_DIR / "08_kv_cache.ipynb"
FIXTURES = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

# pieces the wrong answers share: chunk_attention's grouped keys and values, generate_chunked's
# prefill and decode loop, and SinkWindowCache.attend's opening and its storing of a chunk
_GROUPED = """
    keys = torch.cat([past_k, k], dim=-2)
    values = torch.cat([past_v, v], dim=-2)
    P, C = past_k.shape[-2], q.shape[-2]
    group = q.shape[1] // keys.shape[1]
    kh = keys.repeat_interleave(group, dim=1)
    vh = values.repeat_interleave(group, dim=1)
    scores = q @ kh.transpose(-2, -1) / math.sqrt(q.shape[-1])
"""
_PREFILL = """
    cache = new_cache(model, prompt.shape[0])
    for start in range(0, prompt.shape[1], chunk):
        logits = model(prompt[:, start:start + chunk], start, cache=cache)
"""
_DECODE = """
    ids = prompt
    for i in range(n_new):
        nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if i < n_new - 1:
            logits = model(nxt, ids.shape[1] - 1, cache=cache)
    return ids
"""
_OPEN = """
    T = q.shape[-2]
    new = torch.arange(self.length, self.length + T)
    keys = torch.cat([self.k, k], dim=-2)
    values = torch.cat([self.v, v], dim=-2)
    p = torch.cat([self.pos, new])[None, :]
    t = new[:, None]
"""
_ATTEND = """
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])
    out = F.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1) @ values
"""
_STORE = """
    keep = new[(new < self.n_sink) | (new > new[-1] - self.window)]
    ring = self.n_sink + (keep - self.n_sink) % self.window
    slot = torch.where(keep < self.n_sink, keep, ring)
    self.k[:, :, slot] = k[:, :, keep - self.length]
    self.v[:, :, slot] = v[:, :, keep - self.length]
    self.pos[slot] = keep
"""
_RIGHT_SEEN = """
    recent = (p <= t) & (p > t - self.window)
    seen = (p >= 0) & (p <= t) & (recent | (p < self.n_sink))
"""

# fixture name: (task, function whose solution region is replaced, wrong body,
# a fragment of the message of the check that must catch it)
WRONG_ANSWERS = {
    "08_chunk_mask_without_offset": ("chunk_attention", "chunk_attention", _GROUPED + """
    future = torch.ones(C, P + C, dtype=torch.bool).triu(1)  # the lower triangle, not moved by P
    scores = scores.masked_fill(future, float("-inf"))
    return F.softmax(scores, dim=-1) @ vh, keys, values
    """, "fed in chunks (3, 1, 4, 2)"),
    "08_chunk_no_mask_within_chunk": ("chunk_attention", "chunk_attention", _GROUPED + """
    # the past is all earlier, so no mask; but the chunk's own later tokens are seen too
    return F.softmax(scores, dim=-1) @ vh, keys, values
    """, "with an empty past, a chunk is plain causal attention"),
    "08_chunk_gqa_tiled": ("chunk_attention", "chunk_attention", """
    keys = torch.cat([past_k, k], dim=-2)
    values = torch.cat([past_v, v], dim=-2)
    P, C = past_k.shape[-2], q.shape[-2]
    group = q.shape[1] // keys.shape[1]
    kh = keys.repeat(1, group, 1, 1)  # tiled: query head h reads head h % G
    vh = values.repeat(1, group, 1, 1)
    scores = q @ kh.transpose(-2, -1) / math.sqrt(q.shape[-1])
    row = torch.arange(C)[:, None] + P
    col = torch.arange(P + C)[None, :]
    scores = scores.masked_fill(col > row, float("-inf"))
    return F.softmax(scores, dim=-1) @ vh, keys, values
    """, "which key/value head does each query head read"),
    "08_chunk_gqa_caches_query_heads": ("chunk_attention", "chunk_attention", """
    # every key/value head repeated for its query heads before it is cached
    H = q.shape[1]
    keys = torch.cat([past_k.repeat_interleave(H // past_k.shape[1], dim=1),
                      k.repeat_interleave(H // k.shape[1], dim=1)], dim=-2)
    values = torch.cat([past_v.repeat_interleave(H // past_v.shape[1], dim=1),
                        v.repeat_interleave(H // v.shape[1], dim=1)], dim=-2)
    P, C = past_k.shape[-2], q.shape[-2]
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])
    row = torch.arange(C)[:, None] + P
    col = torch.arange(P + C)[None, :]
    scores = scores.masked_fill(col > row, float("-inf"))
    return F.softmax(scores, dim=-1) @ values, keys, values
    """, "it keeps the G = 2 key/value heads"),
    "08_chunk_flex_attention": ("chunk_attention", "chunk_attention", """
    from torch.nn.attention.flex_attention import flex_attention

    keys = torch.cat([past_k, k], dim=-2)
    values = torch.cat([past_v, v], dim=-2)
    P = past_k.shape[-2]
    out = flex_attention(q, keys, values, enable_gqa=True,
                         score_mod=lambda s, b, h, i, j: torch.where(j <= i + P, s, -float("inf")))
    return out, keys, values
    """, "which this task forbids"),
    "08_chunk_calls_package": ("chunk_attention", "chunk_attention", """
    keys = torch.cat([past_k, k], dim=-2)
    values = torch.cat([past_v, v], dim=-2)
    P, C = past_k.shape[-2], q.shape[-2]
    allowed = torch.ones(C, P + C, dtype=torch.bool).tril(P)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, enable_gqa=True)
    return out, keys, values
    """, "must not call"),
    "08_prefill_whole_prompt": ("prefill", "generate_chunked", """
    cache = new_cache(model, prompt.shape[0])
    logits = model(prompt, 0, cache=cache)  # one forward for the whole prompt
    """ + _DECODE, "at most chunk = 4 at a time"),
    "08_prefill_drops_last_chunk": ("prefill", "generate_chunked", """
    cache = new_cache(model, prompt.shape[0])
    for start in range(0, prompt.shape[1] - chunk + 1, chunk):  # only whole chunks: the rest is lost
        logits = model(prompt[:, start:start + chunk], start, cache=cache)
    ids = prompt
    for i in range(n_new):
        nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if i < n_new - 1:
            logits = model(nxt, cache.length, cache=cache)
    return ids
    """, "differs from greedy decoding without a cache"),
    "08_prefill_decode_without_cache": ("prefill", "generate_chunked", _PREFILL + """
    ids = prompt
    for i in range(n_new):
        nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if i < n_new - 1:
            logits = model(ids)  # the whole sequence again: right tokens, the cache unused
    return ids
    """, "forward calls took [4, 4, 3, 12, 13, 14, 15] tokens"),
    "08_prefill_last_token_twice": ("prefill", "generate_chunked", _PREFILL + """
    ids = prompt
    for _ in range(n_new):
        # each step feeds the latest token, starting with the prompt's last, already cached
        logits = model(ids[:, -1:], cache.length, cache=cache)
        ids = torch.cat([ids, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return ids
    """, "differs from greedy decoding without a cache"),
    "08_prefill_calls_package": ("prefill", "generate_chunked", """
    from lmcourse.generation import generate

    return generate(model, prompt, n_new, do_sample=False)
    """, "must not call"),
    "08_stream_ring_over_sinks": ("streaming", "attend", _OPEN + """
    S = self.n_sink + self.window  # one ring over every slot: the sinks get overwritten
    seen = (p >= 0) & (p <= t) & (p > t - S)
    """ + _ATTEND + """
    keep = new[new > new[-1] - S]
    self.k[:, :, keep % S] = k[:, :, keep - self.length]
    self.v[:, :, keep % S] = v[:, :, keep - self.length]
    self.pos[keep % S] = keep
    self.length += T
    return out
    """, "query 5 must weigh positions [0, 1, 3, 4, 5]"),
    "08_stream_window_plus_one": ("streaming", "attend", _OPEN + """
    recent = (p <= t) & (p >= t - self.window)  # window + 1 positions
    seen = (p >= 0) & (p <= t) & (recent | (p < self.n_sink))
    """ + _ATTEND + _STORE + """
    self.length += T
    return out
    """, "query 5 must weigh positions [0, 1, 3, 4, 5]"),
    "08_stream_empty_slots_seen": ("streaming", "attend", _OPEN + """
    recent = (p <= t) & (p > t - self.window)
    seen = (p <= t) & (recent | (p < self.n_sink))  # empty slots (position -1) pass as sinks
    """ + _ATTEND + _STORE + """
    self.length += T
    return out
    """, "query 0 must weigh positions [0] equally"),
    "08_stream_sinks_twice": ("streaming", "attend", _OPEN + _RIGHT_SEEN + _ATTEND + """
    # every position goes into the ring, and the sinks into their own slots as well
    keep = new[new > new[-1] - self.window]
    slot = self.n_sink + keep % self.window
    self.k[:, :, slot] = k[:, :, keep - self.length]
    self.v[:, :, slot] = v[:, :, keep - self.length]
    self.pos[slot] = keep
    sinks = new[new < self.n_sink]
    self.k[:, :, sinks] = k[:, :, sinks - self.length]
    self.v[:, :, sinks] = v[:, :, sinks - self.length]
    self.pos[sinks] = sinks
    self.length += T
    return out
    """, "query 2 must weigh positions [0, 1, 2]"),
    "08_stream_grows": ("streaming", "attend", """
    # every position kept, the mask picks the sinks and the window: right outputs, growing memory
    T = q.shape[-2]
    new = torch.arange(self.length, self.length + T)
    self.k = torch.cat([self.k, k], dim=-2)
    self.v = torch.cat([self.v, v], dim=-2)
    self.pos = torch.cat([self.pos, new])
    keys, values = self.k, self.v
    p, t = self.pos[None, :], new[:, None]
    """ + _RIGHT_SEEN + _ATTEND + """
    self.length += T
    return out
    """, "holds n_sink + window = 5 positions"),
    "08_stream_chunk_written_first": ("streaming", "attend", """
    # store first, then attend to what is stored: right one position at a time
    T = q.shape[-2]
    new = torch.arange(self.length, self.length + T)
    """ + _STORE + """
    keys, values = self.k, self.v
    p, t = self.pos[None, :], new[:, None]
    """ + _RIGHT_SEEN + _ATTEND + """
    self.length += T
    return out
    """, "in chunks (6, 1, 4, 1), 2 sinks, window 3: query 2 must weigh"),
    "08_stream_sinks_off_by_one": ("streaming", "attend", _OPEN + """
    recent = (p <= t) & (p > t - self.window)
    seen = (p >= 0) & (p <= t) & (recent | (p <= self.n_sink))  # n_sink + 1 sinks
    """ + _ATTEND + _STORE + """
    self.length += T
    return out
    """, "query 5 must weigh positions [0, 1, 3, 4, 5]"),
    "08_stream_shifts_window": ("streaming", "attend", """
    # the window kept in order: every step shifts it down a slot and writes the newest at the end
    outs = []
    for i in range(q.shape[-2]):
        n, S, W = self.length, self.n_sink, self.window
        keys = torch.cat([self.k, k[:, :, i:i + 1]], dim=-2)
        values = torch.cat([self.v, v[:, :, i:i + 1]], dim=-2)
        p = torch.cat([self.pos, torch.tensor([n])])[None, :]
        seen = (p >= 0) & ((p < S) | (p > n - W))
        scores = q[:, :, i:i + 1] @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])
        outs.append(F.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1) @ values)
        if n < S:
            self.k[:, :, n], self.v[:, :, n], self.pos[n] = k[:, :, i], v[:, :, i], n
        else:
            self.k[:, :, S:-1] = self.k[:, :, S + 1:].clone()
            self.v[:, :, S:-1] = self.v[:, :, S + 1:].clone()
            self.pos[S:-1] = self.pos[S + 1:].clone()
            self.k[:, :, -1], self.v[:, :, -1], self.pos[-1] = k[:, :, i], v[:, :, i], n
        self.length = n + 1
    return torch.cat(outs, dim=-2)
    """, "the keys already stored stay where they are"),
    "08_stream_hugging_face_layer": ("streaming", "attend", """
    from transformers.cache_utils import DynamicSlidingWindowLayer

    if self.length == 0:
        self.hf = DynamicSlidingWindowLayer(sliding_window=self.window)
    keys, values = self.hf.update(k, v)
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])
    self.length += q.shape[-2]
    return F.softmax(scores, dim=-1) @ values
    """, "which this task does not allow"),
    "08_stream_calls_package": ("streaming", "attend", _OPEN + _RIGHT_SEEN + """
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=seen)
    """ + _STORE + """
    self.length += T
    return out
    """, "must not call"),
}


def write_fixtures() -> None:
    write_table_fixtures(SOLUTION, WRONG_ANSWERS, FIXTURES)


def test_fixtures_are_the_solutions_with_one_wrong_answer():
    assert_table_fixtures_current(SOLUTION, WRONG_ANSWERS, FIXTURES, "tests/test_exercises_08.py")


def test_every_task_has_a_wrong_answer_and_every_forbid_a_calls_package_fixture():
    assert_table_covers_every_task(SOLUTION, WRONG_ANSWERS)
    functions = {function for _, function, _, _ in WRONG_ANSWERS.values()}
    assert functions == {"chunk_attention", "generate_chunked", "attend"}


def test_every_solution_imports_math_and_torch_only_and_reads_clean():
    """Each answer may import math and torch only: neither lmcourse's caches and generate nor
    Hugging Face's cache classes (DynamicCache, StaticCache, the sliding-window layers) can be reached."""
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
        for shortcut in ("from transformers.cache_utils import StaticSlidingWindowLayer",
                         "from transformers import DynamicCache",
                         "from lmcourse.generation import generate, LayerKVCache",
                         "import numpy as np"):
            assert read_cell(shortcut, rules), (info["task"], shortcut)
    attention = [cell_info(c) for c in cells if cell_info(c)["task"] in ("chunk_attention", "streaming")]
    for info in attention:  # any attention of PyTorch's, by name
        rules = Rules(allowed=frozenset(info["allow"]), forbid=tuple(info["forbid"]))
        for shortcut in ("out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)",
                         "from torch.nn.attention.flex_attention import flex_attention\nflex_attention(q, k, v)"):
            assert read_cell(shortcut, rules), (info["task"], shortcut)


@pytest.mark.slow
@group("08")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"chunk_attention", "prefill", "streaming"}
    assert sum(r.max_points for r in rows.values()) == 12
    assert all(r.points == r.max_points and r.status == "passed" for r in rows.values()), rows


@pytest.mark.slow
@group("08")
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    assert_table_answer_costs_its_task(SOLUTION, WRONG_ANSWERS, FIXTURES, name)


@pytest.mark.slow
@group("08")
def test_a_chunk_written_before_attending_loses_only_the_chunked_check():
    """Storing first is right one position at a time: the answer keeps stream_decode's 3 points."""
    rows = grades_of(FIXTURES / "08_stream_chunk_written_first.ipynb")
    assert rows["streaming"].points == 3, rows["streaming"]


# right answers by other routes, which must keep full marks: name -> (function, body, task)
ACCEPTED = {
    "08_chunk_grouped_view": ("chunk_attention", """
        # no copies of keys and values: the query heads of a group side by side
        B, H, C, Dh = q.shape
        G, P = k.shape[1], past_k.shape[-2]
        keys, values = torch.cat([past_k, k], dim=-2), torch.cat([past_v, v], dim=-2)
        qg = q.reshape(B, G, H // G, C, Dh)
        scores = torch.einsum("bgmcd,bgsd->bgmcs", qg, keys) / math.sqrt(Dh)
        future = torch.ones(C, P + C, dtype=torch.bool).triu(P + 1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        out = torch.einsum("bgmcs,bgsd->bgmcd", weights, values)
        return out.reshape(B, H, C, Dh), keys, values
    """, "chunk_attention"),
    "08_stream_positions_by_arithmetic": ("attend", """
        # no table of positions: each slot's position worked out from how many have been seen
        T, L, S, W = q.shape[-2], self.length, self.n_sink, self.window
        slots = torch.arange(S + W)
        lag = (L - 1 - slots) % W  # ring slot S + r holds the latest position S + r + m W below L
        pos = torch.where(slots < S, slots, L - 1 - lag)
        pos = torch.where((pos < L) & ((slots < S) | (pos >= S)), pos, torch.full_like(pos, -1))
        new = torch.arange(L, L + T)
        p, t = torch.cat([pos, new])[None, :], new[:, None]
        seen = (p >= 0) & (p <= t) & ((p < S) | (t - p < W))
        scores = q @ torch.cat([self.k, k], dim=-2).transpose(-2, -1) / math.sqrt(q.shape[-1])
        weights = torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1)
        out = weights @ torch.cat([self.v, v], dim=-2)
        for i in range(T):  # one position at a time into its slot
            n = L + i
            if n < S:
                self.k[:, :, n], self.v[:, :, n] = k[:, :, i], v[:, :, i]
            elif n > L + T - 1 - W:
                s = S + (n - S) % W
                self.k[:, :, s], self.v[:, :, s] = k[:, :, i], v[:, :, i]
        self.length = L + T
        return out
    """, "streaming"),
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
