"""The training engine: one loop for every model of the course.

    history = train(model, train_ids, val_ids, TrainConfig(steps=300))
    history = train(model, (train_ids, val_ids), config)            # the same

One :class:`Trainer` trains the GPT, the LSTM and the masked LM; what differs is
the *objective* (``TrainConfig.objective``, :mod:`lmcourse.objectives`), which says
how a batch is drawn and what the loss is:

* ``"clm"``: next-token prediction on random windows (the GPT, chapters 4-7);
* ``"tbptt"``: next-token prediction on a contiguous stream cut into
  ``batch_size`` rows, the recurrent state carried from batch to batch and
  detached (truncated backpropagation through time, chapter 3);
* ``"mlm"``: BERT's masked-token loss on freshly masked random windows
  (:func:`lmcourse.mlm.mask_tokens`, chapter 10);
* ``"sft"`` and ``"dpo"``: fixed examples ``(N, rows, T)`` instead of a token stream:
  the loss on an instruction's response alone, and the DPO loss on preference pairs
  against a ``reference`` model (chapter 14).

Adapting a pretrained model is training it with some parameters frozen
(``requires_grad=False``: the optimizer takes only the others, :mod:`lmcourse.lora`);
``extra_val`` records the next-token loss on other texts at every evaluation (how much
of the old domain a run forgets).

Each step draws one *global* batch from a seeded CPU generator, so the same seed
gives the same batches on every device, with any number of processes and any
amount of gradient accumulation: the batch is cut into ``grad_accum``
micro-batches and, under ``torchrun``, into one shard per process. The learning
rate rises linearly for ``warmup_steps`` and then follows a half cosine down to
``min_lr`` at ``steps`` (Loshchilov & Hutter, 2017):

    lr(s) = lr * (s + 1) / warmup                                  s < warmup
    lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,        p = (s - warmup) / (steps - warmup)

AdamW (Loshchilov & Hutter, 2019) decays only the matrices (2-D parameters:
embeddings and linear weights), never biases or norm gains; ``optimizer="muon"``
trains the blocks' matrices with Muon instead (:mod:`lmcourse.optim`). Every
``eval_every`` steps the mean loss on a fixed set of train and validation batches
is recorded in a :class:`History`.

A checkpoint (:func:`save_checkpoint`) holds the model, the optimizer, the step,
the history, the objective's own state (the stream position and carried state of
``tbptt``) and every random state (torch's CPU and CUDA generators and the batch
generator), so a run stopped at step k and resumed ends bit for bit where the
uninterrupted run ends (on the CPU).

The named runs (the shipped models) and their command line
``python -m lmcourse train --config NAME`` live in :mod:`lmcourse.runs`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .data import as_tensor, random_windows
from .device import eval_mode, rank_and_world
from .metrics import bits_per_char, mean_nll, perplexity
from .objectives import EXAMPLE_OBJECTIVES, OBJECTIVES, NextToken, Stream, check_examples, logits_of
from .optim import MuonAdamW, muon_groups
from .shipped import atomic_save, model_config

STATE_KIND = "lmcourse-train-state"


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults suit a small character model on a CPU."""

    steps: int = 1000  # optimizer updates in all
    batch_size: int = 12  # windows per optimizer update (B), over all micro-batches and processes
    context_length: int = 64  # tokens per window (T)
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 100  # steps of linear warmup from lr / warmup_steps to lr
    weight_decay: float = 0.1  # AdamW decay, applied to 2-D parameters only
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    eval_every: int = 100  # evaluate every this many steps (and after the last one)
    eval_batches: int = 10  # fixed batches per split in each evaluation
    seed: int = 0  # seeds batches, evaluation batches and dropout
    grad_accum: int = 1  # micro-batches per update: batch_size / grad_accum windows go through at once
    mixed_precision: bool = True  # bf16 autocast on CUDA (the CPU always computes in float32)
    optimizer: str = "adamw"  # "adamw" | "muon" (Muon on the blocks' matrices, AdamW on the rest)
    muon_lr: float = 0.02  # Muon's peak learning rate (scheduled like lr)
    objective: str = "clm"  # "clm" | "tbptt" (recurrent models; context_length = bptt) | "mlm"
    mlm_probability: float = 0.15  # "mlm": share of positions chosen for prediction
    mask_token_id: int = 0  # "mlm": the id of [MASK]
    dpo_beta: float = 0.1  # "dpo": beta, the strength of the pull toward the reference model

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "context_length", "eval_every", "eval_batches", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps} for {self.steps} steps")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {self.objective!r}")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"optimizer must be 'adamw' or 'muon', got {self.optimizer!r}")
        if self.dpo_beta <= 0:
            raise ValueError(f"dpo_beta must be > 0, got {self.dpo_beta}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})")


@dataclass
class History:
    """Losses (mean NLL in nats per token) recorded at each evaluation."""

    steps: list[int] = field(default_factory=list)  # optimizer steps done at the evaluation
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate of the last step before it
    extra: dict[str, list[float]] = field(default_factory=dict)  # next-token loss on train(extra_val=...) texts

    @property
    def val_perplexity(self) -> list[float]:
        """``exp(val_loss)`` at each evaluation."""
        return [perplexity(v) for v in self.val_loss]

    @property
    def val_bits_per_char(self) -> list[float]:
        """Validation loss in bits per token (= per character for a character model)."""
        return [bits_per_char(v) for v in self.val_loss]

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

    def plot_lr(self, ax=None):
        """The learning rate at each evaluation against steps; returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.gca()
        ax.plot(self.steps, self.lr, ".-", color="gray")
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        return ax

    def show(self, title: str = ""):
        """Loss curves and learning rate side by side; returns the figure."""
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [2, 1]})
        self.plot(a)
        self.plot_lr(b)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


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


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: 2-D parameters decayed, the rest (biases, norms) not.

    With ``config.optimizer == "muon"``: :class:`lmcourse.optim.MuonAdamW`, Muon
    (peak ``muon_lr``) on the matrices inside the blocks, AdamW on the rest.
    Each group keeps its peak rate as ``"peak_lr"``; :func:`set_lr` scales it.
    A tied matrix is one parameter and appears once (``model.parameters()`` skips repeats).
    """
    if config.optimizer == "muon":
        opt = MuonAdamW(muon_groups(model, config.lr, config.muon_lr, config.weight_decay), betas=(0.9, 0.95))
        for group in opt.param_groups:
            group["peak_lr"] = group["lr"]
        return opt
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))
    for group in opt.param_groups:
        group["peak_lr"] = group["lr"]
    return opt


def set_lr(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> None:
    """Set every group's rate for update ``step``: its peak rate times ``lr_at(step) / lr``."""
    factor = lr_at(step, config) / config.lr
    for group in optimizer.param_groups:
        group["lr"] = group.get("peak_lr", config.lr) * factor


def _autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; nothing elsewhere (CPU autocast is slow and changes results)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


# ----------------------------------------------------------------------------------
# Evaluation


def evaluate(model: nn.Module, ids: Sequence[int] | torch.Tensor, context_length: int, batch_size: int = 12,
             num_batches: int = 10, seed: int = 1234, device: torch.device | str | None = None) -> float:
    """Mean NLL (nats per token) of ``model`` on ``num_batches`` seeded random windows of ``ids``.

    The windows depend only on ``seed``, so two models evaluated with the same
    arguments see the same text. The model is put in eval mode (and back).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    batches = [random_windows(as_tensor(ids), batch_size, context_length, generator=g) for _ in range(num_batches)]
    with eval_mode(model), torch.no_grad():
        losses = [mean_nll(logits_of(model(x.to(device))).float(), y.to(device)).item() for x, y in batches]
    return sum(losses) / len(losses)


def evaluate_stream(model: nn.Module, ids: Sequence[int] | torch.Tensor, context_length: int,
                    stride: int | None = None, batch_size: int = 32,
                    device: torch.device | str | None = None) -> float:
    """Mean NLL (nats per token) of *every* token of ``ids`` after the first, in order.

    The mean of :func:`stream_token_nll`, which says how the windows are laid out.
    This is the number to compare with a recurrent model that reads the whole stream.
    """
    return stream_token_nll(model, ids, context_length, stride, batch_size, device).mean().item()


@torch.no_grad()
def stream_token_nll(model: nn.Module, ids: Sequence[int] | torch.Tensor, context_length: int,
                     stride: int | None = None, batch_size: int = 32,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The NLL (nats) of each token of ``ids`` after the first: a float32 CPU tensor of ``len(ids) - 1``.

    Entry ``i`` is ``-ln P(ids[i + 1] | the window's tokens up to ids[i])``.

    Windows of ``context_length`` tokens slide by ``stride`` (default half a
    window); each window scores only the tokens the previous one did not, so
    every scored token (after the first window) sees at least
    ``context_length - stride`` tokens of context.
    """
    ids = as_tensor(ids)
    T = context_length
    stride = stride or max(1, T // 2)
    if not 1 <= stride <= T:
        raise ValueError(f"stride must be in [1, {T}], got {stride}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    n = len(ids)
    if n < 2:
        raise ValueError("need at least two tokens")
    # window i covers ids[s_i : s_i + T] (inputs) and scores targets from position `first_i` on
    starts, firsts = [], []
    s, scored = 0, 0  # scored: targets ids[1 .. scored] are done
    while scored < n - 1:
        s = max(0, min(s, n - 1 - T)) if n - 1 >= T else 0
        starts.append(s)
        firsts.append(scored - s)  # index within the window of the first new target
        scored = min(s + T, n - 1)
        s += stride
    out = torch.empty(n - 1)
    width = min(T, n - 1)
    with eval_mode(model):
        for i in range(0, len(starts), batch_size):
            chunk = list(zip(starts[i:i + batch_size], firsts[i:i + batch_size], strict=True))
            x = torch.stack([ids[s:s + width] for s, _ in chunk]).to(device)
            y = torch.stack([ids[s + 1:s + 1 + width] for s, _ in chunk]).to(device)
            logp = torch.log_softmax(logits_of(model(x)).float(), dim=-1)
            nll = -logp.gather(-1, y[..., None])[..., 0].cpu()  # (b, T)
            for row, (s, first) in enumerate(chunk):
                out[s + first:s + width] = nll[row, first:]  # targets ids[s + first + 1 ..]
    return out


# ----------------------------------------------------------------------------------
# Processes (torchrun) and checkpoints


def _rng_state(batch_gen: torch.Generator, device: torch.device) -> dict:
    """The random states a resumed run needs: CUDA's only when it trains on CUDA (dropout there)."""
    state = {"torch": torch.get_rng_state(), "batches": batch_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, batch_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    batch_gen.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict:
    """The saved training state; clear errors for a missing file or a file of another kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{path} is not a readable checkpoint: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != STATE_KIND:
        raise ValueError(f"{path} is not an lmcourse training checkpoint")
    return ckpt


def _load_model_state(model: nn.Module, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()
        detail = " ".join(line.strip() for line in first[:4])
        raise ValueError(f"{source} does not match the architecture of this {type(model).__name__}: {detail}") from None


# ----------------------------------------------------------------------------------
# The loop


class Trainer:
    """One training run's moving parts: model, optimizer, objective, batch generator.

    :meth:`step` is one optimizer update (what ``python -m lmcourse bench train``
    times); :func:`train` loops it, evaluates and saves. Under ``torchrun`` the
    model is wrapped in DistributedDataParallel and each process trains on its
    own rows of every global batch.
    """

    def __init__(self, model: nn.Module, train_ids: torch.Tensor, config: TrainConfig,
                 device: torch.device | str | None = None, reference: nn.Module | None = None) -> None:
        c = self.config = config
        self.rank, self.world = rank_and_world()
        if c.batch_size % (c.grad_accum * self.world):
            raise ValueError(f"batch_size ({c.batch_size}) must be a multiple of grad_accum x processes "
                             f"({c.grad_accum} x {self.world})")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        vocab = model.config.vocab_size
        if reference is not None and c.objective != "dpo":
            raise ValueError(f'a reference model is for objective "dpo", not {c.objective!r}')
        train_ids = as_data(train_ids, c.objective)
        extra = {"reference": reference} if c.objective == "dpo" else {}
        self.objective = OBJECTIVES[c.objective](c, train_ids, vocab, **extra)
        # evaluation never touches the stream's position or carried state: a recurrent
        # model is scored on random windows from a fresh state
        stateful = isinstance(self.objective, Stream)
        self.probe = NextToken(c, train_ids, vocab) if stateful else self.objective
        torch.manual_seed(c.seed)
        self.batch_gen = torch.Generator().manual_seed(c.seed)
        self.optimizer = make_optimizer(model, c)
        self.net = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=ids)
        self.per_rank = c.batch_size // self.world
        self.micro = self.per_rank // c.grad_accum
        self.grad_norm: torch.Tensor | None = None  # global gradient norm of the last step, before clipping

    def step(self, step: int) -> float:
        """Optimizer update number ``step`` (0-based); returns its mean training loss."""
        c, dev = self.config, self.device
        set_lr(self.optimizer, step, c)
        x, y = self.objective.sample(self.batch_gen)  # the global batch
        first = self.rank * self.per_rank
        x, y = x[first:first + self.per_rank], y[first:first + self.per_rank]  # my shard
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(c.grad_accum):
            rows = slice(k * self.micro, (k + 1) * self.micro)
            sync = k == c.grad_accum - 1 or self.world == 1
            with (nullcontext() if sync else self.net.no_sync()), _autocast(dev, c.mixed_precision):
                loss = self.objective.loss(self.net, x[rows].to(dev), y[rows].to(dev), first + rows.start)
                loss = loss / c.grad_accum
            loss.backward()
            total += loss.item()
        # the global gradient norm before clipping, kept as a tensor (no device sync) for logs of spikes
        if c.grad_clip > 0:
            self.grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        else:
            self.grad_norm = nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        self.optimizer.step()
        return total

    @torch.no_grad()
    def mean_loss(self, batches) -> float:
        """The objective's mean loss over fixed batches, in eval mode."""
        with eval_mode(self.model), _autocast(self.device, self.config.mixed_precision):
            losses = [self.probe.eval_loss(self.model, x.to(self.device), y.to(self.device)).item()
                      for x, y in batches]
        return sum(losses) / len(losses)

    def eval_batches(self, ids: torch.Tensor, seed: int) -> list:
        """``eval_batches`` fixed batches of ``ids``, drawn from a generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(seed)
        return [self.probe.eval_batch(ids, g) for _ in range(self.config.eval_batches)]

    def state_dict(self, step: int, history: History) -> dict:
        return {
            "kind": STATE_KIND, "step": step, "model_class": type(self.model).__name__,
            "model_config": model_config(self.model), "train_config": asdict(self.config),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "objective": self.objective.state_dict(), "rng": _rng_state(self.batch_gen, self.device),
            "history": asdict(history),
        }

    def load_state_dict(self, state: dict, source: str) -> tuple[int, History]:
        saved = TrainConfig(**state["train_config"])
        if saved != self.config:
            diff = {f.name: (getattr(saved, f.name), getattr(self.config, f.name)) for f in fields(self.config)
                    if getattr(saved, f.name) != getattr(self.config, f.name)}
            raise ValueError(f"{source} was saved with another TrainConfig (saved, now): {diff}")
        _load_model_state(self.model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.objective.load_state_dict(state.get("objective", {}))
        _set_rng_state(state["rng"], self.batch_gen)
        return state["step"], History(**state["history"])


def save_checkpoint(path: str | Path, trainer: Trainer, step: int, history: History) -> None:
    """Everything needed to continue training exactly: see the module docstring."""
    atomic_save(trainer.state_dict(step, history), path)


def as_data(ids, objective: str) -> torch.Tensor:
    """Training data as the objective reads it: a 1-D token stream, or examples ``(N, rows, T)``."""
    if objective in EXAMPLE_OBJECTIVES:
        data = torch.as_tensor(ids, dtype=torch.long)
        check_examples(data, OBJECTIVES[objective].rows)
        return data
    return as_tensor(ids)


def _split_data(train_ids, val_ids, config):
    if config is None and isinstance(val_ids, TrainConfig):  # train(model, (train_ids, val_ids), config)
        config, val_ids = val_ids, None
    if val_ids is None:
        if not (isinstance(train_ids, (tuple, list)) and len(train_ids) == 2):
            raise TypeError(
                "pass train(model, train_ids, val_ids, config) or train(model, (train_ids, val_ids), config)"
            )
        train_ids, val_ids = train_ids
    if config is None:
        raise TypeError("train() needs a TrainConfig")
    return as_data(train_ids, config.objective), as_data(val_ids, config.objective), config


def train(model: nn.Module, train_ids, val_ids=None, config: TrainConfig | None = None,
          device: torch.device | str | None = None, log_every: int = 0, *,
          checkpoint: str | Path | None = None, checkpoint_every: int = 0, resume: bool = False,
          stop_at: int | None = None, log=None, extra_val: dict | None = None,
          reference: nn.Module | None = None) -> History:
    """Train ``model`` in place for ``config.steps`` updates; returns the evaluation history.

    ``config.objective`` says what the model must do (see the module docstring):
    ``"clm"`` and ``"mlm"`` models map ids ``(B, T)`` to logits ``(B, T, V)``;
    ``"tbptt"`` models map ``(ids, state)`` to ``(logits, state)``. The model is
    moved to ``device`` (default: where its parameters are). Seeds the global
    torch RNG with ``config.seed`` (for dropout). With ``log_every > 0`` prints the
    training loss every that many steps; otherwise prints nothing.

    ``checkpoint``: a file the full training state is written to every
    ``checkpoint_every`` steps (if > 0), at ``stop_at`` and at the end. With
    ``resume=True`` and that file present, training continues from it.
    ``stop_at``: stop (and save) after that many steps, as if interrupted.
    ``log``: called with a line of text after every evaluation (on rank 0).
    ``extra_val``: ``{name: token ids}``; every evaluation also records the mean
    next-token loss on fixed random windows of each (``history.extra[name]``),
    whatever the objective: the old domain during continued pretraining or SFT.
    ``reference``: the frozen reference model of objective ``"dpo"``.

    Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in
    DistributedDataParallel; each process trains on its own shard of every global
    batch and only rank 0 writes the checkpoint and prints.
    """
    train_ids, val_ids, c = _split_data(train_ids, val_ids, config)
    t = Trainer(model, train_ids, c, device, reference=reference)
    eval_sets = {"train": t.eval_batches(train_ids, c.seed + 1), "val": t.eval_batches(val_ids, c.seed + 2)}
    lm = NextToken(c, train_ids, model.config.vocab_size)
    extra_sets = {}
    for k, (name, ids) in enumerate((extra_val or {}).items()):
        g = torch.Generator().manual_seed(c.seed + 3 + k)
        extra_sets[name] = [lm.eval_batch(as_tensor(ids), g) for _ in range(c.eval_batches)]
    history = History()
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        start, history = t.load_state_dict(load_checkpoint(checkpoint), str(checkpoint))

    def record(step: int) -> None:
        history.steps.append(step)
        history.train_loss.append(t.mean_loss(eval_sets["train"]))
        history.val_loss.append(t.mean_loss(eval_sets["val"]))
        history.lr.append(lr_at(max(step - 1, 0), c))
        for name, batches in extra_sets.items():
            with eval_mode(t.model), torch.no_grad(), _autocast(t.device, c.mixed_precision):
                losses = [lm.eval_loss(t.model, x.to(t.device), y.to(t.device)).item() for x, y in batches]
            history.extra.setdefault(name, []).append(sum(losses) / len(losses))
        if log is not None and t.rank == 0:
            log(f"step {step:>6}  train {history.train_loss[-1]:.4f}  val {history.val_loss[-1]:.4f} nats/token")

    def save(step: int) -> None:
        if checkpoint is not None and t.rank == 0:
            save_checkpoint(checkpoint, t, step, history)

    end = c.steps if stop_at is None else min(stop_at, c.steps)
    model.train()
    if start == 0:
        record(0)
    for step in range(start, end):
        loss = t.step(step)
        done = step + 1
        if log_every and done % log_every == 0 and t.rank == 0:
            print(f"step {done:>6}  loss {loss:.4f}  lr {lr_at(step, c):.2e}", flush=True)
        if done % c.eval_every == 0 or done == c.steps:
            record(done)
        if checkpoint_every and done % checkpoint_every == 0 and done < end:
            save(done)
    if start < end or not (checkpoint and Path(checkpoint).is_file()):
        save(end)
    if t.world > 1:
        import torch.distributed as dist

        dist.barrier()
    model.eval()
    return history
