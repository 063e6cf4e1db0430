"""LoRA: starts as the base model, merges exactly, matches peft, trains only A and B."""

import pytest
import torch
from torch import nn

from lmcourse.lora import (
    LoRALinear,
    adam_training_bytes,
    add_lora,
    freeze,
    lora_layers,
    lora_state,
    merge_lora,
    trainable_count,
)
from lmcourse.train import TrainConfig, train
from lmcourse.transformer import GPT, GPTConfig


def tiny(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=11, context_length=16, d_model=16, n_layers=2, n_heads=2))


def randomise(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.B.copy_(torch.randn(layer.B.shape, generator=g) * 0.1)


def ids(seed=0, shape=(3, 12)):
    return torch.randint(0, 11, shape, generator=torch.Generator().manual_seed(seed))


def test_starts_equal_to_the_base_model():
    base, model = tiny(), tiny()
    add_lora(model, rank=4, alpha=8)
    x = ids()
    assert torch.equal(base(x), model(x))


def test_forward_is_base_plus_scaled_low_rank_in_float64():
    torch.manual_seed(0)
    lin = nn.Linear(7, 5).double()
    layer = LoRALinear(lin, rank=3, alpha=6)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(4, 7, dtype=torch.float64)
    W = lin.weight + (6 / 3) * layer.B @ layer.A
    torch.testing.assert_close(layer(x), x @ W.T + lin.bias, rtol=0, atol=1e-12)


def test_merge_gives_the_adapted_forward_and_unmerge_restores():
    model = tiny()
    add_lora(model, rank=4, alpha=8)
    randomise(model)
    x = ids()
    before = model(x)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("base.weight")}
    assert merge_lora(model) == 8
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="already merged"):
        lora_layers(model)[0].merge()
    for layer in lora_layers(model):
        layer.unmerge()
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)
    for n, p in model.named_parameters():
        if n in weights:
            torch.testing.assert_close(p, weights[n], rtol=0, atol=1e-6)


def test_merged_weights_load_into_a_plain_gpt():
    model = tiny()
    add_lora(model, rank=2, alpha=4)
    randomise(model)
    x = ids()
    expected = model(x)
    merge_lora(model)
    plain = tiny(seed=5)
    state = {n.replace(".base.", "."): p for n, p in model.state_dict().items() if not n.endswith((".A", ".B"))}
    plain.load_state_dict(state)
    torch.testing.assert_close(plain(x), expected, rtol=0, atol=1e-5)


def test_counts():
    model = tiny()
    total = model.num_params()
    add_lora(model, rank=4, alpha=8)
    # per block: qkv 16->48, proj 16->16, fc 16->64, proj 64->16; r (in + out) each
    per_block = 4 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16))
    assert trainable_count(model) == 2 * per_block
    assert len(lora_state(model)) == 16
    mem = adam_training_bytes(model)
    assert mem["gradients"] == 4 * 2 * per_block
    assert mem["weights"] == 4 * (total + 2 * per_block)


def test_only_lora_parameters_change_in_training():
    model = tiny()
    add_lora(model, rank=2, alpha=4)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    data = ids(shape=(400,)).flatten()
    train(model, data, data, TrainConfig(steps=5, batch_size=4, context_length=8, warmup_steps=1, eval_every=5,
                                         eval_batches=1, lr=1e-2))
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert any(layer.B.abs().sum() > 0 for layer in lora_layers(model))


def test_freeze_and_bad_input():
    model = tiny()
    assert freeze(model, trainable=("tok_emb.",)) == 11 * 16
    with pytest.raises(ValueError, match="no parameter name"):
        freeze(model, trainable=("nope",))
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 4), rank=5, alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(4, 4), rank=2, alpha=0)
    with pytest.raises(ValueError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(1, 1, 1), rank=1, alpha=1)
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(tiny(), targets=("nothing",))
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(tiny())


def test_matches_peft_given_the_same_weights():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 6), nn.GELU(), nn.Linear(6, 5))
    ours = nn.Sequential(nn.Linear(8, 6), nn.GELU(), nn.Linear(6, 5))
    ours.load_state_dict(base.state_dict())
    add_lora(ours, rank=2, alpha=3, targets=("0", "2"))
    randomise(ours)
    cfg = peft.LoraConfig(r=2, lora_alpha=3, target_modules=["0", "2"], lora_dropout=0.0)
    ref = peft.get_peft_model(base, cfg)
    with torch.no_grad():
        for i in ("0", "2"):
            mod = ref.base_model.model.get_submodule(i)
            mod.lora_A["default"].weight.copy_(ours.get_submodule(i).A)
            mod.lora_B["default"].weight.copy_(ours.get_submodule(i).B)
    x = torch.randn(4, 8)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)
    merged = ref.merge_and_unload()
    merge_lora(ours)
    for i in ("0", "2"):
        torch.testing.assert_close(ours.get_submodule(i).base.weight, merged.get_submodule(i).weight,
                                   rtol=0, atol=1e-6)
