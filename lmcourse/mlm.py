"""Masked language modeling: BERT's objective on a bidirectional transformer encoder.

A causal language model factorises P(x) left to right and is trained on every
position, ``L_CLM = -sum_t log p(x_t | x_<t)``. A *masked* language model
(Devlin et al., 2019, "BERT") corrupts a random subset M of the positions and
predicts the originals from everything that is left, on both sides::

    L_MLM = -(1/|M|) sum_{t in M} log p(x_t | x~)       x~ = the corrupted sequence

:func:`mask_tokens` draws M (each non-special position with probability 0.15)
and corrupts it the BERT way: 80 percent of the chosen positions become
``[MASK]``, 10 percent a random token, 10 percent stay as they are, so the model
cannot learn that only ``[MASK]`` positions need a prediction. The labels hold
the original id at chosen positions and ``-100`` elsewhere, the ``ignore_index``
of ``F.cross_entropy`` (and Hugging Face's convention), so :func:`mlm_loss` is
one call.

:class:`MaskedLM` is the GPT of chapter 6 with its blocks built as
``Block(config, causal=False)``: every position attends to every other. The
output head is the token embedding transposed (always tied). :func:`fill_mask`
gives the top-k predictions at each ``[MASK]`` of a text.

    python -m lmcourse.mlm train [--steps N] [--out PATH]

reproduces the checkpoint the package ships (seeded, on the CPU). Its tokenizer is
``shakespeare_char_tokenizer(special_tokens=["[MASK]"])``: ``[MASK]`` takes id 0,
so every character's id is one more than in the plain tokenizer of chapters 1-6.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .shipped import CHECKPOINT_DIR, load_weights, sha256, write_manifest_entry
from .shipped import save_weights as save_checkpoint  # config + float16 weights, written atomically
from .data import as_tensor, random_windows
from .transformer import INIT_STD, Block, GPTConfig, position_modules

MASK_TOKEN = "[MASK]"
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index; Hugging Face uses it too
PRETRAINED = "mlm_char"


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    special_token_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of a batch of token ids: returns ``(inputs, labels)``.

    Each position whose id is not special is *chosen* independently with
    probability ``mlm_probability``. A chosen position becomes ``mask_token_id``
    (probability 0.8), a random token (0.1) or keeps its id (0.1). The random
    token is drawn uniformly from the non-special ids (``mask_token_id`` and
    ``special_token_ids`` are never drawn; it may equal the original, as in BERT).
    ``labels`` is the original id at chosen positions and ``-100`` elsewhere.

    All random numbers come from ``generator`` on the CPU (three draws of the
    shape of ``ids``, always), so a seed gives the same result on every device.

    >>> g = torch.Generator().manual_seed(0)
    >>> ids = torch.arange(1, 11).repeat(100, 1)                   # (100, 10)
    >>> inputs, labels = mask_tokens(ids, mask_token_id=0, vocab_size=11, generator=g)
    >>> chosen = labels != -100
    >>> bool((labels[chosen] == ids[chosen]).all()), bool((inputs[~chosen] == ids[~chosen]).all())
    (True, True)
    """
    ids = torch.as_tensor(ids)
    if ids.dtype != torch.long:
        raise ValueError(f"ids must be torch.long token ids, got {ids.dtype}")
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    specials = sorted({int(mask_token_id), *(int(s) for s in special_token_ids)})
    if any(not 0 <= s < vocab_size for s in specials):
        raise ValueError(f"special ids {specials} must lie in 0..{vocab_size - 1}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must lie in 0..{vocab_size - 1}, got {int(ids.min())}..{int(ids.max())}")
    normal = torch.ones(vocab_size, dtype=torch.bool)
    normal[specials] = False
    normal_ids = normal.nonzero().squeeze(1)  # (V - n_special,) the ids a random replacement may take
    if len(normal_ids) == 0:
        raise ValueError("every id is special: nothing to draw random replacements from")

    cpu = ids.cpu()
    u_choose = torch.rand(cpu.shape, generator=generator)
    u_action = torch.rand(cpu.shape, generator=generator)
    random_ids = normal_ids[torch.randint(len(normal_ids), cpu.shape, generator=generator)]
    chosen = (u_choose < mlm_probability) & normal[cpu]  # specials are never chosen
    to_mask = chosen & (u_action < 0.8)
    to_random = chosen & (u_action >= 0.8) & (u_action < 0.9)  # the last 0.1 keep their id
    inputs = torch.where(to_mask, torch.full_like(cpu, mask_token_id), cpu)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = torch.where(chosen, cpu, torch.full_like(cpu, IGNORE_INDEX))
    return inputs.to(ids.device), labels.to(ids.device)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions with a label (``labels != -100``).

    ``logits`` is ``(..., V)``, ``labels`` ``(...)``. Unchosen positions add nothing
    and do not count in the mean: ``F.cross_entropy(..., ignore_index=-100)``.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


class MaskedLM(nn.Module):
    """A bidirectional transformer encoder with a tied MLM head: ``model(ids)`` -> ``(B, T, V)``.

    The same parts as :class:`lmcourse.transformer.GPT` (``GPTConfig``, the four
    position schemes, pre-norm blocks) but every block is
    ``Block(config, causal=False)``, and the head is always the embedding
    transposed: ``logits = LN(h) E^T`` (``config.tie_weights`` must be true).

    >>> model = MaskedLM(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=1, n_heads=2))
    >>> model(torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 10])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not config.tie_weights:
            raise ValueError("MaskedLM's head is the tied embedding; use tie_weights=True")
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb, self.rotary, self.alibi = position_modules(c)  # as GPT does
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c, causal=False) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model, bias=c.bias)
        for name, p in self.named_parameters():  # GPT-2's initialisation, as in transformer.GPT
            if p.dim() >= 2:
                std = INIT_STD / math.sqrt(2 * c.n_layers) if name.endswith("proj.weight") else INIT_STD
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def num_params(self) -> int:
        """The number of parameters (the head is the embedding, counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _run(self, ids: torch.Tensor, need_weights: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, T), got shape {tuple(ids.shape)}")
        T = ids.shape[1]
        if T > self.config.context_length:
            raise ValueError(f"sequence of length {T} is longer than context_length {self.config.context_length}")
        x = self.tok_emb(ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(T)  # (T, C)
        x = self.drop(x)
        bias = self.alibi(T) if self.alibi is not None else None  # (H, T, T)
        maps = []
        for block in self.blocks:
            x, w = block(x, bias=bias, rotary=self.rotary, need_weights=need_weights)
            if w is not None:
                maps.append(w)
        return F.linear(self.ln_f(x), self.tok_emb.weight), maps  # (B, T, V): h E^T

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)`` at every position, each computed from the whole sequence."""
        return self._run(ids, need_weights=False)[0]

    @torch.no_grad()
    def attention_maps(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """The attention weights of every layer, each ``(B, H, T, T)`` (rows sum to 1)."""
        return self._run(ids, need_weights=True)[1]


@torch.no_grad()
def fill_mask(model: MaskedLM, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``top_k`` most probable tokens, with probabilities, at each ``[MASK]`` of ``text``.

    Returns one list per mask, left to right, best first. All masks are
    predicted at once from the same input (no mask sees another's answer).
    """
    mask_id = tokenizer.token_to_id(MASK_TOKEN)
    ids = tokenizer.encode(text)
    where = [i for i, t in enumerate(ids) if t == mask_id]
    if not where:
        raise ValueError(f"the text has no {MASK_TOKEN} token")
    if not 1 <= top_k <= model.config.vocab_size:
        raise ValueError(f"top_k must be in 1..{model.config.vocab_size}, got {top_k}")
    was_training = model.training
    model.eval()
    device = model.tok_emb.weight.device
    logits = model(torch.tensor([ids], device=device))[0, where]  # (M, V)
    model.train(was_training)
    probs = torch.softmax(logits.double().cpu(), dim=-1)
    top = probs.topk(top_k, dim=-1)
    return [[(tokenizer.decode([int(i)]), float(p)) for p, i in zip(ps, ix)] for ps, ix in zip(top.values, top.indices)]


@torch.no_grad()
def evaluate_mlm(model: MaskedLM, ids, *, mask_token_id: int, batch_size: int = 16, num_batches: int = 8,
                 seed: int = 1234, context_length: int | None = None) -> dict[str, float]:
    """MLM loss (nats) and accuracy over the chosen positions of seeded random windows.

    Windows and masks come from ``seed`` only, so two models see the same test.
    Returns ``{"loss", "accuracy", "mask_accuracy", "positions"}``; ``accuracy``
    counts all chosen positions, ``mask_accuracy`` only those shown as ``[MASK]``.
    """
    T = context_length or model.config.context_length
    g = torch.Generator().manual_seed(seed)
    device = model.tok_emb.weight.device
    was_training = model.training
    model.eval()
    total = correct = correct_m = n = n_m = 0.0
    for _ in range(num_batches):
        x, _y = random_windows(as_tensor(ids), batch_size, T, generator=g)
        inputs, labels = mask_tokens(x, mask_token_id=mask_token_id, vocab_size=model.config.vocab_size, generator=g)
        logits = model(inputs.to(device)).float().cpu()  # (B, T, V)
        chosen, shown_mask = labels != IGNORE_INDEX, inputs == mask_token_id
        total += F.cross_entropy(logits[chosen], labels[chosen], reduction="sum").item()
        hit = logits.argmax(-1) == labels
        correct, correct_m = correct + hit[chosen].sum().item(), correct_m + hit[shown_mask].sum().item()
        n, n_m = n + chosen.sum().item(), n_m + shown_mask.sum().item()
    model.train(was_training)
    return {"loss": total / n, "accuracy": correct / n, "mask_accuracy": correct_m / n_m, "positions": int(n)}


@dataclass(frozen=True)
class MLMTrainConfig:
    """How :func:`train_mlm` trains (AdamW, warmup + cosine as in :mod:`lmcourse.train`)."""

    steps: int = 600  # optimizer updates (about 10 minutes on one busy CPU thread)
    batch_size: int = 32  # windows per batch (B)
    lr: float = 3e-3  # peak learning rate
    min_lr: float = 3e-4  # at the end of the cosine
    warmup_steps: int = 50  # linear warmup
    weight_decay: float = 0.1  # on 2-D parameters only
    grad_clip: float = 1.0  # global gradient-norm clip
    mlm_probability: float = 0.15  # BERT's share of chosen positions
    seed: int = 0  # seeds the model init, the batches and the masks


def train_mlm(model: MaskedLM, train_ids, *, mask_token_id: int, config: MLMTrainConfig = MLMTrainConfig(),
              log_every: int = 0) -> list[float]:
    """Train ``model`` in place on freshly masked random windows of ``train_ids``.

    Every step draws new windows and a new mask from one seeded CPU generator
    (dynamic masking, as RoBERTa does). Returns the MLM loss of every step.
    """
    from .train import TrainConfig, lr_at, make_optimizer

    c = config
    sched = TrainConfig(steps=c.steps, lr=c.lr, min_lr=c.min_lr, warmup_steps=c.warmup_steps,
                        weight_decay=c.weight_decay)
    opt = make_optimizer(model, sched)
    g = torch.Generator().manual_seed(c.seed)
    device = model.tok_emb.weight.device
    ids = as_tensor(train_ids)
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for step in range(c.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, sched)
        x, _ = random_windows(ids, c.batch_size, model.config.context_length, generator=g)
        inputs, labels = mask_tokens(x, mask_token_id=mask_token_id, vocab_size=model.config.vocab_size,
                                     mlm_probability=c.mlm_probability, generator=g)
        loss = mlm_loss(model(inputs.to(device)), labels.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            print(f"step {step + 1:>5}  loss {recent:.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    return losses


# ----------------------------------------------------------------------------------
# The shipped checkpoint

# ALiBi's -m|i - j| bias starts every head looking at its neighbours, the context that
# matters most for a missing character; with learned positions the model sat at the
# unigram loss (about 3.07 nats) for the first 500 steps of a trial run (context 128).
PRETRAINED_CONFIG = GPTConfig(vocab_size=76, context_length=64, d_model=128, n_layers=4, n_heads=4, positional="alibi")
PRETRAINED_TRAIN = MLMTrainConfig()
REPRODUCE = "python -m lmcourse.mlm train"


def mask_tokenizer():
    """The course's character tokenizer with ``[MASK]`` at id 0 (characters shift up by one)."""
    from .tokenization import shakespeare_char_tokenizer

    return shakespeare_char_tokenizer(special_tokens=[MASK_TOKEN])


def load_pretrained_mlm(path: str | Path | None = None, device: torch.device | str = "cpu") -> MaskedLM:
    """The shipped character-level masked LM (float32, eval mode); use it with :func:`mask_tokenizer`."""
    path = Path(path) if path is not None else CHECKPOINT_DIR / f"{PRETRAINED}.pt"
    return load_weights(path, lambda cfg: MaskedLM(GPTConfig(**cfg)), "MaskedLM", REPRODUCE, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse.mlm")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the shipped character MLM (seeded, CPU)")
    p.add_argument("--steps", type=int, default=PRETRAINED_TRAIN.steps)
    p.add_argument("--out", type=Path, default=CHECKPOINT_DIR / f"{PRETRAINED}.pt")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: bit-reproducible, and fastest on a busy CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from .data import load_shakespeare

    tok = mask_tokenizer()
    mask_id = tok.token_to_id(MASK_TOKEN)
    train_ids = as_tensor(tok.encode(load_shakespeare("train")))
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))
    cfg = MLMTrainConfig(**{**asdict(PRETRAINED_TRAIN), "steps": args.steps,
                            "warmup_steps": min(PRETRAINED_TRAIN.warmup_steps, args.steps - 1)})
    torch.manual_seed(cfg.seed)
    model = MaskedLM(PRETRAINED_CONFIG)
    start = time.perf_counter()
    train_mlm(model, train_ids, mask_token_id=mask_id, config=cfg, log_every=100)
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out)
    val = evaluate_mlm(load_pretrained_mlm(args.out), val_ids, mask_token_id=mask_id)  # the stored fp16 weights
    entry = {
        "name": args.out.stem, "file": args.out.name, "command": f"{REPRODUCE} --steps {args.steps}",
        "config": asdict(PRETRAINED_CONFIG), "train_config": asdict(cfg), "steps": cfg.steps,
        "tokenizer": "shakespeare_char_tokenizer(special_tokens=['[MASK]'])",
        "val_mlm_loss": round(val["loss"], 4), "val_masked_accuracy": round(val["accuracy"], 4),
        "val_mask_token_accuracy": round(val["mask_accuracy"], 4), "val_positions": val["positions"],
        "val_eval": "evaluate_mlm(model, val_ids, mask_token_id=0): 8 batches x 16 windows x 64 characters, seed 1234",
        "parameters": model.num_params(), "sha256": sha256(args.out), "dtype": "float16",
        "train_seconds": round(seconds),
    }
    write_manifest_entry(entry, args.out.parent)
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
