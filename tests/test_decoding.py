"""Decoding filters, sampling and beam search against loop-per-row float64 references."""

import itertools
import math

import pytest
import torch
from torch import nn

from lmcourse.decoding import (
    apply_repetition_penalty,
    apply_temperature,
    beam_search,
    distinct_n,
    filter_logits,
    min_p_filter,
    naive_top_p_filter_pooled,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from lmcourse.transformer import GPT, GPTConfig

INF = float("inf")


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- references, one row at a time
def ranked(row):
    """Token ids from the largest logit down; equal logits in id order."""
    return sorted(range(len(row)), key=lambda i: (-row[i], i))


def softmax_list(row):
    m = max(row)
    e = [math.exp(z - m) for z in row]
    return [x / sum(e) for x in e]


def ref_filter(logits, keep_ids_of_row):
    out = []
    for row in logits.tolist():
        keep = keep_ids_of_row(row)
        out.append([z if i in keep else -INF for i, z in enumerate(row)])
    return torch.tensor(out, dtype=logits.dtype)


def ref_top_k(logits, k):
    return ref_filter(logits, lambda row: set(ranked(row)[:k]))


def ref_top_p(logits, p):
    def keep(row):
        probs, kept, mass = softmax_list(row), set(), 0.0
        for i in ranked(row):
            if mass < p or p == 1:  # the mass of the tokens above has not yet reached p
                kept.add(i)
            mass += probs[i]
        return kept

    return ref_filter(logits, keep)


def ref_greedy(logits):
    return ref_filter(logits, lambda row: {ranked(row)[0]})


def ref_repetition(logits, previous, penalty):
    out = logits.tolist()
    for b, ids in enumerate(previous.tolist()):
        for i in set(ids):
            out[b][i] = out[b][i] / penalty if out[b][i] > 0 else out[b][i] * penalty
    return torch.tensor(out, dtype=logits.dtype)


# ---------------------------------------------------------------- filters
def test_temperature_matches_division_and_greedy_limit():
    z = randn(5, 11)
    for tau in (0.3, 1.0, 2.5):
        ref = torch.tensor([[x / tau for x in row] for row in z.tolist()], dtype=torch.float64)
        assert torch.equal(apply_temperature(z, tau), ref)
    assert torch.equal(apply_temperature(z, 0), ref_greedy(z))
    tied = torch.tensor([[3.0, 1.0, 3.0], [0.0, 2.0, 2.0]])  # ties: the first maximum stays
    assert torch.equal(apply_temperature(tied, 0), torch.tensor([[3.0, -INF, -INF], [-INF, 2.0, -INF]]))


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_top_k_matches_reference(k):
    z = randn(7, 11, seed=k)
    assert torch.equal(top_k_filter(z, k), ref_top_k(z, k))


@pytest.mark.parametrize("p", [1e-9, 0.1, 0.5, 0.8, 0.95, 0.999, 1.0])
def test_top_p_matches_reference(p):
    z = 2 * randn(7, 11, seed=3)
    assert torch.equal(top_p_filter(z, p), ref_top_p(z, p))


def test_top_k_keeps_all_when_k_at_least_vocab_and_exactly_k_on_ties():
    z = randn(3, 6)
    for k in (6, 100):
        out = top_k_filter(z, k)
        assert torch.equal(out, z) and out is not z
    tied = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    out = top_k_filter(tied, 2)
    assert out.isfinite().tolist() == [[False, True, True, False, False], [True, True, False, False, False]]
    assert torch.equal(out, ref_top_k(tied, 2))


def test_ties_go_to_the_lower_id_in_a_large_vocabulary():
    # large enough that an unstable sort would return tied ids in a scrambled order
    z = torch.zeros(2, 5000, dtype=torch.float64)
    z[:, ::7] = 1.0  # 715 tied maxima per row: ids 0, 7, 14, ...
    assert torch.equal(top_k_filter(z, 10).isfinite().nonzero()[:, 1], torch.arange(0, 70, 7).repeat(2))
    assert torch.equal(apply_temperature(z, 0).isfinite().nonzero()[:, 1], torch.tensor([0, 0]))
    flat = torch.zeros(1, 1000, dtype=torch.float64)  # mass 0.001 per token
    assert torch.equal(top_p_filter(flat, 0.0105).isfinite().nonzero()[:, 1], torch.arange(11))


def test_top_p_edge_cases():
    # p = 1 keeps a token whose probability underflows to 0 in float64
    z = torch.tensor([[0.0, -800.0, 1.0]], dtype=torch.float64)
    assert torch.equal(top_p_filter(z, 1.0), z)
    # a tiny p keeps exactly each row's top token
    w = randn(6, 9)
    assert torch.equal(top_p_filter(w, 1e-12), ref_greedy(w))
    # one dominant token reaches p by itself
    assert top_p_filter(torch.tensor([[0.0, 10.0, 0.0]]), 0.9).isfinite().tolist() == [[False, True, False]]
    # ties: four equal tokens, mass 0.25 each; p = 0.5 is reached by the first two ids
    assert top_p_filter(torch.zeros(1, 4), 0.5).isfinite().tolist() == [[True, True, False, False]]
    assert top_p_filter(torch.zeros(1, 4), 0.51).isfinite().tolist() == [[True, True, True, False]]


def test_filters_are_batch_correct_and_leave_input_alone():
    z = randn(8, 13, seed=7)
    prev = torch.randint(0, 13, (8, 5), generator=torch.Generator().manual_seed(1))
    z_before = z.clone()
    filters = [
        lambda x, b: apply_temperature(x, 0.7),
        lambda x, b: apply_temperature(x, 0),
        lambda x, b: top_k_filter(x, 3),
        lambda x, b: top_p_filter(x, 0.6),
        lambda x, b: apply_repetition_penalty(x, prev[b], 1.7),
    ]
    for f in filters:
        batched = f(z, slice(None))
        rows = torch.cat([f(z[b : b + 1], slice(b, b + 1)) for b in range(8)])
        assert torch.equal(batched, rows)
        assert torch.equal(z, z_before)


def test_naive_pooled_top_p_is_wrong_on_a_batch_and_right_for_one_row():
    z = 2 * randn(6, 10, seed=5)
    right, wrong = top_p_filter(z, 0.7), naive_top_p_filter_pooled(z, 0.7)
    assert not torch.equal(right, wrong)
    # the pooled ids are removed from every row: never more kept than the correct filter
    assert bool((wrong.isfinite() <= right.isfinite()).all())
    for b in range(6):
        row = z[b : b + 1]
        assert torch.equal(naive_top_p_filter_pooled(row, 0.7), top_p_filter(row, 0.7))


def test_errors_are_value_errors_with_a_message():
    z = randn(2, 5)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        apply_temperature(z, -0.5)
    with pytest.raises(ValueError, match="k >= 1"):
        top_k_filter(z, 0)
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="0 < p <= 1"):
            top_p_filter(z, p)
        with pytest.raises(ValueError, match="0 < p <= 1"):
            naive_top_p_filter_pooled(z, p)
    for penalty in (0.0, -1.0):
        with pytest.raises(ValueError, match="must be > 0"):
            apply_repetition_penalty(z, torch.zeros(2, 3, dtype=torch.long), penalty)
    with pytest.raises(ValueError, match="B = 2 rows"):
        apply_repetition_penalty(z, torch.zeros(3, 3, dtype=torch.long), 1.2)
    with pytest.raises(ValueError, match=r"token id 5 is out of range for a vocabulary of 5 ids \(valid: 0..4\)"):
        apply_repetition_penalty(z, torch.tensor([[0], [5]]), 1.2)
    with pytest.raises(ValueError, match=r"logits must be \(B, V\)"):
        top_k_filter(z[0], 2)
    with pytest.raises(ValueError, match="temperature"):
        sample_next(z, temperature=-1.0)


# ---------------------------------------------------------------- repetition penalty
def test_repetition_penalty_hand_worked_example():
    z = torch.tensor([[2.0, -1.0, 3.0, 0.0, -4.0], [1.0, 1.0, -2.0, 5.0, 0.5]])
    prev = torch.tensor([[0, 1, 1, 3], [3, 3, 3, 3]])
    # row 0: 2 / 2 = 1, -1 * 2 = -2 (once, although id 1 occurs twice), 0 stays 0;
    # row 1: only id 3, 5 / 2 = 2.5 (id 0 is in row 0's history, not row 1's)
    expected = torch.tensor([[1.0, -2.0, 3.0, 0.0, -4.0], [1.0, 1.0, -2.0, 2.5, 0.5]])
    assert torch.equal(apply_repetition_penalty(z, prev, 2.0), expected)
    assert torch.equal(apply_repetition_penalty(z, prev, 1.0), z)
    assert torch.equal(apply_repetition_penalty(z, prev[:, :0], 3.0), z)  # no history


def test_repetition_penalty_matches_reference():
    z = randn(6, 17, seed=2)
    prev = torch.randint(0, 17, (6, 9), generator=torch.Generator().manual_seed(3))
    for penalty in (0.5, 1.3, 4.0):
        assert torch.equal(apply_repetition_penalty(z, prev, penalty), ref_repetition(z, prev, penalty))


# ---------------------------------------------------------------- sampling
def test_sampling_is_reproducible_and_never_draws_a_removed_token():
    z = randn(4, 20, seed=4).repeat(500, 1)  # (2000, V): 500 draws per distinct row
    kwargs = dict(temperature=0.8, top_k=6, top_p=0.7)
    a = sample_next(z, generator=torch.Generator().manual_seed(0), **kwargs)
    b = sample_next(z, generator=torch.Generator().manual_seed(0), **kwargs)
    assert a.shape == (2000,) and torch.equal(a, b)
    allowed = top_p_filter(top_k_filter(apply_temperature(z, 0.8), 6), 0.7).isfinite()  # (2000, V)
    assert bool(allowed.gather(1, a[:, None]).all())
    # the filters run in the order temperature, top-k, top-p, then one multinomial draw
    probs = torch.softmax(top_p_filter(top_k_filter(z / 0.8, 6), 0.7), dim=-1)
    assert torch.equal(a, torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(0)).squeeze(-1))


def test_sampling_frequencies_follow_the_filtered_distribution():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)).repeat(20000, 1)
    ids = sample_next(z, top_k=3, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(ids, minlength=4).double() / 20000
    expected = torch.tensor([0.5, 0.3, 0.15, 0.0], dtype=torch.float64) / 0.95
    assert freq[3] == 0 and torch.allclose(freq, expected, atol=0.015)


def test_greedy_paths_take_the_argmax():
    z = randn(5, 9, seed=8)
    ref = torch.tensor([ranked(r)[0] for r in z.tolist()])
    assert torch.equal(sample_next(z, do_sample=False), ref)
    assert torch.equal(sample_next(z, temperature=0.0, top_p=0.3), ref)
    assert sample_next(torch.tensor([[1.0, 4.0, 4.0]]), do_sample=False).tolist() == [1]


# ---------------------------------------------------------------- beam search
class TableModel(nn.Module):
    """Next-token logits from a fixed float64 table indexed by the last two tokens."""

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        self.register_buffer("table", 2 * randn(vocab_size, vocab_size, vocab_size, seed=seed))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        prev = torch.cat([torch.zeros_like(ids[:, :1]), ids[:, :-1]], dim=1)  # (B, T)
        return self.table[prev, ids]  # (B, T, V)

    def log_prob(self, context: list[int], token: int) -> float:
        row = self.table[context[-2] if len(context) > 1 else 0, context[-1]].tolist()
        m = max(row)
        return row[token] - m - math.log(sum(math.exp(x - m) for x in row))


def exhaustive(model, prompt, V, L, length_penalty, eos_id):
    """Every possible continuation (stopping at the first EOS), scored and sorted best first."""
    hyps = []
    for n in range(1, L + 1):
        for new in itertools.product(range(V), repeat=n):
            if eos_id is not None and eos_id in new[:-1]:
                continue  # generation stops at the first EOS
            if n < L and (eos_id is None or new[-1] != eos_id):
                continue  # a short sequence must end in EOS
            seq, total = list(prompt), 0.0
            for tok in new:
                total += model.log_prob(seq, tok)
                seq.append(tok)
            hyps.append((total / n**length_penalty, seq))
    return sorted(hyps, key=lambda h: -h[0])


@pytest.mark.parametrize("length_penalty", [0.0, 0.5, 1.0, 2.0, -1.0])
@pytest.mark.parametrize("eos_id", [None, 1])
def test_beam_search_with_full_width_is_exhaustive_search(length_penalty, eos_id):
    V, L, prompt = 3, 3, [2, 0]
    model = TableModel(V, seed=11)
    ref = exhaustive(model, prompt, V, L, length_penalty, eos_id)
    seqs, scores = beam_search(
        model, torch.tensor([prompt]), L, num_beams=V**L, length_penalty=length_penalty, eos_id=eos_id
    )
    assert len(seqs) == len(ref) and scores.dtype == torch.float64
    torch.testing.assert_close(scores, torch.tensor([s for s, _ in ref], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    pad = 0 if eos_id is None else eos_id
    for row, (_, seq) in zip(seqs.tolist(), ref, strict=True):
        assert row == seq + [pad] * (len(prompt) + L - len(seq))


@pytest.mark.parametrize("eos_id", [None, 0, 1, 2, 3])
def test_beam_search_with_one_beam_is_greedy(eos_id):
    V, L = 4, 6
    model = TableModel(V, seed=12)
    ids = torch.tensor([[3, 1]])
    for _ in range(L):
        nxt = model(ids)[:, -1].argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if nxt.item() == eos_id:
            break
    seqs, scores = beam_search(model, torch.tensor([[3, 1]]), L, num_beams=1, eos_id=eos_id)
    assert torch.equal(seqs, ids)
    new = range(2, ids.shape[1])  # positions of the generated tokens
    total = sum(model.log_prob(ids[0, :t].tolist(), ids[0, t].item()) for t in new)
    assert math.isclose(scores.item(), total / len(new), rel_tol=1e-12)


def test_narrow_beam_returns_sorted_consistent_scores_and_rejects_batches():
    V, L = 5, 4
    model = TableModel(V, seed=13)
    seqs, scores = beam_search(model, torch.tensor([[0]]), L, num_beams=3, length_penalty=0.7, eos_id=4)
    assert len(seqs) == 3 and bool((scores[:-1] >= scores[1:]).all())
    for row, score in zip(seqs.tolist(), scores.tolist(), strict=True):
        new = row[1 : row.index(4, 1) + 1] if 4 in row[1:] else row[1:]
        total = sum(model.log_prob(row[: 1 + t], tok) for t, tok in enumerate(new))
        assert math.isclose(score, total / len(new) ** 0.7, rel_tol=1e-12)
    with pytest.raises(ValueError, match="one prompt of shape"):
        beam_search(model, torch.zeros(2, 3, dtype=torch.long), L, num_beams=2)
    with pytest.raises(ValueError, match="num_beams >= 1"):
        beam_search(model, torch.zeros(1, 3, dtype=torch.long), L, num_beams=0)


def test_beam_search_drives_the_course_gpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, context_length=16, d_model=16, n_layers=1, n_heads=2)).eval()
    prompt = torch.tensor([[1, 2, 3]])
    ids = prompt
    with torch.no_grad():
        for _ in range(5):
            ids = torch.cat([ids, sample_next(model(ids)[:, -1], do_sample=False)[:, None]], dim=1)
    seqs, _ = beam_search(model, prompt, 5, num_beams=1)
    assert torch.equal(seqs, ids)
    seqs, scores = beam_search(model, prompt, 5, num_beams=4, eos_id=0)
    assert seqs.shape[0] == 4 and torch.equal(seqs[:, :3], prompt.repeat(4, 1))


# ---------------------------------------------------------------- distinct-n
def test_distinct_n_hand_example():
    ids = [1, 2, 3, 1, 2, 3]
    assert distinct_n(ids, 1) == 3 / 6
    assert distinct_n(ids, 2) == 3 / 5  # (1,2) (2,3) (3,1) (1,2) (2,3)
    assert distinct_n(ids, 3) == 3 / 4  # (1,2,3) (2,3,1) (3,1,2) (1,2,3)
    assert distinct_n(torch.tensor(ids), 2) == 3 / 5
    assert distinct_n([7, 8, 9], 2) == 1.0 and distinct_n([4, 4, 4, 4], 1) == 0.25
    with pytest.raises(ValueError, match="n must be >= 1"):
        distinct_n(ids, 0)
    with pytest.raises(ValueError, match="no 4-grams"):
        distinct_n([1, 2, 3], 4)


# ---------------------------------------------------------------- the filter chain, in one place
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_filter_logits_is_temperature_then_top_k_then_top_p(dtype):
    z = randn(3, 9, seed=4).to(dtype)
    for t, k, p in itertools.product([0.4, 1.0, 2.5], [None, 1, 4, 9], [None, 0.3, 0.8, 1.0]):
        chain = apply_temperature(z, t)
        if k is not None:
            chain = top_k_filter(chain, k)
        if p is not None:
            chain = top_p_filter(chain, p)
        assert torch.equal(filter_logits(z, t, k, p), chain)
        # sample_next draws from exactly this: same generator state, same tokens
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        drawn = sample_next(z, temperature=t, top_k=k, top_p=p, generator=g1)
        direct = torch.multinomial(torch.softmax(chain, dim=-1), 1, generator=g2).squeeze(-1)
        assert torch.equal(drawn, direct)


def test_filter_logits_greedy_and_argument_checks():
    z = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 0.0, 1.0, 5.0]])
    greedy = filter_logits(z, temperature=0, top_k=3, top_p=0.5)  # top-k, top-p: nothing left to remove
    assert torch.equal(greedy, apply_temperature(z, 0))
    assert torch.equal(greedy.argmax(-1), sample_next(z, do_sample=False)) and greedy.argmax(-1).tolist() == [1, 3]
    assert torch.equal(filter_logits(z), z)  # no filter: the logits themselves
    for kwargs, msg in [({"temperature": -1}, "temperature must be >= 0"), ({"top_k": 0}, "k >= 1"),
                        ({"top_p": 0.0}, "0 < p <= 1"), ({"temperature": 0, "top_k": 0}, "k >= 1")]:
        with pytest.raises(ValueError, match=msg):
            filter_logits(z, **kwargs)
        with pytest.raises(ValueError, match=msg):
            sample_next(z, **kwargs)
    with pytest.raises(ValueError, match=r"logits must be \(B, V\)"):
        filter_logits(z[0])


# ---------------------------------------------------------------- token ids checked at every entry point
def test_entry_points_reject_out_of_range_ids():
    z = randn(1, 5)
    with pytest.raises(ValueError, match="token id 9 is out of range for a vocabulary of 5 ids"):
        apply_repetition_penalty(z, torch.tensor([[1, 9]]), 1.2)
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        apply_repetition_penalty(z, torch.tensor([[-1]]), 1.2)
    gpt = GPT(GPTConfig(vocab_size=9, context_length=8, d_model=16, n_layers=1, n_heads=2)).eval()
    with pytest.raises(ValueError, match="token id 9 is out of range for a vocabulary of 9 ids"):
        beam_search(gpt, torch.tensor([[1, 9]]), 2, num_beams=2)  # V from model.config
    # a plain callable: checked against the V of its first logits
    with pytest.raises(ValueError, match="token id 9 is out of range for a vocabulary of 5 ids"):
        beam_search(lambda ids: torch.zeros(*ids.shape, 5), torch.tensor([[1, 9]]), 2, num_beams=2)
    with pytest.raises(ValueError, match="token id -1 is out of range for a vocabulary of 4 ids"):
        beam_search(TableModel(4), torch.tensor([[2, -1]]), 2, num_beams=2)  # -1 would index the table's end


# ---------------------------------------------------------------- min-p, and Hugging Face as the reference
def test_min_p_matches_hugging_face_min_p_logits_warper():
    transformers = pytest.importorskip("transformers")
    z = 3 * randn(16, 40, seed=21)
    z[3, 5:] = -INF  # a row already filtered
    z[4] = 0.0  # all tied
    for dtype in (torch.float64, torch.float32):
        for min_p in (0.0, 0.01, 0.1, 0.3, 0.9, 1.0):
            zz = z.to(dtype)
            ref = transformers.MinPLogitsWarper(min_p)(None, zz.clone())
            assert torch.equal(min_p_filter(zz, min_p), ref)


def test_min_p_hand_example_and_properties():
    # probabilities 0.5, 0.2, 0.04, 0.26: threshold min_p * 0.5
    z = torch.log(torch.tensor([[0.5, 0.2, 0.04, 0.26]], dtype=torch.float64))
    assert min_p_filter(z, 0.1).isfinite().tolist() == [[True, True, False, True]]  # 0.05
    assert min_p_filter(z, 0.5).isfinite().tolist() == [[True, False, False, True]]  # 0.25
    assert min_p_filter(z, 1.0).isfinite().tolist() == [[True, False, False, False]]
    assert torch.equal(min_p_filter(z, 0.0), z)
    # the kept set is z_v >= z_max + ln(min_p), so after temperature tau it grows with tau
    w = randn(6, 30, seed=22)
    for tau in (0.5, 1.0, 2.0):
        kept = min_p_filter(w / tau, 0.1).isfinite()
        assert torch.equal(kept, w >= w.amax(-1, keepdim=True) + tau * math.log(0.1))
    sizes = [min_p_filter(w / tau, 0.1).isfinite().sum().item() for tau in (0.5, 1.0, 2.0)]
    assert sizes[0] < sizes[1] < sizes[2]
    # batch-correct: each row on its own threshold
    rows = torch.cat([min_p_filter(w[b : b + 1], 0.2) for b in range(6)])
    assert torch.equal(min_p_filter(w, 0.2), rows)
    for bad in (-0.1, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="min_p"):
            min_p_filter(w, bad)


def test_filter_chain_with_min_p_is_hugging_faces_warper_order():
    transformers = pytest.importorskip("transformers")
    z = 2 * randn(5, 30, seed=23)
    for t, k, p, m in [(0.7, 10, 0.9, 0.05), (1.3, None, 0.95, 0.1), (1.0, 5, None, 0.2)]:
        warpers = [transformers.TemperatureLogitsWarper(t)]
        if k is not None:
            warpers.append(transformers.TopKLogitsWarper(k))
        if p is not None:
            warpers.append(transformers.TopPLogitsWarper(p))
        warpers.append(transformers.MinPLogitsWarper(m))
        ref = z.clone()
        for w in warpers:
            ref = w(None, ref)
        ours = filter_logits(z, t, k, p, min_p=m)
        assert torch.equal(ours.isfinite(), ref.isfinite())
        torch.testing.assert_close(ours[ours.isfinite()], ref[ref.isfinite()], rtol=1e-12, atol=0)
        g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        drawn = sample_next(z, temperature=t, top_k=k, top_p=p, min_p=m, generator=g1)
        assert torch.equal(drawn, torch.multinomial(torch.softmax(ours, -1), 1, generator=g2).squeeze(-1))


def test_repetition_penalty_matches_hugging_face_not_ctrl():
    transformers = pytest.importorskip("transformers")
    z = randn(6, 17, seed=24)
    prev = torch.randint(0, 17, (6, 9), generator=torch.Generator().manual_seed(25))
    for penalty in (0.5, 1.3, 4.0):
        ref = transformers.RepetitionPenaltyLogitsProcessor(penalty)(prev, z.clone())
        assert torch.equal(apply_repetition_penalty(z, prev, penalty), ref)
    # CTRL's rule as written (Keskar et al., 2019) divides every seen logit by theta,
    # which raises a negative one: the sign-aware rule lowers both
    z = torch.tensor([[2.0, -2.0, 0.5]], dtype=torch.float64)
    seen = torch.tensor([[0, 1]])
    ctrl = z.clone()
    ctrl[0, :2] /= 1.3
    ours = apply_repetition_penalty(z, seen, 1.3)
    assert ctrl[0, 1] > z[0, 1] and ours[0, 1] < z[0, 1] and ours[0, 0] < z[0, 0]
