"""Speculative decoding: greedy output equals the target's, sampled output follows the target's distribution."""

import itertools
import math

import pytest
import torch
from torch import nn

from lmcourse.decoding import filter_logits
from lmcourse.generation import generate
from lmcourse.ngram import NGramLM
from lmcourse.speculative import (
    NGramDraft,
    SpeculativeStats,
    expected_tokens_per_round,
    speculative_accept,
    speculative_generate,
)
from lmcourse.transformer import GPT, GPTConfig


def gpt(seed, d_model=32, n_layers=2, vocab_size=11, context_length=48):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length, d_model=d_model,
                         n_layers=n_layers, n_heads=2)).eval()


class TableModel(nn.Module):
    """Next-token logits from a fixed float64 table indexed by the last two tokens: ids (1, T) -> (1, T, V)."""

    def __init__(self, vocab_size, seed, scale=1.5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("table", scale * torch.randn(vocab_size, vocab_size, vocab_size, generator=g,
                                                          dtype=torch.float64))

    def forward(self, ids):
        prev = torch.cat([torch.zeros_like(ids[:, :1]), ids[:, :-1]], dim=1)  # (B, T)
        return self.table[prev, ids]  # (B, T, V)


def exact_joint(model, prompt, n, **filters):
    """P(x_1..x_n | prompt) of every continuation, in float64, one at a time (the reference)."""
    V = model.table.shape[-1]
    joint = {}
    for cont in itertools.product(range(V), repeat=n):
        seq, p = list(prompt), 1.0
        for tok in cont:
            z = model(torch.tensor([seq]))[:, -1]  # (1, V)
            p *= torch.softmax(filter_logits(z, **filters), dim=-1)[0, tok].item()
            seq.append(tok)
        joint[cont] = p
    return joint


def chi_square(counts, expected_probs, draws):
    """Pearson's statistic over the outcomes the reference gives probability > 0 (and the
    number of draws that landed on an outcome of probability 0, which must be none)."""
    stat, impossible = 0.0, 0
    for outcome, p in expected_probs.items():
        c = counts.get(outcome, 0)
        if p == 0:
            impossible += c
        else:
            stat += (c - draws * p) ** 2 / (draws * p)
    impossible += sum(c for o, c in counts.items() if o not in expected_probs)
    return stat, impossible


# Upper 0.1 % point of the chi-square distribution, Wilson-Hilferty approximation (exact to < 1 %)
def chi2_critical(dof, z=3.09):
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


# ---------------------------------------------------------------- the acceptance rule on its own
def random_probs(*shape, seed, sharp=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def wrong_accept(p, q, d, g):
    """A plausible wrong rule: on rejection, draw again from p instead of from max(0, p - q)."""
    p_d = p[:, 0].gather(-1, d).squeeze(-1)
    q_d = q[:, 0].gather(-1, d).squeeze(-1)
    u = torch.rand(len(p), dtype=torch.float64, generator=g)
    fresh = torch.multinomial(p[:, 0], 1, generator=g).squeeze(-1)
    return torch.where(u * q_d < p_d, d.squeeze(-1), fresh)


def test_accept_rule_emits_the_target_distribution_and_accepts_sum_min_p_q():
    B, V = 200_000, 6
    p = random_probs(V, seed=0, sharp=1.5).expand(B, 2, V)  # (B, k + 1, V), k = 1
    q = random_probs(V, seed=1, sharp=1.5).expand(B, 1, V)  # a different draft
    g = torch.Generator().manual_seed(2)
    d = torch.multinomial(q[:, 0], 1, replacement=True, generator=g)  # (B, 1) drafts from q
    n, nxt = speculative_accept(p, q, d, generator=g)
    first = torch.where(n == 1, d.squeeze(-1), nxt)  # the first token emitted
    freq = torch.bincount(first, minlength=V).double() / B
    target = p[0, 0]
    tv = 0.5 * (freq - target).abs().sum().item()
    stat = (((freq - target) * B) ** 2 / (B * target)).sum().item()
    assert tv < 0.005 and stat < chi2_critical(V - 1)
    # acceptance probability = sum_x min(p(x), q(x)) (Leviathan et al., definition of alpha)
    alpha = torch.minimum(p[0, 0], q[0, 0]).sum().item()
    assert abs(n.double().mean().item() - alpha) < 0.005
    # the test has power: the wrong rule fails it by far
    wrong = wrong_accept(p, q, d, torch.Generator().manual_seed(3))
    wfreq = torch.bincount(wrong, minlength=V).double() / B
    assert 0.5 * (wfreq - target).abs().sum().item() > 0.05
    assert (((wfreq - target) * B) ** 2 / (B * target)).sum().item() > 100 * chi2_critical(V - 1)


def test_accept_rule_by_hand():
    p = torch.tensor([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    q = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    # draft 1: p/q = 0.5 / 1; draft 2: p/q = 0.5 / 1. Count the outcomes over seeds.
    outcomes = {}
    for seed in range(2000):
        n, nxt = speculative_accept(p, q, torch.tensor([[1, 2]]), torch.Generator().manual_seed(seed))
        outcomes[(int(n), int(nxt))] = outcomes.get((int(n), int(nxt)), 0) + 1
    # n = 0: residual max(0, p_1 - q_1) = (0.5, 0, 0) -> token 0; n = 1: residual (0.2, 0.3, 0) / 0.5;
    # n = 2: bonus from p_3 -> token 0. Probabilities 0.5, 0.25 * (0.4, 0.6), 0.25.
    assert set(outcomes) == {(0, 0), (1, 0), (1, 1), (2, 0)}
    for key, prob in {(0, 0): 0.5, (1, 0): 0.1, (1, 1): 0.15, (2, 0): 0.25}.items():
        assert abs(outcomes[key] / 2000 - prob) < 0.04, (key, outcomes[key])
    # k = 0: a plain draw from p_1
    n, nxt = speculative_accept(p[:, :1], q[:, :0], torch.zeros(1, 0, dtype=torch.long))
    assert n.tolist() == [0] and nxt.tolist() in ([0], [1])


# ---------------------------------------------------------------- greedy: token for token
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_greedy_speculative_equals_target_greedy(k):
    target, draft = gpt(0), gpt(1, d_model=16, n_layers=1)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    for n_new in (1, 7, 30):
        ref = generate(target, prompt, n_new, do_sample=False)
        out, stats = speculative_generate(target, draft, prompt, n_new, k=k, do_sample=False)
        assert torch.equal(out, ref)
        assert stats.new_tokens == n_new == stats.accepted + stats.rounds
        assert 0 <= stats.accepted <= stats.drafted <= k * stats.rounds
        assert stats.rejected <= stats.rounds
        assert stats.drafted == 0 or stats.acceptance_rate <= stats.alpha <= 1
    # temperature 0 is greedy too, and the target as its own draft accepts everything
    out, stats = speculative_generate(target, target, prompt, 30, k=k, temperature=0)
    assert torch.equal(out, generate(target, prompt, 30, do_sample=False))
    assert stats.acceptance_rate == 1.0 and stats.rounds == math.ceil(30 / (k + 1))


def test_greedy_with_an_ngram_draft_and_a_plain_callable():
    target = gpt(2, vocab_size=7)
    data = torch.randint(0, 7, (400,), generator=torch.Generator().manual_seed(0))
    prompt = torch.tensor([[1, 2, 3]])
    ref = generate(target, prompt, 40, do_sample=False)
    for draft in (NGramLM(3, vocab_size=7).fit(data), NGramDraft(NGramLM(2, vocab_size=7).fit(data), data),
                  TableModel(7, seed=3)):
        out, stats = speculative_generate(target, draft, prompt, 40, k=3, do_sample=False)
        assert torch.equal(out, ref)
    # a plain callable as the target (run on the whole sequence each time)
    out, _ = speculative_generate(lambda ids: target(ids), gpt(4, vocab_size=7), prompt, 40, k=2, do_sample=False)
    assert torch.equal(out, ref)


@pytest.mark.slow
def test_greedy_on_the_shipped_gpt_with_a_4gram_draft():
    from lmcourse import load_pretrained
    from lmcourse.data import load_shakespeare
    from lmcourse.tokenization import shakespeare_char_tokenizer

    tok = shakespeare_char_tokenizer()
    model = load_pretrained("gpt_char")
    text = torch.tensor(tok.encode(load_shakespeare("val")))
    draft = NGramDraft(NGramLM(4, vocab_size=tok.vocab_size).fit(text), contexts_from=text)
    prompt = torch.tensor([tok.encode("ROMEO:\nWhat light is this")])
    out, stats = speculative_generate(model, draft, prompt, 100, k=4, do_sample=False)
    assert torch.equal(out, generate(model, prompt, 100, do_sample=False))
    assert stats.acceptance_rate > 0.2 and stats.tokens_per_round > 1.5


# ---------------------------------------------------------------- sampling: the target's distribution
@pytest.mark.slow  # 4 to 6 s each
@pytest.mark.parametrize("filters", [dict(temperature=1.0), dict(temperature=0.7, top_k=3),
                                     dict(temperature=1.3, top_p=0.8, min_p=0.05)])
def test_sampled_speculative_follows_the_target_distribution(filters):
    V, n_new, draws = 4, 3, 4000
    target, draft = TableModel(V, seed=10), TableModel(V, seed=11)
    prompt = [1, 2]
    exact = exact_joint(target, prompt, n_new, **filters)  # 64 outcomes
    drafts_own = exact_joint(draft, prompt, n_new, **filters)
    g = torch.Generator().manual_seed(0)
    counts, accepted, drafted = {}, 0, 0
    for _ in range(draws):
        out, stats = speculative_generate(target, draft, torch.tensor([prompt]), n_new, k=2, generator=g, **filters)
        key = tuple(out[0, 2:].tolist())
        counts[key] = counts.get(key, 0) + 1
        accepted, drafted = accepted + stats.accepted, drafted + stats.drafted
    support = sum(p > 0 for p in exact.values())
    stat, impossible = chi_square(counts, exact, draws)
    assert impossible == 0 and stat < chi2_critical(support - 1), (stat, support)
    tv = 0.5 * sum(abs(counts.get(o, 0) / draws - p) for o, p in exact.items())
    print(f"chi-square {stat:.1f} < {chi2_critical(support - 1):.1f} ({support - 1} dof), TV {tv:.4f}")
    assert tv < 0.06
    # the draft's own distribution is far from the target's, so the test could tell them apart
    tv_models = 0.5 * sum(abs(drafts_own[o] - p) for o, p in exact.items())
    assert tv_models > 3 * tv and 0 < accepted < drafted


def test_sampling_is_reproducible_with_a_seed():
    target, draft = gpt(5), gpt(6, d_model=16, n_layers=1)
    prompt = torch.tensor([[1, 2]])
    a, sa = speculative_generate(target, draft, prompt, 25, k=3, generator=torch.Generator().manual_seed(7))
    b, sb = speculative_generate(target, draft, prompt, 25, k=3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and sa == sb and a.shape == (1, 27)


# ---------------------------------------------------------------- the n-gram draft
def test_ngram_draft_table_is_exactly_the_ngram_distribution():
    data = torch.randint(0, 6, (300,), generator=torch.Generator().manual_seed(1))
    lm = NGramLM(3, vocab_size=6).fit(data)
    draft = NGramDraft(lm, contexts_from=data[:100])
    for ctx in ([], [4], [0, 1], [5, 5], [2, 3, 4, 1], data[:50].tolist()):
        ref = torch.log(lm.distribution(ctx))
        assert torch.allclose(draft.log_probs(ctx), ref, rtol=0, atol=1e-12)
    logits = draft.feed(torch.tensor([[1, 2, 3, 4]]), keep=0, last=3)  # (1, 3, V)
    assert torch.allclose(logits[0], torch.stack([torch.log(lm.distribution([1, 2, 3][:j])) for j in (2, 3)]
                                                 + [torch.log(lm.distribution([3, 4]))]), atol=1e-12)
    logits = draft.feed(torch.tensor([[0]]), keep=2, last=1)  # forget 3, 4: the context is now 1, 2, 0
    assert torch.allclose(logits[0, 0], torch.log(lm.distribution([2, 0])), atol=1e-12)


# ---------------------------------------------------------------- errors
def test_bad_arguments_raise_clear_errors():
    target, draft = gpt(0), gpt(1, d_model=16, n_layers=1)
    p = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match=r"shape \(1, T\)"):
        speculative_generate(target, draft, torch.tensor([[1, 2], [3, 4]]), 5)
    with pytest.raises(ValueError, match=r"shape \(1, T\)"):
        speculative_generate(target, draft, torch.tensor([1, 2]), 5)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        speculative_generate(target, draft, p, 5, k=0)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
        speculative_generate(target, draft, p, -1)
    with pytest.raises(ValueError, match="do not fit the target's context of 48"):
        speculative_generate(target, draft, p, 47)
    with pytest.raises(ValueError, match=r"draft's vocabulary \(7 ids\) must be the target's \(11 ids\)"):
        speculative_generate(target, gpt(1, vocab_size=7), p, 5)
    with pytest.raises(ValueError, match="token id 11 is out of range"):
        speculative_generate(target, draft, torch.tensor([[1, 11]]), 5)
    with pytest.raises(ValueError, match="0 < p <= 1"):
        speculative_generate(target, draft, p, 5, top_p=0.0)
    with pytest.raises(ValueError, match="min_p"):
        speculative_generate(target, draft, p, 5, min_p=1.5)
    with pytest.raises(TypeError, match="cannot draft or verify with a str"):
        speculative_generate(target, "gpt", p, 5)
    with pytest.raises(ValueError, match="bidirectional"):
        speculative_generate(target, GPT(GPTConfig(vocab_size=11, n_heads=2, causal=False)), p, 5)
    with pytest.raises(ValueError, match="draft_probs must be"):
        speculative_accept(torch.ones(1, 3, 4), torch.ones(1, 1, 4), torch.zeros(1, 1, dtype=torch.long))
    assert SpeculativeStats().acceptance_rate != SpeculativeStats().acceptance_rate  # nan: nothing drafted
    # a target in training mode is run in eval mode and left in training mode
    target.train()
    out, _ = speculative_generate(target, draft, p, 5, do_sample=False)
    assert target.training and torch.equal(out, generate(target, p, 5, do_sample=False))


def test_expected_tokens_per_round_matches_the_acceptance_rule():
    # k drafts each accepted with probability alpha: simulate the rule, compare with eq. 1
    g = torch.Generator().manual_seed(0)
    for alpha, k in [(0.3, 2), (0.6, 4), (0.9, 3)]:
        accepted = (torch.rand(100_000, k, generator=g) < alpha).long().cumprod(-1).sum(-1)
        assert abs((accepted + 1).double().mean().item() - expected_tokens_per_round(alpha, k)) < 0.02
    assert expected_tokens_per_round(0.0, 5) == 1.0 and expected_tokens_per_round(1.0, 5) == 6.0
    with pytest.raises(ValueError, match="alpha"):
        expected_tokens_per_round(1.5, 2)
