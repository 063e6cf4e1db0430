"""lmcourse.costs: depth of a computation, layer costs, peak memory and tiled attention."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lmcourse.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from lmcourse.costs import graph_depth, layer_cost, peak_memory, tiled_attention
from lmcourse.lstm import ScratchLSTM


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_graph_depth_of_hand_built_graphs():
    x = torch.ones(3, requires_grad=True)
    assert graph_depth(x * 2) == 1
    assert graph_depth(((x * 2) + 1).sum()) == 3  # mul -> add -> sum
    assert graph_depth(x * 2 + x * 3) == 2  # two muls side by side, then add
    y = x
    for _ in range(50):
        y = torch.tanh(y)
    assert graph_depth(y) == 50


def test_graph_depth_grows_linearly_for_a_recurrence_and_not_for_attention():
    lstm = ScratchLSTM(4, 4)
    depths = []
    for T in (3, 6, 12):
        x = torch.randn(1, T, 4, generator=_gen(), requires_grad=True)
        out, _ = lstm(x, (torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)))
        depths.append(graph_depth(out))
    assert depths[1] - depths[0] == (depths[2] - depths[1]) // 2 > 0
    attn = [graph_depth(scaled_dot_product_attention(*(torch.randn(T, 4, requires_grad=True),) * 3,
                                                     mask=causal_mask(T))[0]) for T in (3, 30)]
    assert attn[0] == attn[1]


def test_graph_depth_bad_input():
    with pytest.raises(ValueError, match="no autograd graph"):
        graph_depth(torch.ones(2))
    with pytest.raises(TypeError, match="must be a tensor"):
        graph_depth([1.0])


def test_layer_cost_formulas():
    assert layer_cost("rnn", 10, 4).multiply_adds == 2 * 10 * 16
    assert layer_cost("lstm", 10, 4).multiply_adds == 8 * 10 * 16
    a = layer_cost("attention", 10, 4)
    assert (a.multiply_adds, a.sequential_steps, a.max_path_length) == (4 * 10 * 16 + 2 * 100 * 4, 1, 1)
    r = layer_cost("lstm", 10, 4)
    assert (r.sequential_steps, r.max_path_length) == (10, 9)
    # the projections and the explicit attention's matrix products do exactly this many
    # multiply-adds (a FLOP counter agrees)
    layer = MultiHeadAttention(d_model=8, n_heads=1)
    x = torch.randn(1, 16, 8)
    with FlopCounterMode(display=False) as counter:
        q, k, v = layer.qkv(x).split(8, dim=-1)
        out, _ = scaled_dot_product_attention(q, k, v)
        layer.proj(out)
    assert counter.get_total_flops() == 2 * layer_cost("attention", 16, 8).multiply_adds  # 1 MAC = 2 FLOPs
    with pytest.raises(ValueError, match="kind must be"):
        layer_cost("conv", 4, 4)
    with pytest.raises(ValueError, match="T and d must be >= 1"):
        layer_cost("rnn", 0, 4)


def test_peak_memory_by_hand():
    x = torch.zeros(1000)  # 4000 bytes
    with torch.no_grad():
        r = peak_memory(lambda: (x + 1) * 2)
    assert r.peak_bytes == 8000 and [a[1] for a in r.allocations] == [(1000,), (1000,)]

    def chain():
        y = x + 1
        for _ in range(5):
            y = y * 2  # the old y is freed as soon as the new one exists
        return y

    assert peak_memory(chain).peak_bytes == 8000
    assert len(peak_memory(chain).allocations) == 6
    # views and in-place operations allocate nothing new
    assert peak_memory(lambda: x.view(10, 100).t().add_(0)).peak_bytes == 0

    def hold_all():
        return [x + i for i in range(4)]

    assert peak_memory(hold_all).peak_bytes == 16000


def test_peak_memory_of_explicit_attention_counts_its_score_matrices():
    B, H, T, d = 1, 2, 64, 8
    q, k, v = (torch.randn(B, H, T, d, generator=_gen(i)) for i in range(3))
    mask = causal_mask(T)
    with torch.no_grad():
        r = peak_memory(lambda: scaled_dot_product_attention(q, k, v, mask=mask))
    one = B * H * T * T * 4
    float_scores = [a for a in r.allocations if a[2] == one]
    assert len(float_scores) == 4  # q k^T, / sqrt(d), masked_fill, softmax
    assert 2 * one <= r.peak_bytes < 3 * one  # two alive at once, plus the boolean masks


def test_tiled_attention_memory_grows_linearly_explicit_quadratically():
    peaks = {}
    for T in (128, 256):
        q, k, v = (torch.randn(1, 2, T, 8, generator=_gen(i)) for i in range(3))
        mask = causal_mask(T)
        with torch.no_grad():
            explicit = peak_memory(lambda q=q, k=k, v=v, m=mask: scaled_dot_product_attention(q, k, v, mask=m))
            tiled = peak_memory(lambda q=q, k=k, v=v: tiled_attention(q, k, v, block=16))
        peaks[T] = (explicit.peak_bytes, tiled.peak_bytes)
    assert peaks[256][0] == pytest.approx(4 * peaks[128][0], rel=0.05)
    assert peaks[256][1] == pytest.approx(2 * peaks[128][1], rel=0.05)
    assert peaks[256][1] < peaks[256][0] / 4


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block", [1, 5, 16, 100])
def test_tiled_attention_equals_torch_float64(causal, block):
    q, k, v = (torch.randn(2, 3, 16, 8, generator=_gen(i), dtype=torch.float64) for i in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(tiled_attention(q, k, v, block=block, causal=causal), ref, rtol=0, atol=1e-12)


def test_tiled_attention_survives_large_scores():
    # the running maximum keeps exp() finite where a naive exp(scores) overflows
    q = k = torch.full((1, 4, 2), 100.0)
    v = torch.randn(1, 4, 2, generator=_gen())
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(tiled_attention(q, k, v, block=2), ref)


def test_tiled_attention_bad_input():
    with pytest.raises(ValueError, match="do not fit"):
        tiled_attention(torch.ones(3, 2), torch.ones(3, 4), torch.ones(3, 2))
    with pytest.raises(ValueError, match="block must be >= 1"):
        tiled_attention(torch.ones(3, 2), torch.ones(3, 2), torch.ones(3, 2), block=0)
    with pytest.raises(ValueError, match="as many queries as keys"):
        tiled_attention(torch.ones(2, 2), torch.ones(3, 2), torch.ones(3, 2))
