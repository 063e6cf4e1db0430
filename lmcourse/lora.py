"""Low-rank adaptation (LoRA, Hu et al. 2021): train a small update beside a frozen weight.

A frozen linear layer ``y = x W^T + b`` (``W``: out x in) gets a trainable update of
rank ``r``:

    y = x W^T + b + (alpha / r) * x A^T B^T          A: r x in,  B: out x r

``A`` starts random (Kaiming-uniform, as ``nn.Linear`` and ``peft`` do) and ``B`` at
zero, so the adapted model starts *exactly* equal to the pretrained one. Only
``A`` and ``B`` train: ``r * (in + out)`` numbers per layer instead of ``in * out``.
After training the update folds into the weight,

    W' = W + (alpha / r) * B A                                    (merge)

so the merged model is a plain ``nn.Linear`` again and costs nothing extra at
inference; :meth:`LoRALinear.unmerge` subtracts it back out.

    model = load_pretrained("gpt_char")
    add_lora(model, rank=8, alpha=16)      # freezes everything, adds A and B to the blocks' linears
    ... train(model, ...) ...              # the optimizer sees only requires_grad parameters
    merge_lora(model)                      # W += (alpha/r) B A; forward unchanged
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")  # every linear layer inside a block


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update scaled by ``alpha / rank``.

    >>> _ = torch.manual_seed(0)
    >>> base = nn.Linear(6, 4)
    >>> lora = LoRALinear(base, rank=2, alpha=4)
    >>> x = torch.randn(3, 6)
    >>> torch.equal(lora(x), base(x))  # B = 0: the start is the pretrained layer
    True
    >>> sum(p.numel() for p in lora.parameters() if p.requires_grad)  # r * (in + out)
    20
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRA wraps an nn.Linear, got {type(base).__name__}")
        if rank < 1 or rank > min(base.in_features, base.out_features):
            raise ValueError(f"rank must be in [1, {min(base.in_features, base.out_features)}], got {rank}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.base, self.rank, self.alpha = base, rank, alpha
        self.scale = alpha / rank
        for p in base.parameters():
            p.requires_grad_(False)
        dev, dt = base.weight.device, base.weight.dtype
        self.A = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dt))  # (r, in)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dt))  # (out, r)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's (and peft's) init of A
        self.merged = False

    def delta(self) -> torch.Tensor:
        """The update ``(alpha / r) B A`` as a full ``(out, in)`` matrix."""
        return self.scale * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        if self.merged:
            return y
        # the low-rank path never forms B A: (..., in) -> (..., r) -> (..., out)
        return y + self.scale * F.linear(F.linear(x, self.A), self.B)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the frozen weight: ``W += (alpha/r) B A`` (once)."""
        if self.merged:
            raise ValueError("this LoRA layer is already merged")
        self.base.weight += self.delta()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the weight: ``W -= (alpha/r) B A``."""
        if not self.merged:
            raise ValueError("this LoRA layer is not merged")
        self.base.weight -= self.delta()
        self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def freeze(model: nn.Module, trainable: tuple[str, ...] = ()) -> int:
    """Freeze every parameter whose name does not start with one of ``trainable``; returns the count left.

    The engine's optimizer (:func:`lmcourse.train.make_optimizer`) takes only
    parameters with ``requires_grad``, so this is the whole of "train only X".

    >>> m = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    >>> freeze(m, trainable=("1.",))  # the second layer: 3 weights + 1 bias
    4
    """
    names = [n for n, _ in model.named_parameters()]
    for prefix in trainable:
        if not any(n.startswith(prefix) for n in names):
            raise ValueError(f"no parameter name starts with {prefix!r}; names are like {names[:4]}")
    for name, p in model.named_parameters():
        p.requires_grad_(any(name.startswith(prefix) for prefix in trainable))
    return trainable_count(model)


def trainable_count(model: nn.Module) -> int:
    """The number of parameters that train (``requires_grad``), a tied matrix once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0,
             targets: tuple[str, ...] = DEFAULT_TARGETS) -> list[str]:
    """Freeze ``model`` and wrap each ``nn.Linear`` whose name ends with one of ``targets``.

    Returns the wrapped modules' names. Everything else (embeddings, norms, biases)
    stays frozen: only the ``A`` and ``B`` matrices train.

    >>> from lmcourse.transformer import GPT, GPTConfig
    >>> m = GPT(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=2, n_heads=2))
    >>> len(add_lora(m, rank=2, alpha=4)), trainable_count(m)  # 4 linears x 2 blocks
    (8, 1024)
    """
    freeze(model)
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and any(name.endswith(t) for t in targets):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoRALinear(module, rank, alpha))
            wrapped.append(name)
    if not wrapped:
        raise ValueError(f"no nn.Linear in the model has a name ending with one of {targets}")
    return wrapped


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    """Every :class:`LoRALinear` in ``model``."""
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer of ``model`` into its weight; returns how many were merged."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to merge")
    for layer in layers:
        layer.merge()
    return len(layers)


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter: the ``A`` and ``B`` of every LoRA layer (what one saves per task)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith((".A", ".B"))}


def adam_training_bytes(model: nn.Module, bytes_per_number: int = 4) -> dict[str, int]:
    """Memory for the numbers training keeps, in bytes: weights, gradients, and AdamW's two moments.

    Every parameter is stored; only trainable ones carry a gradient and two moment
    estimates. Activations are not counted (they depend on batch and context, not
    on what trains).

    >>> adam_training_bytes(nn.Linear(3, 1))  # 4 numbers, all trainable: 4 x (1 + 1 + 2) x 4 bytes
    {'weights': 16, 'gradients': 16, 'adam_moments': 32, 'total': 64}
    """
    n_all = sum(p.numel() for p in model.parameters())
    n_train = trainable_count(model)
    out = {"weights": n_all * bytes_per_number, "gradients": n_train * bytes_per_number,
           "adam_moments": 2 * n_train * bytes_per_number}
    out["total"] = sum(out.values())
    return out
