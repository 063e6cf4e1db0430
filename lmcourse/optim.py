"""Muon: orthogonalised momentum for the weight matrices, AdamW for everything else.

Muon (Jordan et al., 2024, "Muon: an optimizer for hidden layers in neural
networks"; used in KellerJordan/modded-nanogpt's speed records) keeps SGD's
momentum buffer ``B`` but replaces the update by the *orthogonal* matrix nearest
to it: if ``B = U S V^T``, the step is ``U V^T`` (every singular value set to 1),
so no single direction of a weight matrix dominates an update. Computing ``U V^T``
by an SVD is slow; five steps of a quintic Newton-Schulz iteration,

    X <- a X + (b A + c A^2) X,     A = X X^T,     (a, b, c) = (3.4445, -4.7750, 2.0315)

started from ``X = B / ||B||_F``, push every singular value into roughly
[0.7, 1.2], which is as good in practice. A ``(rows, cols)`` matrix gets the step
scaled by ``sqrt(max(1, rows / cols))`` so that tall and wide matrices move alike.

Muon is for the 2-D matrices *inside* the network. Embeddings, the output head,
norm gains and biases are trained by AdamW (Loshchilov & Hutter, 2019), as in
modded-nanogpt. :class:`MuonAdamW` is one ``torch.optim.Optimizer`` holding both
kinds of parameter group, so the training engine schedules, saves and resumes it
like any other optimizer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """An approximately orthogonal matrix with the singular vectors of ``G`` (2-D).

    Computed in ``dtype`` (bfloat16, as ``torch.optim.Muon`` does; float64 for a
    reference). The result has ``G``'s shape and ``dtype``.

    >>> G = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    >>> s = torch.linalg.svdvals(newton_schulz(G, dtype=torch.float64).double())
    >>> bool(((s > 0.6) & (s < 1.3)).all())
    True
    """
    if G.dim() != 2:
        raise ValueError(f"Newton-Schulz orthogonalises a matrix, got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = X.shape[0] > X.shape[1]
    if tall:  # iterate on the wide orientation: A = X X^T is the smaller Gram matrix
        X = X.T
    X = X / X.norm().clamp(min=eps)  # every singular value now <= 1
    for _ in range(steps):
        A = X @ X.T  # (r, r)
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the groups marked ``{"muon": True}``, AdamW on the others.

    Muon groups use ``lr``, ``momentum`` (Nesterov) and ``weight_decay``; AdamW
    groups use ``lr``, ``betas``, ``eps`` and ``weight_decay``. Both decay weights
    decoupled from the gradient: ``p <- p (1 - lr * weight_decay)``.
    """

    def __init__(self, groups: list[dict], lr: float = 1e-3, momentum: float = 0.95,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0,
                 ns_steps: int = 5) -> None:
        defaults = dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=weight_decay,
                        ns_steps=ns_steps, muon=False)
        super().__init__(groups, defaults)
        for group in self.param_groups:
            if group["muon"]:
                bad = [tuple(p.shape) for p in group["params"] if p.dim() != 2]
                if bad:
                    raise ValueError(f"Muon trains 2-D matrices only, got parameters of shape {bad}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if group["muon"]:
                    mu = group["momentum"]
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.lerp_(g, 1 - mu)  # B <- mu B + (1 - mu) g
                    update = newton_schulz(g.lerp(buf, mu), group["ns_steps"])  # Nesterov: (1 - mu) g + mu B
                    p.mul_(1 - lr * wd)
                    scale = math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
                    p.add_(update.to(p.dtype), alpha=-lr * scale)
                else:
                    b1, b2 = group["betas"]
                    if not state:
                        state["step"] = torch.zeros((), dtype=torch.float32)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    state["step"] += 1
                    t = state["step"].item()
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    m.lerp_(g, 1 - b1)  # m <- b1 m + (1 - b1) g
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)  # v <- b2 v + (1 - b2) g^2
                    p.mul_(1 - lr * wd)
                    denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))
        return loss


def muon_groups(model: nn.Module, lr: float, muon_lr: float, weight_decay: float,
                muon_weight_decay: float = 0.0) -> list[dict]:
    """Parameter groups for :class:`MuonAdamW`: Muon for 2-D matrices inside ``model.blocks``.

    Embeddings and the head (also 2-D) go to AdamW with ``weight_decay``; 1-D
    parameters (gains, biases) to AdamW without decay. A tied matrix appears once.
    """
    inner = {id(p) for p in model.blocks.parameters() if p.dim() == 2} if hasattr(model, "blocks") else set()
    muon, decay, no_decay = [], [], []
    for p in model.parameters():  # repeats (tied weights) are skipped
        if not p.requires_grad:
            continue
        (muon if id(p) in inner else decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": muon, "muon": True, "lr": muon_lr, "weight_decay": muon_weight_decay},
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
