"""Positional encodings against their formulas, computed independently in float64."""

import math

import pytest
import torch

from lmcourse.positions import (
    ALiBi,
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    apply_rope_half,
    blend_frequencies,
    ntk_frequencies,
    rope_angles,
    rope_frequencies,
    rope_half_permutation,
    sinusoidal_shift_matrix,
    sinusoidal_table,
    yarn_attention_scale,
    yarn_frequencies,
)
from lmcourse.transformer import GPT, GPTConfig


def test_sinusoidal_table_matches_the_formula_in_float64():
    T, D = 50, 16
    table = sinusoidal_table(T, D, dtype=torch.float64)
    for pos in range(T):
        for i in range(D // 2):
            angle = pos / 10000 ** (2 * i / D)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)


def test_sinusoidal_module_extends_beyond_its_buffer():
    pos = SinusoidalPositions(d_model=8, context_length=4)
    torch.testing.assert_close(pos(3, offset=6), sinusoidal_table(9, 8)[6:])
    assert "table" not in pos.state_dict()  # derived, not saved


def test_learned_positions_refuse_unseen_positions():
    pos = LearnedPositions(context_length=4, d_model=2)
    assert pos(4).shape == (4, 2)
    with pytest.raises(ValueError, match="0..3"):
        pos(3, offset=2)


def test_rope_preserves_norms():
    x = torch.randn(2, 3, 20, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cos, sin = rope_angles(20, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_rope_dot_product_depends_only_on_the_offset():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    cos, sin = rope_angles(40, 8)
    rq = apply_rope(q.expand(40, 8), cos, sin)  # q at every position
    rk = apply_rope(k.expand(40, 8), cos, sin)
    scores = rq @ rk.T  # scores[m, n] = <R_m q, R_n k>
    for delta in (-5, 0, 3, 17):
        diagonal = torch.diagonal(scores, offset=-delta)  # all (m, n) with m - n = delta
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal))
    assert not torch.allclose(scores[5, 2], scores[5, 3])


def test_rope_is_a_rotation_by_pos_times_theta():
    # Pair i of position p rotated by p * 10000^(-2i/D), written out with complex numbers.
    D, T = 6, 7
    x = torch.randn(T, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = apply_rope(x, *rope_angles(T, D))
    for p in range(T):
        for i in range(D // 2):
            theta = p * 10000 ** (-2 * i / D)
            z = complex(x[p, 2 * i], x[p, 2 * i + 1]) * complex(math.cos(theta), math.sin(theta))
            assert out[p, 2 * i].item() == pytest.approx(z.real, abs=1e-12)
            assert out[p, 2 * i + 1].item() == pytest.approx(z.imag, abs=1e-12)


def test_rotary_module_offsets_and_extends():
    rope = RotaryEmbedding(d_head=4, context_length=8)
    q = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(3))
    rq, _ = rope(q, q, offset=10)  # beyond the stored table
    cos, sin = rope_angles(13, 4)
    torch.testing.assert_close(rq, apply_rope(q, cos[10:], sin[10:]))
    assert rope.state_dict() == {}


def _reference_slopes(n):
    """The slopes as written in the ALiBi paper's reference implementation."""
    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + _reference_slopes(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 8, 12, 16, 20])
def test_alibi_slopes_as_in_the_paper(n):
    torch.testing.assert_close(alibi_slopes(n), torch.tensor(_reference_slopes(n), dtype=torch.float32))


def test_alibi_slopes_for_eight_heads():
    assert alibi_slopes(8).tolist() == [2.0**-k for k in range(1, 9)]


def test_alibi_bias_is_minus_slope_times_distance():
    slopes = torch.tensor([0.5, 0.25])
    bias = ALiBi(2)(4)
    assert bias.shape == (2, 4, 4)
    for h, m in enumerate(alibi_slopes(2).tolist()):
        for i in range(4):
            for j in range(i + 1):
                assert bias[h, i, j].item() == pytest.approx(-m * (i - j))
    # queries that are the last 2 of 5 keys (a cache in front)
    torch.testing.assert_close(alibi_bias(slopes, 2, 5, offset=3), alibi_bias(slopes, 5)[:, 3:])



# ----------------------------------------------------------------------------------
# RoPE's two layouts, the shift matrix, position interpolation, no positions


def test_rope_half_equals_hugging_face_llama_float64():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    g = torch.Generator().manual_seed(0)
    B, H, T, Dh = 2, 3, 11, 8
    q = torch.randn(B, H, T, Dh, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, T, Dh, generator=g, dtype=torch.float64)
    # Hugging Face's tables, built as LlamaRotaryEmbedding builds them: freqs repeated over both halves
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh)
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq  # (T, Dh/2)
    emb = torch.cat((freqs, freqs), dim=-1)[None]  # (1, T, Dh)
    q_ref, k_ref = llama.apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    cos, sin = rope_angles(T, Dh)
    torch.testing.assert_close(apply_rope_half(q, cos, sin), q_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(apply_rope_half(k, cos, sin), k_ref, rtol=0, atol=1e-12)
    # and its rotate_half is the b -> (-b2, b1) inside apply_rope_half
    x = torch.randn(4, Dh, generator=g, dtype=torch.float64)
    zero, one = torch.zeros(1, Dh // 2, dtype=torch.float64), torch.ones(1, Dh // 2, dtype=torch.float64)
    torch.testing.assert_close(apply_rope_half(x, zero, one), llama.rotate_half(x), rtol=0, atol=0)


@pytest.mark.parametrize("d_head", [2, 8, 64])
def test_interleaved_and_half_split_rope_are_equal_up_to_a_permutation(d_head):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 20, d_head, generator=g, dtype=torch.float64)
    cos, sin = rope_angles(20, d_head, offset=7)
    perm = rope_half_permutation(d_head)
    assert sorted(perm.tolist()) == list(range(d_head))
    torch.testing.assert_close(apply_rope(x, cos, sin)[..., perm], apply_rope_half(x[..., perm], cos, sin),
                               rtol=0, atol=1e-12)
    if d_head > 2:  # and the layouts really differ: without the permutation they disagree
        assert not torch.allclose(apply_rope(x, cos, sin), apply_rope_half(x, cos, sin))


def test_rope_half_and_permutation_bad_input():
    cos, sin = rope_angles(4, 8)
    with pytest.raises(ValueError, match="coordinates"):
        apply_rope_half(torch.ones(4, 6), cos, sin)
    with pytest.raises(ValueError, match="even"):
        rope_half_permutation(5)


@pytest.mark.parametrize("k", [0, 1, 5, 40])
def test_sinusoidal_shift_matrix_moves_every_position_by_k(k):
    D = 16
    pe = sinusoidal_table(100 + k, D, dtype=torch.float64)
    M = sinusoidal_shift_matrix(k, D)
    torch.testing.assert_close(pe[:100] @ M.T, pe[k:], rtol=0, atol=1e-12)  # PE[p + k] = M_k PE[p], all p
    torch.testing.assert_close(M @ M.T, torch.eye(D, dtype=torch.float64), rtol=0, atol=1e-12)  # a rotation
    torch.testing.assert_close(sinusoidal_shift_matrix(2 * k, D), M @ M, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="even d_model"):
        sinusoidal_shift_matrix(k, 7)


def test_position_interpolation_scales_the_positions():
    cos, sin = rope_angles(40, 8, scale=0.25)
    cos_ref, sin_ref = rope_angles(10, 8)
    torch.testing.assert_close(cos[::4], cos_ref, rtol=0, atol=1e-12)  # position 4p reads as p
    torch.testing.assert_close(sin[::4], sin_ref, rtol=0, atol=1e-12)
    rope = RotaryEmbedding(d_head=8, context_length=10, scale=0.25)
    c_far, s_far = rope.angles(30, offset=10)  # computed on the fly, same scale
    torch.testing.assert_close(c_far.double(), cos[10:], rtol=0, atol=1e-6)
    torch.testing.assert_close(s_far.double(), sin[10:], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="scale must be positive"):
        rope_angles(4, 8, scale=0.0)


def test_no_positions_bidirectional_model_is_permutation_equivariant():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=16, d_model=16, n_layers=2, n_heads=2,
                          positional="none", causal=False)).double().eval()
    assert model.pos_emb is None and model.rotary is None and model.alibi is None
    assert model.num_params() < GPT(GPTConfig(vocab_size=11, context_length=16, d_model=16, n_layers=2,
                                              n_heads=2)).num_params()
    ids = torch.randint(0, 11, (1, 9), generator=torch.Generator().manual_seed(2))
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(ids[:, perm]), model(ids)[:, perm], rtol=0, atol=1e-12)


def test_no_positions_causal_model_still_tells_orders_apart():
    # the causal mask alone: the same tokens in another order give other logits at the last position
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=16, d_model=16, n_layers=2, n_heads=2,
                          positional="none")).double().eval()
    a = torch.tensor([[1, 2, 2, 2, 3]])
    b = torch.tensor([[2, 2, 1, 2, 3]])  # same multiset, same last token
    with torch.no_grad():
        assert not torch.allclose(model(a)[0, -1], model(b)[0, -1])
    with pytest.raises(ValueError, match="positional must be one of"):
        GPTConfig(positional="nope")


# ----------------------------------------------------------------------------------
# Reading longer windows: NTK-aware scaling, YaRN, blended frequencies


def _hf_rope_config(d_head, factor, trained_length, base=10000.0):
    llama = pytest.importorskip("transformers")
    return llama.LlamaConfig(hidden_size=4 * d_head, num_attention_heads=4, head_dim=d_head,
                             max_position_embeddings=int(factor * trained_length),
                             rope_parameters={"rope_type": "yarn", "rope_theta": base, "factor": factor,
                                              "original_max_position_embeddings": trained_length})


@pytest.mark.parametrize("d_head, factor, trained_length", [(16, 4.0, 32), (64, 8.0, 2048), (128, 2.0, 4096),
                                                             (8, 16.0, 100)])
def test_yarn_frequencies_and_temperature_match_hugging_face(d_head, factor, trained_length):
    rope_utils = pytest.importorskip("transformers.modeling_rope_utils")
    config = _hf_rope_config(d_head, factor, trained_length)
    inv_freq, attention_factor = rope_utils._compute_yarn_parameters(config)
    torch.testing.assert_close(yarn_frequencies(d_head, factor, trained_length), inv_freq.double(),
                               rtol=1e-6, atol=0)
    assert yarn_attention_scale(factor) == pytest.approx(attention_factor)


def test_ntk_aware_keeps_the_fastest_pair_and_slows_the_slowest_by_the_factor():
    plain, ntk = rope_frequencies(16), ntk_frequencies(16, 4.0)
    assert ntk[0] == plain[0]
    assert (plain / ntk)[-1].item() == pytest.approx(4.0)
    ratio = plain / ntk
    assert bool((ratio[1:] > ratio[:-1]).all())  # slowed more the slower the pair
    # a larger base, by hand: 10000 * 4^(16/14)
    torch.testing.assert_close(ntk, 1 / (10000.0 * 4 ** (16 / 14)) ** (torch.arange(0, 16, 2).double() / 16))


def test_blended_frequencies_and_a_rotary_embedding_built_from_them():
    theta = rope_frequencies(8)
    torch.testing.assert_close(blend_frequencies(theta, 4.0, torch.zeros(4)), theta / 4)  # every pair: PI
    torch.testing.assert_close(blend_frequencies(theta, 4.0, torch.ones(4)), theta)
    # RotaryEmbedding(freqs=theta / 4) == RotaryEmbedding(scale=1/4), inside and beyond its tables
    a = RotaryEmbedding(8, 16, freqs=theta / 4)
    b = RotaryEmbedding(8, 16, scale=0.25)
    for T, offset in [(16, 0), (5, 30)]:
        for x, y in zip(a.angles(T, offset), b.angles(T, offset), strict=True):
            torch.testing.assert_close(x, y.to(x.dtype))
    # attention_scale multiplies every score by its square
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 6, 8, generator=g, dtype=torch.float64)
    plain = RotaryEmbedding(8, 6).double()
    hot = RotaryEmbedding(8, 6, attention_scale=1.5).double()
    (q1, k1), (q2, k2) = plain(q, k), hot(q, k)
    # (the tables are stored in float32: equal to float32 rounding)
    torch.testing.assert_close(q2 @ k2.transpose(-1, -2), 2.25 * (q1 @ k1.transpose(-1, -2)), rtol=1e-6, atol=1e-6)


def test_context_extension_bad_input():
    with pytest.raises(ValueError, match="factor"):
        ntk_frequencies(16, 0.5)
    with pytest.raises(ValueError, match="one per pair"):
        blend_frequencies(rope_frequencies(8), 2.0, torch.ones(3))
    with pytest.raises(ValueError, match="one frequency per pair"):
        rope_angles(4, 8, freqs=torch.ones(3))
    with pytest.raises(ValueError, match="attention_scale"):
        RotaryEmbedding(8, 4, attention_scale=0.0)
    with pytest.raises(ValueError, match="fast > slow"):
        yarn_frequencies(16, 4.0, 32, fast=1.0, slow=2.0)
