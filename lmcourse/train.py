"""The training loop's core: AdamW, warmup + cosine decay, clipping, evaluation.

    history = train(model, train_ids, val_ids, TrainConfig(steps=300))

Each step draws a batch of random windows (:func:`lmcourse.data.random_windows`)
from a seeded CPU generator, so the same seed gives the same batches on every
device. The learning rate rises linearly for ``warmup_steps`` and then follows a
half cosine down to ``min_lr`` at ``steps`` (Loshchilov & Hutter, 2017):

    lr(s) = lr * (s + 1) / warmup                                  s < warmup
    lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,        p = (s - warmup) / (steps - warmup)

AdamW (Loshchilov & Hutter, 2019) decays only the matrices (2-D parameters:
embeddings and linear weights), never biases or LayerNorm gains. Every
``eval_every`` steps the mean loss on a fixed set of train and validation batches
is recorded in a :class:`History`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .data import as_tensor, random_windows
from .metrics import mean_nll


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults suit a small character model on a CPU."""

    steps: int = 1000  # optimizer updates in all
    batch_size: int = 12  # windows per batch (B)
    context_length: int = 64  # tokens per window (T)
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 100  # steps of linear warmup from lr / warmup_steps to lr
    weight_decay: float = 0.1  # AdamW decay, applied to 2-D parameters only
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    eval_every: int = 100  # evaluate every this many steps (and after the last one)
    eval_batches: int = 10  # fixed batches per split in each evaluation
    seed: int = 0  # seeds batches, evaluation batches and dropout

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "context_length", "eval_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps} for {self.steps} steps")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")


@dataclass
class History:
    """Losses (mean NLL in nats per token) recorded at each evaluation."""

    steps: list[int] = field(default_factory=list)  # optimizer steps done at the evaluation
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate of the last step before it

    def plot(self, ax=None, label: str = ""):
        """Train (dashed) and validation (solid) loss against steps; returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.gca()
        prefix = f"{label} " if label else ""
        (line,) = ax.plot(self.steps, self.val_loss, label=f"{prefix}validation")
        ax.plot(self.steps, self.train_loss, "--", color=line.get_color(), label=f"{prefix}train")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats per token)")
        ax.legend()
        return ax


def lr_at(step: int, config: TrainConfig) -> float:
    """The learning rate of update number ``step`` (0-based): linear warmup, then cosine.

    >>> cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    >>> [round(lr_at(s, cfg), 3) for s in (0, 9, 10, 55, 100)]
    [0.1, 1.0, 1.0, 0.55, 0.1]
    """
    c = config
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    progress = min(1.0, (step - c.warmup_steps) / (c.steps - c.warmup_steps))
    return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: 2-D parameters decayed, the rest (biases, norms) not.

    A tied matrix is one parameter and appears once (``model.parameters()`` skips repeats).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def _fixed_batches(ids: torch.Tensor, batch_size: int, context_length: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [random_windows(ids, batch_size, context_length, generator=g) for _ in range(n)]


@torch.no_grad()
def _mean_loss(model: nn.Module, batches, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    losses = [mean_nll(model(x.to(device)), y.to(device)).item() for x, y in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


def evaluate(model: nn.Module, ids: Sequence[int] | torch.Tensor, context_length: int, batch_size: int = 12,
             num_batches: int = 10, seed: int = 1234, device: torch.device | str | None = None) -> float:
    """Mean NLL (nats per token) of ``model`` on ``num_batches`` seeded random windows of ``ids``.

    The windows depend only on ``seed``, so two models evaluated with the same
    arguments see the same text. The model is put in eval mode (and back).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = _fixed_batches(as_tensor(ids), batch_size, context_length, num_batches, seed)
    return _mean_loss(model, batches, device)


def train(model: nn.Module, train_ids: Sequence[int] | torch.Tensor, val_ids: Sequence[int] | torch.Tensor,
          config: TrainConfig, device: torch.device | str | None = None, log_every: int = 0) -> History:
    """Train ``model`` in place for ``config.steps`` updates; returns the evaluation history.

    ``model(x)`` must map ids ``(B, T)`` to logits ``(B, T, V)``. The model is moved to
    ``device`` (default: where its parameters are). Seeds the global torch RNG with
    ``config.seed`` (for dropout). With ``log_every > 0`` prints the training loss
    every that many steps; otherwise prints nothing.
    """
    c = config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    train_ids, val_ids = as_tensor(train_ids), as_tensor(val_ids)
    torch.manual_seed(c.seed)
    batch_gen = torch.Generator().manual_seed(c.seed)
    eval_sets = {
        "train": _fixed_batches(train_ids, c.batch_size, c.context_length, c.eval_batches, c.seed + 1),
        "val": _fixed_batches(val_ids, c.batch_size, c.context_length, c.eval_batches, c.seed + 2),
    }
    optimizer = make_optimizer(model, c)
    history = History()

    def record(step: int) -> None:
        history.steps.append(step)
        history.train_loss.append(_mean_loss(model, eval_sets["train"], device))
        history.val_loss.append(_mean_loss(model, eval_sets["val"], device))
        history.lr.append(lr_at(max(step - 1, 0), c))

    model.train()
    record(0)
    for step in range(c.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, c)
        x, y = random_windows(train_ids, c.batch_size, c.context_length, generator=batch_gen)
        loss = mean_nll(model(x.to(device)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        done = step + 1
        if log_every and done % log_every == 0:
            print(f"step {done:>6}  loss {loss.item():.4f}  lr {lr_at(step, c):.2e}")
        if done % c.eval_every == 0 or done == c.steps:
            record(done)
    model.eval()
    return history
