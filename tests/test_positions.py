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
    rope_angles,
    sinusoidal_table,
)


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
