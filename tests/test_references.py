"""The course's models against independent references, in float64.

* the GPT against Hugging Face's GPT-2 (``transformers.GPT2LMHeadModel``) with the
  same weights loaded by the export's mapping (:mod:`lmcourse.hf_export`): the same logits;
* :class:`~lmcourse.attention.MultiHeadAttention` against ``torch.nn.MultiheadAttention``;
* the KV cache: cached step-by-step logits equal the full forward's, for every
  positional scheme;
* ALiBi's slopes and bias against the paper's formula, written out in plain Python.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmcourse.attention import MultiHeadAttention
from lmcourse.generation import KVCache, generate
from lmcourse.hf_export import gpt2_config, gpt2_state_dict
from lmcourse.positions import alibi_bias, alibi_slopes
from lmcourse.transformer import GPT, POSITIONAL, GPTConfig


def randomize_(model: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    """Overwrite every parameter with seeded noise (norm gains around 1), so no bias,
    gain or position is left at an initial value that would hide a copying mistake."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied matrix is listed once
            noise = std * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            is_norm_gain = p.dim() == 1 and name.endswith("weight")
            p.copy_(noise + 1.0 if is_norm_gain else noise)
    return model


def random_ids(vocab_size: int, B: int, T: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------
# The GPT against Hugging Face's GPT-2


def _output_matrix(model: GPT) -> torch.Tensor:
    """The ``(V, D)`` matrix of the output layer: the head's, or the embedding when tied without a head."""
    head = getattr(model, "head", None)
    return model.tok_emb.weight if head is None else head.weight


def _hf_gpt2(model: GPT):
    """Hugging Face's GPT-2 built from the config that :func:`lmcourse.hf_export.gpt2_config` writes, in
    float64, holding ``model``'s weights as :func:`lmcourse.hf_export.gpt2_state_dict` names them (the
    mapping ``python -m lmcourse export`` writes to disk)."""
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.GPT2Config.from_dict(
        gpt2_config(model.config), use_cache=False,
        attn_implementation="eager",  # HF's own written-out attention, not the fused kernel lmcourse calls
    )
    # the facts the mapping rests on, stated here too: a wrong one fails the logits below anyway
    assert hf_config.activation_function == "gelu"  # exact GELU, as lmcourse's MLP (F.gelu), not "gelu_new"
    assert hf_config.layer_norm_epsilon == 1e-5  # torch's LayerNorm default, which lmcourse uses
    hf = transformers.GPT2LMHeadModel(hf_config).double().eval()
    assert hf.config._attn_implementation == "eager"
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(model, dtype=torch.float64), strict=False)
    assert not unexpected, f"names HF's GPT-2 does not have: {unexpected}"
    # every weight of the reference is set; a tied model's head is the embedding, not stored
    assert missing == (["lm_head.weight"] if model.config.tie_weights else []), missing
    return hf


@pytest.mark.parametrize("tie_weights", [True, False])
def test_gpt_equals_hugging_face_gpt2(tie_weights):
    config = GPTConfig(vocab_size=23, context_length=12, d_model=24, n_layers=2, n_heads=3, positional="learned",
                       bias=True, tie_weights=tie_weights, dropout=0.0)
    torch.manual_seed(0)
    model = randomize_(GPT(config).double().eval(), seed=1)
    hf = _hf_gpt2(model)
    # the reference's output layer is the matrix ours uses, shared with the embedding exactly when tied
    torch.testing.assert_close(hf.lm_head.weight, _output_matrix(model), rtol=0, atol=0)
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) == tie_weights
    assert sum(p.numel() for p in hf.parameters()) == model.num_params()

    ids = random_ids(config.vocab_size, B=3, T=config.context_length, seed=2)
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(input_ids=ids, use_cache=False).logits
    assert ours.dtype == theirs.dtype == torch.float64
    assert ours.abs().max() > 0.1  # not a trivially small output
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    with torch.no_grad():  # a shorter sequence uses the first rows of the position table
        torch.testing.assert_close(model(ids[:, :5]), hf(input_ids=ids[:, :5], use_cache=False).logits,
                                   rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------
# Multi-head attention against torch.nn.MultiheadAttention


@pytest.mark.parametrize("causal", [True, False])
def test_multi_head_attention_equals_torch_multihead_attention(causal):
    D, H, B, T = 24, 4, 3, 7
    torch.manual_seed(0)
    ours = randomize_(MultiHeadAttention(D, H, causal=causal, bias=True).double().eval(), seed=3)
    ref = nn.MultiheadAttention(D, H, bias=True, batch_first=True).double().eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)  # (3D, D): [W_q; W_k; W_v], heads contiguous in each
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    # torch's boolean attn_mask: True where attending is NOT allowed (the strict upper triangle)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1) if causal else None

    with torch.no_grad():
        y_ref, w_ref = ref(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=True)
        _, w_ref_heads = ref(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)
        y_fast = ours(x)  # the fused-kernel path
        y, w = ours(x, need_weights=True)  # the explicit path: w is (B, H, T, T)
    assert w.shape == w_ref_heads.shape == (B, H, T, T)
    torch.testing.assert_close(y_fast, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(w, w_ref_heads, rtol=0, atol=1e-12)
    torch.testing.assert_close(w.mean(dim=1), w_ref, rtol=0, atol=1e-12)
    if causal:
        assert torch.all(w[..., mask] == 0)
    else:
        assert torch.all(w > 0)


# ----------------------------------------------------------------------------------
# The KV cache in float64


def _small_gpt(positional: str, seed: int) -> GPT:
    config = GPTConfig(vocab_size=17, context_length=10, d_model=24, n_layers=2, n_heads=3, positional=positional)
    torch.manual_seed(seed)
    return randomize_(GPT(config).double().eval(), seed=seed)


@pytest.mark.parametrize("positional", POSITIONAL)
def test_kv_cache_in_float64_step_logits_equal_the_full_forward(positional):
    model = _small_gpt(positional, seed=5)
    C, V = model.config.context_length, model.config.vocab_size
    ids = random_ids(V, B=2, T=C, seed=6)
    cache = KVCache.for_model(model, batch_size=2)
    assert cache.layers[0].k.dtype == torch.float64
    with torch.no_grad():
        full = model(ids)  # (B, C, V), no cache
        steps = []
        for t in range(C):  # one token at a time, from an empty cache
            steps.append(model(ids[:, t : t + 1], offset=cache.length, cache=cache))
            assert cache.length == t + 1
    steps = torch.cat(steps, dim=1)
    assert full.dtype == steps.dtype == torch.float64
    torch.testing.assert_close(steps, full, rtol=0, atol=1e-12)
    assert not torch.allclose(full[:, 0], full[:, -1])  # the positions do give different logits


@pytest.mark.parametrize("positional", POSITIONAL)
def test_kv_cache_in_float64_greedy_tokens_equal_uncached(positional):
    model = _small_gpt(positional, seed=7)
    C, V = model.config.context_length, model.config.vocab_size
    prompt = random_ids(V, B=3, T=4, seed=8)
    n_new = 2 * C  # past the context length: the window slides
    cached = generate(model, prompt, n_new, do_sample=False, use_cache=True)
    uncached = generate(model, prompt, n_new, do_sample=False, use_cache=False)
    assert cached.shape == (3, 4 + n_new)
    assert torch.equal(cached[:, :4], prompt)
    assert torch.equal(cached, uncached)
    # the reference loop, written out: argmax of the full forward on the last C tokens
    ids = prompt
    with torch.no_grad():
        for _ in range(n_new):
            ids = torch.cat([ids, model(ids[:, -C:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, ids)
    assert len(set(cached[:, 4:].flatten().tolist())) > 1  # not one token repeated


# ----------------------------------------------------------------------------------
# ALiBi against the paper's formula


def paper_slopes(n: int) -> list[float]:
    """Press et al. (2022): for n a power of two, 2^(-8i/n) for i = 1..n; otherwise the
    slopes of the closest power of two p below n, then every other slope of 2p's."""
    def geometric(m: int) -> list[float]:
        return [2.0 ** (-8.0 * i / m) for i in range(1, m + 1)]

    p = 1
    while 2 * p <= n:
        p *= 2
    if p == n:
        return geometric(n)
    return geometric(p) + geometric(2 * p)[0::2][: n - p]


def test_paper_slopes_by_hand():
    assert paper_slopes(1) == [2.0**-8]
    assert paper_slopes(3) == [2.0**-4, 2.0**-8, 2.0**-2]
    assert paper_slopes(5) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 12])
def test_alibi_slopes_follow_the_paper(n):
    got = alibi_slopes(n).tolist()
    expected = paper_slopes(n)
    assert len(got) == n
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-6, abs=0)  # the slopes are float32


@pytest.mark.parametrize("n", [1, 3, 8, 12])
def test_alibi_bias_is_minus_slope_times_distance_entry_by_entry(n):
    slopes = paper_slopes(n)
    s = torch.tensor(slopes, dtype=torch.float64)

    def check(bias: torch.Tensor, Tq: int, Tk: int, offset: int) -> None:
        assert bias.shape == (n, Tq, Tk)
        for h in range(n):
            for a in range(Tq):
                i = offset + a  # the query's position; keys sit at 0..Tk-1
                for j in range(Tk):  # above and below the diagonal
                    assert bias[h, a, j].item() == pytest.approx(-slopes[h] * abs(i - j), rel=1e-15, abs=0)

    check(alibi_bias(s, 6), 6, 6, 0)
    check(alibi_bias(s, 3, 9, offset=4), 3, 9, 4)  # queries at 4..6 of keys 0..8: keys after them too
    check(alibi_bias(s, 2, offset=5), 2, 7, 5)  # Tk defaults to offset + Tq
    # the module's slopes, in float32, give the same entries to float32 precision
    torch.testing.assert_close(alibi_bias(alibi_slopes(n), 6).double(), alibi_bias(s, 6), rtol=1e-6, atol=0)
