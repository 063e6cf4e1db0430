"""Muon and AdamW as written in lmcourse.optim, against torch.optim.Muon and torch.optim.AdamW."""

import pytest
import torch
from torch import nn

from lmcourse.optim import MuonAdamW, muon_groups, newton_schulz
from lmcourse.train import TrainConfig, make_optimizer
from lmcourse.transformer import GPT, GPTConfig


def _grads(shapes, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(*s, generator=g) for s in shapes] for _ in range(steps)]


@pytest.mark.parametrize("shape", [(8, 24), (24, 8), (16, 16)])
def test_muon_steps_equal_torch_optim_muon(shape):
    torch.manual_seed(0)
    ours = nn.Parameter(torch.randn(*shape))
    ref = nn.Parameter(ours.detach().clone())
    opt = MuonAdamW([{"params": [ours], "muon": True, "lr": 0.02, "weight_decay": 0.1}], momentum=0.95)
    ref_opt = torch.optim.Muon([ref], lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True,
                               adjust_lr_fn="original")
    start = ours.detach().clone()
    for (g,) in _grads([shape], steps=4):
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
        # both orthogonalise in bfloat16 (8 significant bits); ours writes the polynomial
        # unfused, torch fuses it into addmm, so they agree to bfloat16 rounding (a few
        # percent after five iterations), not bit for bit
        moved = (ref - start).norm()
        assert (ours - ref).norm() < 0.05 * moved, ((ours - ref).norm(), moved)
    assert (ref - start).norm() > 0.05  # it moved: four steps of lr 0.02


def test_muon_wrong_variants_are_far_outside_that_tolerance():
    """The tolerance above is tight enough to catch a missing Nesterov term or a wrong scale."""
    torch.manual_seed(0)
    ref = nn.Parameter(torch.randn(8, 24))
    start = ref.detach().clone()
    plain = [nn.Parameter(start.clone()) for _ in range(2)]
    ref_opt = torch.optim.Muon([ref], lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    no_nesterov = torch.optim.Muon([plain[0]], lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=False)
    no_decay = MuonAdamW([{"params": [plain[1]], "muon": True, "lr": 0.02, "weight_decay": 0.0}])
    for (g,) in _grads([(8, 24)], steps=4):
        for p in (ref, *plain):
            p.grad = g.clone()
        for o in (ref_opt, no_nesterov, no_decay):
            o.step()
    moved = (ref - start).norm()
    assert all((p - ref).norm() > 0.1 * moved for p in plain)


def test_adamw_groups_equal_torch_optim_adamw():
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(7))]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    opt = MuonAdamW([{"params": [ours[0]], "lr": 3e-3, "weight_decay": 0.1},
                     {"params": [ours[1]], "lr": 3e-3, "weight_decay": 0.0}], betas=(0.9, 0.95))
    ref_opt = torch.optim.AdamW([{"params": [ref[0]], "weight_decay": 0.1}, {"params": [ref[1]], "weight_decay": 0.0}],
                                lr=3e-3, betas=(0.9, 0.95))
    for grads in _grads([(5, 3), (7,)], steps=5):
        for p, q, g in zip(ours, ref, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_newton_schulz_orthogonalises_in_float64():
    G = torch.randn(12, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    X = newton_schulz(G, dtype=torch.float64)
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.6 and s.max() < 1.25  # every singular value pushed near 1
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    cos = (X * (U @ Vh)).sum() / (X.norm() * (U @ Vh).norm())
    assert cos > 0.97  # close to the exact U V^T (the quintic trades exactness for speed)
    assert newton_schulz(G.T, dtype=torch.float64).shape == (40, 12)
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.randn(3, 4, 5))


def test_muon_groups_cover_every_parameter_once():
    model = GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=2, n_heads=2, norm="rms",
                          mlp="swiglu", qk_norm=True, positional="rope", tie_weights=False, bias=False))
    groups = muon_groups(model, lr=1e-3, muon_lr=0.02, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(names.values())  # each parameter exactly once
    muon = {names[id(p)] for p in groups[0]["params"]}
    assert groups[0]["muon"] and all(n.startswith("blocks.") and n.endswith("weight") for n in muon)
    assert "tok_emb.weight" not in muon and "head.weight" not in muon
    assert not any("norm" in n or "ln" in n for n in muon)
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [nn.Parameter(torch.zeros(3))], "muon": True}])


def test_make_optimizer_muon_keeps_each_groups_peak_rate():
    model = GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2))
    opt = make_optimizer(model, TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.05))
    assert [g["peak_lr"] for g in opt.param_groups] == [0.05, 1e-3, 1e-3]
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
