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
    assert tied.head.weight is tied.tok_emb.weight
    assert untied.head.weight is not untied.tok_emb.weight
    assert untied.num_params() - tied.num_params() == 13 * 16


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
    assert fresh.head.weight is fresh.tok_emb.weight
    x = ids_for(cfg)
    torch.testing.assert_close(fresh(x), model(x))


def test_tying_survives_moves():
    model = GPT(GPTConfig(**SMALL)).to(torch.float64).to("cpu")
    assert model.head.weight is model.tok_emb.weight
    assert model.head.weight.dtype == torch.float64
    with torch.device("meta"):
        meta = GPT(GPTConfig(**SMALL))
    moved = meta.to_empty(device="cpu")  # swaps in new Parameter objects
    assert moved.head.weight is moved.tok_emb.weight


def test_tying_survives_assign_loading():
    cfg = GPTConfig(**SMALL)
    model = GPT(cfg)
    with torch.device("meta"):
        fresh = GPT(cfg)
    fresh.load_state_dict(model.state_dict(), assign=True)
    assert fresh.head.weight is fresh.tok_emb.weight
    assert fresh.num_params() == model.num_params()


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
    untied.load_state_dict(tied.state_dict())  # both matrices start as the same values
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
    model = GPT(cfg)
    x = ids_for(cfg)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert model.attention_maps(x)[0].shape == (2, 4, 8, 8)  # the explicit path runs with dropout too
