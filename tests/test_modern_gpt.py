"""The modern GPT's options (chapter 11): RMSNorm, SwiGLU and ReLU^2 MLPs, QK-norm."""

import pytest
import torch
import torch.nn.functional as F

from lmcourse.attention import MultiHeadAttention
from lmcourse.transformer import GPT, MLP, GPTConfig, make_norm

BASE = dict(vocab_size=13, context_length=16, d_model=24, n_layers=2, n_heads=3)


def test_rms_norm_is_the_formula_in_float64():
    norm = make_norm(GPTConfig(**BASE, norm="rms")).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = torch.finfo(torch.float64).eps  # nn.RMSNorm's default eps is the dtype's machine epsilon
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-12)
    assert isinstance(norm, torch.nn.RMSNorm)
    assert isinstance(make_norm(GPTConfig(**BASE)), torch.nn.LayerNorm)


@pytest.mark.parametrize("kind", ["gelu", "relu2", "swiglu"])
def test_mlp_variants_are_their_formulas(kind):
    cfg = GPTConfig(**BASE, mlp=kind, bias=False)
    mlp = MLP(cfg).double()
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    W1, W2 = mlp.fc.weight, mlp.proj.weight
    if kind == "gelu":
        expected = F.gelu(x @ W1.T) @ W2.T
    elif kind == "relu2":
        expected = torch.clamp(x @ W1.T, min=0) ** 2 @ W2.T
    else:
        gate, up = W1.chunk(2, dim=0)
        expected = (F.silu(x @ gate.T) * (x @ up.T)) @ W2.T
    torch.testing.assert_close(mlp(x), expected, rtol=0, atol=1e-12)


def test_swiglu_holds_as_many_weights_as_the_gelu_mlp():
    gelu = sum(p.numel() for p in MLP(GPTConfig(**BASE, bias=False)).parameters())
    swiglu = sum(p.numel() for p in MLP(GPTConfig(**BASE, mlp="swiglu", bias=False)).parameters())
    assert swiglu == 3 * 24 * 64 and gelu == 2 * 24 * 96  # H = 8D/3 = 64 against 4D = 96
    assert swiglu == gelu


def test_qk_norm_normalises_queries_and_keys_per_head():
    attn = MultiHeadAttention(24, 3, qk_norm=True).double().eval()
    x = 100 * torch.randn(1, 6, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, w = attn(x, need_weights=True)
    # by hand: split heads, RMS-normalise q and k (gains are 1 at init), causal softmax
    q, k, v = attn.qkv(x).view(1, 6, 3, 3, 8).permute(2, 0, 3, 1, 4)  # (3, B, H, T, Dh)
    q = q / q.pow(2).mean(-1, keepdim=True).add(torch.finfo(torch.float64).eps).sqrt()
    k = k / k.pow(2).mean(-1, keepdim=True).add(torch.finfo(torch.float64).eps).sqrt()
    scores = (q @ k.transpose(-2, -1)) / 8 ** 0.5
    scores = scores.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(w, scores.softmax(-1), rtol=0, atol=1e-12)
    assert scores[torch.isfinite(scores)].abs().max() <= 8 ** 0.5 + 1e-9  # |q.k| / sqrt(Dh) <= sqrt(Dh)


def test_modern_gpt_is_causal_and_cached_equals_uncached():
    from lmcourse.generation import generate

    cfg = GPTConfig(**BASE, norm="rms", mlp="relu2", qk_norm=True, positional="rope", bias=False, tie_weights=False)
    torch.manual_seed(0)
    model = GPT(cfg).double().eval()
    ids = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] + 1) % 13
    diff = (model(ids) - model(changed)).abs().amax(-1)  # (B, T)
    assert (diff[:, :7] == 0).all() and (diff[:, 7:] > 0).all()
    prompt = ids[:, :3]
    assert torch.equal(generate(model, prompt, 10, do_sample=False),
                       generate(model, prompt, 10, do_sample=False, use_cache=False))


def test_bad_options_say_what_is_allowed():
    with pytest.raises(ValueError, match="norm must be one of"):
        GPTConfig(norm="batch")
    with pytest.raises(ValueError, match="mlp must be one of"):
        GPTConfig(mlp="tanh")


def test_ablation_rows_add_one_change_each_at_equal_tokens_per_step():
    from dataclasses import asdict

    from lmcourse.experiments.ablation import rows

    table = rows()
    assert [r.name for r in table][:2] == ["GPT-2 baseline", "+ RoPE"] and table[-1].name == "+ context 512"
    tokens = {r.train.batch_size * r.train.context_length for r in table}
    assert len(tokens) == 1  # the same tokens per step in every row
    for before, after in zip(table, table[1:], strict=False):
        changed = {k for k, v in asdict(after.model).items() if asdict(before.model)[k] != v}
        changed |= {k for k, v in asdict(after.train).items() if asdict(before.train)[k] != v}
        assert changed and changed <= {"positional", "norm", "bias", "mlp", "qk_norm", "optimizer",
                                       "context_length", "batch_size"}, changed
    assert table[-2].train.optimizer == "muon" and table[0].train.optimizer == "adamw"


def test_copying_splits_losses_by_occurrence():
    from lmcourse.copying import new_word_occurrences, occurrence_losses

    text = "A: zed ab zed ab zed"
    occ = new_word_occurrences([text], known={"a", "ab"})
    assert [(o.start, o.rank, o.gap) for o in occ] == [(3, 1, None), (10, 2, 7), (17, 3, 7)]
    nll = torch.arange(len(text) - 1, dtype=torch.float32)  # nll[i] scores character i + 1
    out = occurrence_losses(nll, occ, context_length=7)
    # first: characters 4, 5 of "zed" at 3..5 -> nll[3], nll[4]
    assert out["first"] == {"nats": 3.5, "chars": 2, "words": 1}
    assert out["later"]["words"] == 2 and out["later_within"]["words"] == 2
    assert out["later"]["nats"] == (10 + 11 + 17 + 18) / 4
    assert occurrence_losses(nll, occ, context_length=6)["later_beyond"]["words"] == 2


def test_ablation_only_rejects_an_unknown_row(tmp_path):
    from lmcourse.experiments.ablation import main

    with pytest.raises(SystemExit):
        main(["--only", "+ nothing", "--out", str(tmp_path / "a.json")])
    assert not (tmp_path / "a.json").exists()
