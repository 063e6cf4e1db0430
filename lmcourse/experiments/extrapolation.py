"""Chapter 5's experiment: train at one length, then read longer windows, scored on the same targets.

Six small character GPTs differ *only* in how they are told where a token is
(:mod:`lmcourse.positions`): no positions at all, learned, sinusoidal (scaled to
the embeddings' size as :class:`lmcourse.transformer.GPT` does, and unscaled, an
ablation), RoPE and ALiBi. Each trains on windows of ``T_train`` characters with
several seeds, same batches, same steps. Each model accepts ``4 * T_train``
positions, so it can *read* longer windows than it was trained on.

Every model and every length is scored on the **same targets**: every character
of the first ``eval_chars`` validation characters (after the first), read in
windows of T characters sliding by T/4 (:func:`lmcourse.train.stream_token_nll`),
so each scored character has between 3T/4 and T - 1 characters of context in
front of it. Only the amount of context changes from column to column: a
column-to-column change is the effect of the longer context, nothing else.

    python -m lmcourse extrapolation

writes ``checkpoints/extrapolation.json``, which chapter 5 reads (with a small
live run beside it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import as_tensor, load_shakespeare, random_windows
from ..positions import SinusoidalPositions
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer
from ..train import TrainConfig, stream_token_nll, train
from ..transformer import GPT, GPTConfig

T_TRAIN = 32
KINDS = ("none", "learned", "sinusoidal", "sinusoidal, unscaled", "rope", "alibi")
BASE_MODEL = GPTConfig(vocab_size=75, context_length=4 * T_TRAIN, d_model=64, n_layers=2, n_heads=4)
BASE_TRAIN = TrainConfig(steps=600, batch_size=16, context_length=T_TRAIN, lr=3e-3, min_lr=3e-4, warmup_steps=20,
                         eval_every=600, eval_batches=2)


@dataclass(frozen=True)
class Setup:
    """What one run of the experiment trains and how it scores it."""

    model: GPTConfig = BASE_MODEL
    train: TrainConfig = BASE_TRAIN
    lengths: tuple[int, ...] = (T_TRAIN, 2 * T_TRAIN, 4 * T_TRAIN)  # evaluation window lengths
    eval_chars: int = 50_000  # the validation characters every model and length is scored on
    position_windows: int = 256  # random validation windows of the longest length, for the loss by position


def build(kind: str, base: GPTConfig = BASE_MODEL) -> GPT:
    """The GPT of ``kind`` (one of :data:`KINDS`), from the seed already set.

    ``"sinusoidal, unscaled"`` is the sinusoidal model with the table added at
    full size (entries up to 1), instead of scaled to the embeddings' initial size
    (0.02, as :func:`lmcourse.transformer.position_modules` does).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    positional = "sinusoidal" if kind.startswith("sinusoidal") else kind
    model = GPT(replace(base, positional=positional))
    if kind == "sinusoidal, unscaled":
        model.pos_emb = SinusoidalPositions(base.d_model, base.context_length, scale=1.0)
    return model


def score(model: GPT, val_ids: torch.Tensor, lengths: tuple[int, ...]) -> dict[int, float]:
    """Mean NLL of every token of ``val_ids`` after the first, in windows of each length sliding by a quarter."""
    return {T: stream_token_nll(model, val_ids, T, stride=max(1, T // 4)).mean().item() for T in lengths}


@torch.no_grad()
def loss_by_position(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean loss at each position of the windows ``x`` ``(B, T)`` against ``y``: a ``(T,)`` tensor."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(x.to(device))  # (B, T, V)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="none")
    model.train(was_training)
    return nll.view(y.shape).mean(0).cpu()  # (T,)


def embedding_sizes(model: GPT, T: int) -> dict[str, float]:
    """Mean norm of a token embedding row and of an added position row (0 if none is added)."""
    token = model.tok_emb.weight.detach().norm(dim=-1).mean().item()
    position = 0.0 if model.pos_emb is None else model.pos_emb(T).detach().norm(dim=-1).mean().item()
    return {"token": round(token, 4), "position": round(position, 4)}


def run(kind: str, seed: int, setup: Setup, train_ids: torch.Tensor, val_ids: torch.Tensor,
        windows: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Train one model and score it: losses by length, loss by position, sizes, seconds."""
    torch.manual_seed(seed)
    model = build(kind, setup.model)
    start = time.perf_counter()
    train(model, train_ids, val_ids, replace(setup.train, seed=seed), device="cpu")
    seconds = time.perf_counter() - start
    nll = score(model, val_ids[: setup.eval_chars], setup.lengths)
    return {"seed": seed, "nll": {str(T): round(v, 4) for T, v in nll.items()},
            "by_position": [round(v, 4) for v in loss_by_position(model, *windows).tolist()],
            "sizes": embedding_sizes(model, setup.train.context_length),
            "train_seconds": round(seconds, 1), "parameters": model.num_params()}


def summarise(runs: list[dict], lengths: tuple[int, ...]) -> dict:
    """Mean and standard deviation over seeds, per length and of the change from the first length to the last."""
    out: dict = {"mean": {}, "std": {}}
    change = [r["nll"][str(lengths[-1])] - r["nll"][str(lengths[0])] for r in runs]
    for key, values in [(str(T), [r["nll"][str(T)] for r in runs]) for T in lengths] + [("change", change)]:
        out["mean"][key] = round(statistics.fmean(values), 4)
        out["std"][key] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse extrapolation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per kind (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=BASE_TRAIN.steps, help="optimizer steps per run")
    parser.add_argument("--eval-chars", type=int, default=Setup.eval_chars, help="validation characters scored")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, metavar="KIND")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "extrapolation.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 2 or args.eval_chars < 4 * T_TRAIN + 1:
        parser.error(f"need --seeds >= 1, --steps >= 2 and --eval-chars > {4 * T_TRAIN}")
    torch.set_num_threads(args.threads)
    setup = Setup(train=replace(BASE_TRAIN, steps=args.steps, eval_every=args.steps,
                                warmup_steps=min(BASE_TRAIN.warmup_steps, args.steps - 1)),
                  eval_chars=args.eval_chars)
    tok = shakespeare_char_tokenizer()
    train_ids = as_tensor(tok.encode(load_shakespeare("train")))
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))
    windows = random_windows(val_ids, setup.position_windows, setup.lengths[-1],
                             generator=torch.Generator().manual_seed(1))
    rows = []
    for kind in args.kinds:
        runs = [run(kind, seed, setup, train_ids, val_ids, windows) for seed in range(args.seeds)]
        rows.append({"kind": kind, "runs": runs, **summarise(runs, setup.lengths)})
        m, s = rows[-1]["mean"], rows[-1]["std"]
        print(f"{kind:<21} " + "  ".join(f"T={T}: {m[str(T)]:.3f} +- {s[str(T)]:.3f}" for T in setup.lengths)
              + f"  ({statistics.fmean(r['train_seconds'] for r in runs):.0f} s per run)", flush=True)
    command = (f"python -m lmcourse extrapolation --seeds {args.seeds} --steps {args.steps} "
               f"--eval-chars {args.eval_chars}")
    if list(args.kinds) != list(KINDS):
        command += " --kinds " + " ".join(f"'{k}'" if " " in k else k for k in args.kinds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": command, "model": asdict(setup.model), "train": asdict(setup.train),
        "tokens_per_run": setup.train.steps * setup.train.batch_size * setup.train.context_length,
        "lengths": list(setup.lengths),
        "eval": (f"every character of the first {setup.eval_chars} validation characters after the first, "
                 "in windows of T sliding by T/4, for every T"),
        "by_position": f"{setup.position_windows} random validation windows of {setup.lengths[-1]} (seed 1)",
        "rows": rows}, indent=1) + "\n")
    return 0
