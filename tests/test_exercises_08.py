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

# pieces the wrong answers share: gqa_from_mha's head split, KiviCache.append's merging of the
# incomplete group, its quantiser and its return; SinkWindowCache.attend's opening and its storing
# of a chunk
_HEADS = """
    H = sum(len(group) for group in groups)
    Dh = proj_weight.shape[1] // H
    order = [h for group in groups for h in group]
"""
_POOLED = """
    def convert(x):
        q, k, v = x.reshape(3, H, Dh, *x.shape[1:])
        pooled = [torch.stack([z[group].mean(dim=0) for group in groups]) for z in (k, v)]
        return torch.cat([q[order], *pooled]).reshape(-1, *x.shape[1:])
"""
_RENUMBERED_PROJ = """
    proj = proj_weight.reshape(-1, H, Dh)[:, order].reshape(proj_weight.shape)
"""
_MERGE = """
    if self.recent_k is not None:
        k = torch.cat([self.recent_k, k], dim=-2)
        v = torch.cat([self.recent_v, v], dim=-2)
    G, L = self.group, self.steps
"""
_QUANTISE = """
    def quantise(x):  # each row of x on levels from its least to its greatest number
        low = x.amin(dim=-1, keepdim=True)
        step = (x.amax(dim=-1, keepdim=True) - low) / L
        step = torch.where(step > 0, step, torch.ones_like(step))
        return torch.round((x - low) / step).clamp(0, L) * step + low
"""
_RETURN = """
    self.recent_k, self.recent_v = k[..., full:, :], v[..., full:, :]
    return (torch.cat([*[a for a, _ in self.stored], self.recent_k], dim=-2),
            torch.cat([*[b for _, b in self.stored], self.recent_v], dim=-2))
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
    "08_gqa_pools_interleaved_heads": ("gqa", "gqa_from_mha", _HEADS + """
    G = len(groups)

    def convert(x):  # key/value head j pools heads j, j + G, j + 2G, ... (query h reads h % G)
        q, k, v = x.reshape(3, H, Dh, *x.shape[1:])
        pooled = [z.reshape(H // G, G, *z.shape[1:]).mean(dim=0) for z in (k, v)]
        return torch.cat([q, *pooled]).reshape(-1, *x.shape[1:])

    bias = None if qkv_bias is None else convert(qkv_bias)
    return convert(qkv_weight), bias, proj_weight.clone()
    """, "heads 0 and 1 have the same keys and values"),
    "08_gqa_first_head_of_group": ("gqa", "gqa_from_mha", _HEADS + """
    def convert(x):  # each group keeps its first head's keys and values
        q, k, v = x.reshape(3, H, Dh, *x.shape[1:])
        firsts = [torch.stack([z[group[0]] for group in groups]) for z in (k, v)]
        return torch.cat([q[order], *firsts]).reshape(-1, *x.shape[1:])

    bias = None if qkv_bias is None else convert(qkv_bias)
    """ + _RENUMBERED_PROJ + """
    return convert(qkv_weight), bias, proj
    """, "swapping their keys and values must not change it"),
    "08_gqa_sums_heads": ("gqa", "gqa_from_mha", _HEADS + """
    def convert(x):  # the heads of a group added up, not averaged
        q, k, v = x.reshape(3, H, Dh, *x.shape[1:])
        summed = [torch.stack([z[group].sum(dim=0) for group in groups]) for z in (k, v)]
        return torch.cat([q[order], *summed]).reshape(-1, *x.shape[1:])

    bias = None if qkv_bias is None else convert(qkv_bias)
    """ + _RENUMBERED_PROJ + """
    return convert(qkv_weight), bias, proj
    """, "heads 0 and 1 have the same keys and values"),
    "08_gqa_queries_pooled_too": ("gqa", "gqa_from_mha", _HEADS + """
    def convert(x):  # the queries of a group pooled as well, one query for all its heads
        q, k, v = x.reshape(3, H, Dh, *x.shape[1:])
        means = [torch.stack([z[group].mean(dim=0) for group in groups]) for z in (q, k, v)]
        queries = means[0].repeat_interleave(H // len(groups), dim=0)
        return torch.cat([queries, *means[1:]]).reshape(-1, *x.shape[1:])

    bias = None if qkv_bias is None else convert(qkv_bias)
    """ + _RENUMBERED_PROJ + """
    return convert(qkv_weight), bias, proj
    """, "keep the query heads in their order"),
    "08_gqa_bias_cut_not_pooled": ("gqa", "gqa_from_mha", _HEADS + _POOLED + """
    rows = (H + 2 * len(groups)) * Dh
    bias = None if qkv_bias is None else qkv_bias[:rows].clone()  # cut to the new size
    """ + _RENUMBERED_PROJ + """
    return convert(qkv_weight), bias, proj
    """, "heads 0 and 1 have the same keys and values"),
    "08_gqa_queries_left_in_place": ("gqa", "gqa_from_mha", _HEADS + """
    def convert(x):  # key/value heads pooled by group; the query heads not renumbered
        q, k, v = x.reshape(3, H, Dh, *x.shape[1:])
        pooled = [torch.stack([z[group].mean(dim=0) for group in groups]) for z in (k, v)]
        return torch.cat([q, *pooled]).reshape(-1, *x.shape[1:])

    bias = None if qkv_bias is None else convert(qkv_bias)
    return convert(qkv_weight), bias, proj_weight.clone()
    """, "the new query heads are the old heads 3, 0, 1, 2"),
    "08_gqa_proj_not_renumbered": ("gqa", "gqa_from_mha", _HEADS + _POOLED + """
    bias = None if qkv_bias is None else convert(qkv_bias)
    return convert(qkv_weight), bias, proj_weight.clone()  # its columns left in the old order
    """, "heads 3 and 0 have the same keys and values"),
    "08_kivi_per_token_keys": ("kivi", "append", _MERGE + _QUANTISE + """
    full = k.shape[-2] - k.shape[-2] % G
    for s in range(0, full, G):  # the keys per token, like the values
        self.stored.append((quantise(k[..., s:s + G, :]), quantise(v[..., s:s + G, :])))
    """ + _RETURN, "channel 0 of these keys is an outlier"),
    "08_kivi_incomplete_group_quantised": ("kivi", "append", _MERGE + _QUANTISE + """
    full = k.shape[-2] - k.shape[-2] % G
    for s in range(0, full, G):
        self.stored.append((quantise(k[..., s:s + G, :].transpose(-2, -1)).transpose(-2, -1),
                            quantise(v[..., s:s + G, :])))
    self.recent_k, self.recent_v = k[..., full:, :], v[..., full:, :]
    keys = [a for a, _ in self.stored]
    values = [b for _, b in self.stored]
    if full < k.shape[-2]:  # the incomplete group quantised too, afresh at each call
        keys.append(quantise(self.recent_k.transpose(-2, -1)).transpose(-2, -1))
        values.append(quantise(self.recent_v))
    return torch.cat(keys, dim=-2), torch.cat(values, dim=-2)
    """, "a group not yet complete, must come back as they arrived"),
    "08_kivi_ranges_over_history": ("kivi", "append", _MERGE + _QUANTISE + """
    full = k.shape[-2] - k.shape[-2] % G
    for s in range(0, full, G):  # kept as they came, quantised below
        self.stored.append((k[..., s:s + G, :], v[..., s:s + G, :]))
    self.recent_k, self.recent_v = k[..., full:, :], v[..., full:, :]
    if not self.stored:
        return self.recent_k, self.recent_v
    old_k = torch.cat([a for a, _ in self.stored], dim=-2)
    old_v = torch.cat([b for _, b in self.stored], dim=-2)
    # one range per channel over every complete position so far, not per group
    keys = quantise(old_k.transpose(-2, -1)).transpose(-2, -1)
    return (torch.cat([keys, self.recent_k], dim=-2),
            torch.cat([quantise(old_v), self.recent_v], dim=-2))
    """, "must come back the same at every later call"),
    "08_kivi_symmetric_levels": ("kivi", "append", _MERGE + """
    bits = L.bit_length()
    top = 2 ** (bits - 1) - 1  # chapter 8's levels: -top .. top times a scale, about 0

    def quantise(x):
        scale = x.abs().amax(dim=-1, keepdim=True) / top
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.round(x / scale).clamp(-top, top) * scale

    full = k.shape[-2] - k.shape[-2] % G
    for s in range(0, full, G):
        self.stored.append((quantise(k[..., s:s + G, :].transpose(-2, -1)).transpose(-2, -1),
                            quantise(v[..., s:s + G, :])))
    """ + _RETURN, "the greatest number of a set are levels"),
    "08_kivi_groups_counted_per_call": ("kivi", "append", """
    G, L = self.group, self.steps
    """ + _QUANTISE + """
    full = k.shape[-2] - k.shape[-2] % G  # groups counted within this call
    for s in range(0, full, G):
        self.stored.append((quantise(k[..., s:s + G, :].transpose(-2, -1)).transpose(-2, -1),
                            quantise(v[..., s:s + G, :])))
    self.stored.append((k[..., full:, :], v[..., full:, :]))  # the rest kept as it came, for good
    return (torch.cat([a for a, _ in self.stored], dim=-2),
            torch.cat([b for _, b in self.stored], dim=-2))
    """, "their keys and values must come back quantised"),
    "08_kivi_chunk_as_one_group": ("kivi", "append", _MERGE + _QUANTISE + """
    full = k.shape[-2] - k.shape[-2] % G
    if full:  # the complete groups of this call under one range per channel
        self.stored.append((quantise(k[..., :full, :].transpose(-2, -1)).transpose(-2, -1),
                            quantise(v[..., :full, :])))
    """ + _RETURN, "differ from those of the same positions fed one at a time"),
    "08_kivi_calls_package": ("kivi", "append", _MERGE + """
    def quantise(x):  # PyTorch's fake quantisation rounds each row on its own levels
        rows = x.reshape(-1, x.shape[-1])
        low = rows.amin(dim=1)
        step = (rows.amax(dim=1) - low) / L
        step = torch.where(step > 0, step, torch.ones_like(step))
        zero = torch.round(-low / step).int()
        out = torch.fake_quantize_per_channel_affine(rows, step, zero, 0, -1000, 1000)
        return out.reshape(x.shape)

    full = k.shape[-2] - k.shape[-2] % G
    for s in range(0, full, G):
        self.stored.append((quantise(k[..., s:s + G, :].transpose(-2, -1)).transpose(-2, -1),
                            quantise(v[..., s:s + G, :])))
    """ + _RETURN, "must not call"),
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
    assert functions == {"gqa_from_mha", "append", "attend"}


def test_every_solution_imports_math_and_torch_only_and_reads_clean():
    """Each answer may import math and torch only: neither lmcourse's attention and caches nor
    Hugging Face's cache classes (DynamicCache, StaticCache, the sliding-window and quantised
    layers) can be reached; the cache tasks forbid PyTorch's routes by name."""
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
                         "from transformers.cache_utils import QuantizedLayer",
                         "from transformers import DynamicCache",
                         "from lmcourse.attention import MultiHeadAttention",
                         "from lmcourse.generation import generate, LayerKVCache",
                         "import numpy as np"):
            assert read_cell(shortcut, rules), (info["task"], shortcut)
    infos = {cell_info(c)["task"]: cell_info(c) for c in cells}
    assert set(infos) == {"gqa", "kivi", "streaming"}
    shortcuts = {  # any attention of PyTorch's; PyTorch's quantisation, by name
        "streaming": ("out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)",
                      "from torch.nn.attention.flex_attention import flex_attention\nflex_attention(q, k, v)"),
        "kivi": ("y = torch.fake_quantize_per_channel_affine(x, s, z, 0, 0, 3)",
                 "q = torch.quantize_per_channel(x, s, z, 0, torch.quint8)",
                 "obs = torch.ao.quantization.observer.PerChannelMinMaxObserver(ch_axis=0)"),
    }
    for task, lines in shortcuts.items():
        rules = Rules(allowed=frozenset(infos[task]["allow"]), forbid=tuple(infos[task]["forbid"]))
        for shortcut in lines:
            assert read_cell(shortcut, rules), (task, shortcut)


@pytest.mark.slow
@group("08")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"gqa", "kivi", "streaming"}
    assert sum(r.max_points for r in rows.values()) == 13
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
    "08_gqa_head_by_head": ("gqa_from_mha", """
        # head by head: each head's rows picked out by index, each group's mean added up
        H = sum(len(group) for group in groups)
        Dh = proj_weight.shape[1] // H
        order = [h for group in groups for h in group]

        def head(x, part, h):  # part 0: queries, 1: keys, 2: values
            return x[(part * H + h) * Dh:(part * H + h + 1) * Dh]

        def convert(x):
            rows = [head(x, 0, h) for h in order]
            for part in (1, 2):
                for group in groups:
                    total = head(x, part, group[0]).clone()
                    for h in group[1:]:
                        total = total + head(x, part, h)
                    rows.append(total / len(group))
            return torch.cat(rows)

        proj = torch.cat([proj_weight[:, h * Dh:(h + 1) * Dh] for h in order], dim=1)
        return convert(qkv_weight), None if qkv_bias is None else convert(qkv_bias), proj
    """, "gqa"),
    "08_kivi_decoded_store": ("append", """
        # the complete groups kept decoded; a key channel's range taken over dim -2, no transposes
        if self.recent_k is not None:
            k, v = torch.cat([self.recent_k, k], dim=-2), torch.cat([self.recent_v, v], dim=-2)
        G, L = self.group, self.steps

        def snap(x, dim):
            low, high = x.amin(dim=dim, keepdim=True), x.amax(dim=dim, keepdim=True)
            width = high - low
            idx = torch.round((x - low) * L / torch.where(width > 0, width, torch.ones_like(width)))
            return torch.where(width > 0, low + idx * width / L, x)

        full = k.shape[-2] - k.shape[-2] % G
        for s in range(0, full, G):
            self.stored.append((snap(k[..., s:s + G, :], -2), snap(v[..., s:s + G, :], -1)))
        self.recent_k, self.recent_v = k[..., full:, :], v[..., full:, :]
        keys = torch.cat([a for a, _ in self.stored] + [self.recent_k], dim=-2)
        return keys, torch.cat([b for _, b in self.stored] + [self.recent_v], dim=-2)
    """, "kivi"),
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
