"""Attention against independent references: PyTorch's fused kernel, hand-made masks."""

import pytest
import torch
import torch.nn.functional as F

from lmcourse.attention import HeadLoopAttention, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from lmcourse.transformer import GPT, GPTConfig


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_causal_mask_is_lower_triangle_with_diagonal():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    expected = torch.tensor([[i >= j for j in range(4)] for i in range(4)])
    assert torch.equal(m, expected)
    with pytest.raises(ValueError):
        causal_mask(0)


def test_explicit_attention_equals_torch_causal():
    q, k, v = (randn(2, 3, 7, 8, seed=s) for s in range(3))
    out, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(7))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_explicit_attention_with_bias_equals_torch_float_mask():
    q, k, v = (randn(2, 5, 4, seed=s) for s in range(3))
    bias = randn(5, 5, seed=9)
    out, _ = scaled_dot_product_attention(q, k, v, bias=bias)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bias))


def test_weights_rows_sum_to_one_and_respect_the_mask():
    q, k, v = (randn(3, 6, 4, seed=s) for s in range(3))
    _, w = scaled_dot_product_attention(q, k, v, mask=causal_mask(6))
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 6, dtype=w.dtype))
    assert torch.all(w[:, ~causal_mask(6)] == 0)


def test_a_row_with_nothing_to_attend_to_is_an_error_not_nan():
    q = k = v = randn(3, 4)
    mask = causal_mask(3).clone()
    mask[1] = False
    with pytest.raises(ValueError, match="all False"):
        scaled_dot_product_attention(q, k, v, mask=mask)


@pytest.mark.parametrize("causal", [True, False])
def test_loop_over_heads_equals_batched(causal):
    torch.manual_seed(0)
    loop = HeadLoopAttention(d_model=12, n_heads=3, causal=causal).double()
    batched = MultiHeadAttention.from_head_loop(loop)
    x = randn(2, 5, 12)
    torch.testing.assert_close(batched(x), loop(x))
    y_loop, w_loop = loop(x, need_weights=True)
    y_b, w_b = batched(x, need_weights=True)
    torch.testing.assert_close(y_b, y_loop)
    torch.testing.assert_close(w_b, w_loop)
    torch.testing.assert_close(batched(x), y_b)  # fused kernel == explicit path


def test_batched_bias_path_equals_explicit_path():
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=8, n_heads=2).double()
    x, bias = randn(2, 5, 8), randn(2, 5, 5, seed=3)
    fused = attn(x, bias=bias)
    explicit, _ = attn(x, bias=bias, need_weights=True)
    torch.testing.assert_close(fused, explicit)


def test_attention_does_not_leak_the_future():
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=8, n_heads=2).double()
    x = randn(1, 6, 8)
    changed = x.clone()
    changed[:, 4] += 1.0
    a, b = attn(x), attn(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope", "alibi"])
def test_full_model_does_not_leak_the_future(positional):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, context_length=10, d_model=16, n_layers=2, n_heads=2, positional=positional)
    model = GPT(cfg).eval()
    ids = torch.randint(0, 11, (2, 10), generator=torch.Generator().manual_seed(1))
    for t in range(9):
        changed = ids.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % 11
        a, b = model(ids), model(changed)
        assert torch.equal(a[:, : t + 1], b[:, : t + 1]), f"position {t} saw token {t + 1}"
        assert not torch.allclose(a[:, t + 1], b[:, t + 1])


def test_bad_head_count():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        MultiHeadAttention(d_model=10, n_heads=3)
