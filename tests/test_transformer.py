"""The GPT model: shapes, errors, parameter counts, weight tying through save/load and moves."""

import io

import pytest
import torch

from lmcourse.transformer import GPT, GPTConfig

SMALL = dict(vocab_size=13, context_length=8, d_model=16, n_layers=2, n_heads=4)


def ids_for(cfg, B=2, T=None, seed=0):
    return torch.randint(0, cfg.vocab_size, (B, T or cfg.context_length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope", "alibi"])
def test_logits_shape(positional):
    cfg = GPTConfig(**SMALL, positional=positional)
    model = GPT(cfg)
    assert model(ids_for(cfg, T=5)).shape == (2, 5, 13)


def test_config_is_frozen_and_validated():
    cfg = GPTConfig(**SMALL)
    with pytest.raises(AttributeError):
        cfg.d_model = 32
    with pytest.raises(ValueError, match="positional"):
        GPTConfig(**SMALL, positional="absolute")
    with pytest.raises(ValueError, match="multiple of n_heads"):
        GPTConfig(vocab_size=5, d_model=10, n_heads=4)


def test_too_long_a_sequence_names_both_lengths():
    cfg = GPTConfig(**SMALL)
    with pytest.raises(ValueError, match=r"9.*8"):
        GPT(cfg)(ids_for(cfg, T=9))


def test_gpt2_small_parameter_count_on_the_meta_device():
    cfg = GPTConfig(vocab_size=50257, context_length=1024, d_model=768, n_layers=12, n_heads=12)
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_params() == 124_439_808  # the published GPT-2 small (124M)


def test_tying_removes_exactly_v_times_d_parameters():
    tied = GPT(GPTConfig(**SMALL, tie_weights=True))
    untied = GPT(GPTConfig(**SMALL, tie_weights=False))
    assert tied.head is None and not any(n.startswith("head") for n, _ in tied.named_parameters())
    assert untied.head.weight is not untied.tok_emb.weight
    assert untied.num_params() - tied.num_params() == 13 * 16


def _tied_logits_use_the_embedding(model, cfg):
    """The tied model's logits are h E^T with E its current embedding matrix."""
    x = ids_for(cfg)
    with torch.no_grad():
        model.tok_emb.weight.mul_(2.0)  # change E: the output layer must change with it
        h = model.tok_emb(x)
        if model.pos_emb is not None:
            h = h + model.pos_emb(x.shape[1])
        for block in model.blocks:
            h, _ = block(h)
        expected = model.ln_f(h) @ model.tok_emb.weight.T
        torch.testing.assert_close(model(x), expected)


def test_tying_survives_a_state_dict_round_trip():
    cfg = GPTConfig(**SMALL)
    torch.manual_seed(0)
    model = GPT(cfg)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    fresh = GPT(cfg)
    fresh.load_state_dict(torch.load(buf))
    assert "head.weight" not in model.state_dict()  # one matrix, stored once
    x = ids_for(cfg)
    torch.testing.assert_close(fresh(x), model(x))
    _tied_logits_use_the_embedding(fresh.eval(), cfg)


def test_tying_survives_moves():
    cfg = GPTConfig(**SMALL)
    model = GPT(cfg).to(torch.float64).to("cpu").eval()
    assert model(ids_for(cfg)).dtype == torch.float64
    _tied_logits_use_the_embedding(model, cfg)
    with torch.device("meta"):
        meta = GPT(cfg)
    moved = meta.to_empty(device="cpu")  # swaps in new Parameter objects
    with torch.no_grad():
        for p in moved.parameters():
            p.normal_(0, 0.02)
    _tied_logits_use_the_embedding(moved.eval(), cfg)


def test_tying_survives_assign_loading():
    cfg = GPTConfig(**SMALL)
    model = GPT(cfg)
    with torch.device("meta"):
        fresh = GPT(cfg)
    fresh.load_state_dict(model.state_dict(), assign=True)
    assert fresh.num_params() == model.num_params()
    _tied_logits_use_the_embedding(fresh.eval(), cfg)


@pytest.mark.parametrize("positional", ["sinusoidal", "rope", "alibi"])
def test_fixed_tables_are_non_persistent_buffers(positional):
    model = GPT(GPTConfig(**SMALL, positional=positional))
    buffers = dict(model.named_buffers())
    assert buffers, "the fixed table should be a buffer"
    state = model.state_dict()
    assert not any(name in state for name in buffers)
    assert model.to(torch.float64).state_dict().keys() == state.keys()


def test_shared_gradient_is_the_sum_of_both_uses():
    cfg = GPTConfig(**SMALL)
    torch.manual_seed(0)
    tied = GPT(cfg).double()
    untied = GPT(GPTConfig(**SMALL, tie_weights=False)).double()
    missing, _ = untied.load_state_dict(tied.state_dict(), strict=False)
    assert missing == ["head.weight"]
    with torch.no_grad():
        untied.head.weight.copy_(untied.tok_emb.weight)  # both matrices start as the same values
    assert untied.head.weight is not untied.tok_emb.weight
    x, y = ids_for(cfg, seed=1), ids_for(cfg, seed=2)
    for m in (tied, untied):
        torch.nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten()).backward()
    torch.testing.assert_close(tied.tok_emb.weight.grad, untied.tok_emb.weight.grad + untied.head.weight.grad)


def test_offset_shifts_absolute_positions_only():
    cfg = GPTConfig(**SMALL, positional="rope")
    model = GPT(cfg).eval()
    x = ids_for(cfg, T=4)
    # RoPE is relative: shifting every position leaves the logits unchanged.
    torch.testing.assert_close(model(x, offset=3), model(x), atol=1e-5, rtol=1e-5)
    learned = GPT(GPTConfig(**SMALL)).eval()
    assert not torch.allclose(learned(x, offset=3), learned(x))
    with pytest.raises(ValueError, match="longer than"):
        learned(x, offset=5)


def test_attention_maps():
    cfg = GPTConfig(**SMALL)
    maps = GPT(cfg).attention_maps(ids_for(cfg, T=6))
    assert len(maps) == 2 and maps[0].shape == (2, 4, 6, 6)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 4, 6))


def test_dropout_is_active_in_training_only():
    cfg = GPTConfig(**SMALL, dropout=0.2)
    torch.manual_seed(0)
    model = GPT(cfg)
    plain = GPT(GPTConfig(**SMALL, dropout=0.0))  # the same weights, no dropout
    plain.load_state_dict(model.state_dict())
    x = ids_for(cfg)
    with torch.no_grad():
        reference = plain.eval()(x)
        model.train()
        a, b = model(x), model(x)
        assert not torch.equal(a, b)  # a fresh mask at every call
        for out in (a, b):  # dropout changes the outputs, and by more than rounding
            assert (out - reference).abs().max() > 1e-3
        model.eval()
        assert torch.equal(model(x), reference)  # the identity in eval mode
        assert torch.equal(plain.train()(x), reference)  # dropout=0 is the identity in training too


@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_dropout_on_both_attention_paths(need_weights):
    # the fused kernel (dropout_p) and the explicit path (dropout on the weights) both drop attention weights
    from lmcourse.attention import MultiHeadAttention

    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=16, n_heads=4, dropout=0.5).double()
    attn.resid_dropout = torch.nn.Identity()  # so any difference comes from the attention weights
    x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run():
        out = attn(x, need_weights=need_weights)
        return out[0] if need_weights else out

    with torch.no_grad():
        reference = attn.eval()(x)
        attn.train()
        a, b = run(), run()
        assert not torch.equal(a, b)
        assert (a - reference).abs().max() > 1e-3 and (b - reference).abs().max() > 1e-3
        attn.eval()
        torch.testing.assert_close(run(), reference, rtol=0, atol=1e-12)
        if need_weights:  # the weights returned for plotting are the undropped ones, rows summing to 1
            attn.train()
            _, w = attn(x, need_weights=True)
            _, w_eval = attn.eval()(x, need_weights=True)
            torch.testing.assert_close(w, w_eval, rtol=0, atol=0)


def test_attn_dropout_zero_keeps_attention_whole_but_drops_the_residual_branches():
    from unittest import mock

    import torch.nn.functional as F

    cfg = GPTConfig(**SMALL, dropout=0.3, attn_dropout=0.0)
    assert cfg.attention_dropout == 0.0 and GPTConfig(**SMALL, dropout=0.3).attention_dropout == 0.3
    torch.manual_seed(0)
    model = GPT(cfg).train()
    seen = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dropout_p", 0.0))
        return real(*args, **kwargs)

    x = ids_for(cfg)
    with torch.no_grad(), mock.patch.object(F, "scaled_dot_product_attention", spy):
        a, b = model(x), model(x)
    assert seen and set(seen) == {0.0}, "attn_dropout=0.0: the attention kernel gets no dropout"
    assert not torch.equal(a, b), "dropout=0.3 still drops the embeddings and residual branches"
    assert all(block.attn.resid_dropout.p == 0.3 for block in model.blocks)
    with pytest.raises(ValueError, match="attn_dropout"):
        GPTConfig(**SMALL, attn_dropout=1.0)


def test_mixers_mean_and_none():
    """mixer="mean": each position averages the values of its past with equal weights; "none": no exchange."""
    from lmcourse.attention import MultiHeadAttention

    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=8, n_heads=2, uniform=True).double().eval()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    v = x @ attn.qkv.weight[16:].T + attn.qkv.bias[16:]  # (B, T, D): the values
    running_mean = v.cumsum(1) / torch.arange(1, 7, dtype=torch.float64)[:, None]
    assert torch.allclose(attn(x), attn.proj(running_mean), atol=1e-12)
    _, w = attn(x, need_weights=True)
    assert torch.allclose(w[0, 0, 3, :4], torch.full((4,), 0.25, dtype=torch.float64))

    cfg = GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=2, n_heads=2, mixer="none")
    model = GPT(cfg).eval()
    ids = torch.randint(0, 11, (1, 8))
    changed = ids.clone()
    changed[0, 2] = (ids[0, 2] + 1) % 11
    # with no mixing, position t's logits depend on token t alone: earlier changes do not reach later positions
    a, b = model(ids), model(changed)  # (1, T, V)
    assert torch.allclose(a[0, 3:], b[0, 3:]) and not torch.allclose(a[0, 2], b[0, 2])
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=2,
                                         n_heads=2)).parameters())
    with pytest.raises(ValueError, match="mixer must be one of"):
        GPTConfig(mixer="conv")
