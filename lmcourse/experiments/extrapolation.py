"""Chapter 5's experiment: train at one length, then read longer windows, scored on the same targets.

Seven small character GPTs differ *only* in how they are told where a token is
(:mod:`lmcourse.positions`): no positions at all, learned, sinusoidal (scaled to
the embeddings' size as :class:`lmcourse.transformer.GPT` does; unscaled, an
ablation; and as Vaswani et al. scale it, the token embeddings times sqrt(D)),
RoPE and ALiBi. Each trains on windows of ``T_train`` characters with several
seeds, same batches, same steps, long enough to use its window: the loss at
positions 16-31 is well below the loss at positions 2-3. Each model accepts
``4 * T_train`` positions, so it can *read* longer windows than it was trained on.

Every model and every length is scored on the **same targets**: every character
of the first ``eval_chars`` validation characters (after the first), read in
windows of T characters sliding by T/4 (:func:`lmcourse.train.stream_token_nll`;
the first window scores all its positions, every later character has between
3T/4 and T - 1 characters in front of it), and again in windows that do not
overlap (stride T: a character has anywhere from 0 to T - 1 in front of it). The
loss by position reads windows of ``4 * T_train`` starting every
``position_stride`` characters of the same stretch: position p scores the
characters at one residue modulo the stride, so positions a whole number of strides
apart score the same characters, and a span of whole strides scores them all alike.

Each RoPE model then reads ``4 * T_train`` characters with its frequencies changed
(:func:`rope_variants`: position interpolation, "NTK-aware" scaling, YaRN, and
interpolating only the pairs slower or faster than the trained window), scored
as is and after a short fine-tune at the longer length, beside plain RoPE
fine-tuned alike.

    python -m lmcourse extrapolation

writes ``checkpoints/extrapolation.json``, which chapter 5 reads (with a small
live run beside it).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import as_tensor, load_shakespeare
from ..positions import (
    RotaryEmbedding,
    SinusoidalPositions,
    blend_frequencies,
    ntk_frequencies,
    rope_frequencies,
    rope_wavelengths,
    yarn_attention_scale,
    yarn_frequencies,
)
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer
from ..train import TrainConfig, stream_token_nll, train
from ..transformer import GPT, GPTConfig, scale_input

T_TRAIN = 32
KINDS = ("none", "learned", "sinusoidal", "sinusoidal, unscaled", "sinusoidal, x sqrt(D)", "rope", "alibi")
BASE_MODEL = GPTConfig(vocab_size=75, context_length=4 * T_TRAIN, d_model=64, n_layers=2, n_heads=4)
BASE_TRAIN = TrainConfig(steps=6000, batch_size=16, context_length=T_TRAIN, lr=3e-3, min_lr=3e-4, warmup_steps=20,
                         eval_every=6000, eval_batches=2)
# the short fine-tune of every RoPE variant at the longer length (Chen et al. fine-tune for about 1,000 steps)
FINE_TUNE = TrainConfig(steps=100, batch_size=16, context_length=4 * T_TRAIN, lr=3e-4, min_lr=3e-4,
                        warmup_steps=10, eval_every=100, eval_batches=2)
ROPE_VARIANTS = ("plain", "interpolated (PI)", "NTK-aware", "YaRN", "slow pairs interpolated",
                 "fast pairs interpolated")


@dataclass(frozen=True)
class Setup:
    """What one run of the experiment trains and how it scores it."""

    model: GPTConfig = BASE_MODEL
    train: TrainConfig = BASE_TRAIN
    fine_tune: TrainConfig = FINE_TUNE
    lengths: tuple[int, ...] = (T_TRAIN, 2 * T_TRAIN, 4 * T_TRAIN)  # evaluation window lengths
    eval_chars: int = 50_000  # the validation characters every model and length is scored on
    position_stride: int = 8  # windows of the longest length start every this many characters, for the loss by position


def build(kind: str, base: GPTConfig = BASE_MODEL) -> GPT:
    """The GPT of ``kind`` (one of :data:`KINDS`), from the seed already set.

    ``"sinusoidal, unscaled"`` is the sinusoidal model with the table added at
    full size (entries up to 1), instead of scaled to the embeddings' initial size
    (0.02, as :func:`lmcourse.transformer.position_modules` does).
    ``"sinusoidal, x sqrt(D)"`` adds the full-size table to token embeddings
    multiplied by sqrt(D), as Vaswani et al. do (same initial weights).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    positional = "sinusoidal" if kind.startswith("sinusoidal") else kind
    model = GPT(replace(base, positional=positional))
    if kind in ("sinusoidal, unscaled", "sinusoidal, x sqrt(D)"):
        model.pos_emb = SinusoidalPositions(base.d_model, base.context_length, scale=1.0)
    if kind == "sinusoidal, x sqrt(D)":
        scale_input(model, base.d_model ** 0.5)  # the same Parameter: initial values and the tie kept
    return model


def score(model: GPT, val_ids: torch.Tensor, lengths: tuple[int, ...]) -> dict[int, float]:
    """Mean NLL of every token of ``val_ids`` after the first, in windows of each length sliding by a quarter."""
    return {T: stream_token_nll(model, val_ids, T, stride=max(1, T // 4)).mean().item() for T in lengths}


def score_disjoint(model: GPT, val_ids: torch.Tensor, lengths: tuple[int, ...]) -> dict[int, float]:
    """Mean NLL of every token of ``val_ids`` after the first, in windows of each length that do not overlap."""
    return {T: stream_token_nll(model, val_ids, T, stride=T).mean().item() for T in lengths}


@torch.no_grad()
def loss_by_position(model: GPT, ids: torch.Tensor, T: int, stride: int, batch: int = 512) -> torch.Tensor:
    """The mean loss at each position of windows of ``T`` tokens starting every ``stride`` tokens of ``ids``: ``(T,)``.

    Position ``t`` of a window predicts its token ``t + 1`` from ``t + 1`` tokens of
    context; every position averages windows from the same stretch of text.
    """
    if T < 1 or stride < 1 or len(ids) < T + 1:
        raise ValueError(f"need T >= 1, stride >= 1 and more than T tokens, got T={T}, stride={stride}, {len(ids)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    starts = torch.arange(0, len(ids) - T, stride)
    total = torch.zeros(T, dtype=torch.float64)
    for i in range(0, len(starts), batch):
        windows = ids[starts[i : i + batch, None] + torch.arange(T + 1)].to(device)  # (b, T + 1)
        logits = model(windows[:, :-1])  # (b, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten(), reduction="none")
        total += nll.view(-1, T).sum(0).double().cpu()
    model.train(was_training)
    return total / len(starts)  # (T,)


def embedding_sizes(model: GPT, T: int) -> dict[str, float]:
    """Mean norm of a token embedding row and of an added position row (0 if none is added)."""
    token = model.tok_emb.weight.detach().norm(dim=-1).mean().item()
    position = 0.0 if model.pos_emb is None else model.pos_emb(T).detach().norm(dim=-1).mean().item()
    return {"token": round(token, 4), "position": round(position, 4)}


def rope_variants(d_head: int, trained_length: int, factor: float) -> dict[str, RotaryEmbedding]:
    """RoPE read at ``factor`` times the trained length, each way of :data:`ROPE_VARIANTS`.

    *plain*: the trained frequencies. *interpolated (PI)*: every frequency divided by
    ``factor`` (Chen et al., 2023). *NTK-aware*: a larger base (:func:`ntk_frequencies`).
    *YaRN*: :func:`yarn_frequencies` with its temperature (Peng et al., 2023).
    *slow pairs interpolated*: only the pairs whose wavelength is longer than the
    trained window, which never saw their whole circle in training; *fast pairs
    interpolated*: only the others (the control).
    """
    n = int(factor * trained_length)
    theta = rope_frequencies(d_head)
    slow = (rope_wavelengths(d_head) > trained_length).double()  # 1: never completed a turn in training
    return {
        "plain": RotaryEmbedding(d_head, n),
        "interpolated (PI)": RotaryEmbedding(d_head, n, scale=1 / factor),
        "NTK-aware": RotaryEmbedding(d_head, n, freqs=ntk_frequencies(d_head, factor)),
        "YaRN": RotaryEmbedding(d_head, n, freqs=yarn_frequencies(d_head, factor, trained_length),
                                attention_scale=yarn_attention_scale(factor)),
        "slow pairs interpolated": RotaryEmbedding(d_head, n, freqs=blend_frequencies(theta, factor, 1 - slow)),
        "fast pairs interpolated": RotaryEmbedding(d_head, n, freqs=blend_frequencies(theta, factor, slow)),
    }


def extend_rope(model: GPT, seed: int, setup: Setup, train_ids: torch.Tensor, val_ids: torch.Tensor) -> dict:
    """Every RoPE variant on a trained RoPE ``model``: scores as is and after the short fine-tune (copies)."""
    d_head = model.config.d_model // model.config.n_heads
    factor = setup.fine_tune.context_length / setup.train.context_length
    out = {}
    for name, rotary in rope_variants(d_head, setup.train.context_length, factor).items():
        twin = copy.deepcopy(model)
        twin.rotary = rotary
        before = score(twin, val_ids[: setup.eval_chars], setup.lengths)
        train(twin, train_ids, val_ids, replace(setup.fine_tune, seed=1000 + seed), device="cpu")
        after = score(twin, val_ids[: setup.eval_chars], setup.lengths)
        out[name] = {"as is": {str(T): round(v, 4) for T, v in before.items()},
                     "fine-tuned": {str(T): round(v, 4) for T, v in after.items()}}
    return out


def run(kind: str, seed: int, setup: Setup, train_ids: torch.Tensor, val_ids: torch.Tensor) -> dict:
    """Train one model and score it: losses by length (sliding, disjoint), loss by position, sizes, seconds."""
    torch.manual_seed(seed)
    model = build(kind, setup.model)
    start = time.perf_counter()
    train(model, train_ids, val_ids, replace(setup.train, seed=seed), device="cpu")
    seconds = time.perf_counter() - start
    stretch = val_ids[: setup.eval_chars]
    nll = score(model, stretch, setup.lengths)
    disjoint = score_disjoint(model, stretch, setup.lengths)
    by_position = loss_by_position(model, stretch, setup.lengths[-1], setup.position_stride)
    out = {"seed": seed, "nll": {str(T): round(v, 4) for T, v in nll.items()},
           "nll_disjoint": {str(T): round(v, 4) for T, v in disjoint.items()},
           "by_position": [round(v, 4) for v in by_position.tolist()],
           "sizes": embedding_sizes(model, setup.train.context_length),
           "train_seconds": round(seconds, 1), "parameters": model.num_params()}
    if kind == "rope":
        out["rope_variants"] = extend_rope(model, seed, setup, train_ids, val_ids)
    return out


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
    parser.add_argument("--fine-tune-steps", type=int, default=FINE_TUNE.steps,
                        help="steps of each RoPE variant's fine-tune at 4x the length")
    parser.add_argument("--eval-chars", type=int, default=Setup.eval_chars, help="validation characters scored")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, metavar="KIND")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "extrapolation.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 2 or args.fine_tune_steps < 2 or args.eval_chars < 4 * T_TRAIN + 1:
        parser.error(f"need --seeds >= 1, --steps >= 2, --fine-tune-steps >= 2 and --eval-chars > {4 * T_TRAIN}")
    torch.set_num_threads(args.threads)
    setup = Setup(train=replace(BASE_TRAIN, steps=args.steps, eval_every=args.steps,
                                warmup_steps=min(BASE_TRAIN.warmup_steps, args.steps - 1)),
                  fine_tune=replace(FINE_TUNE, steps=args.fine_tune_steps, eval_every=args.fine_tune_steps,
                                    warmup_steps=min(FINE_TUNE.warmup_steps, args.fine_tune_steps - 1)),
                  eval_chars=args.eval_chars)
    tok = shakespeare_char_tokenizer()
    train_ids = as_tensor(tok.encode(load_shakespeare("train")))
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))
    rows = []
    for kind in args.kinds:
        runs = [run(kind, seed, setup, train_ids, val_ids) for seed in range(args.seeds)]
        rows.append({"kind": kind, "runs": runs, **summarise(runs, setup.lengths)})
        m, s = rows[-1]["mean"], rows[-1]["std"]
        print(f"{kind:<21} " + "  ".join(f"T={T}: {m[str(T)]:.3f} +- {s[str(T)]:.3f}" for T in setup.lengths)
              + f"  ({statistics.fmean(r['train_seconds'] for r in runs):.0f} s per run)", flush=True)
    command = (f"python -m lmcourse extrapolation --seeds {args.seeds} --steps {args.steps} "
               f"--fine-tune-steps {args.fine_tune_steps} --eval-chars {args.eval_chars}")
    if list(args.kinds) != list(KINDS):
        command += " --kinds " + " ".join(f"'{k}'" if " " in k else k for k in args.kinds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": command, "model": asdict(setup.model), "train": asdict(setup.train),
        "fine_tune": asdict(setup.fine_tune),
        "tokens_per_run": setup.train.steps * setup.train.batch_size * setup.train.context_length,
        "lengths": list(setup.lengths),
        "eval": (f"every character of the first {setup.eval_chars} validation characters after the first, "
                 "in windows of T sliding by T/4, for every T"),
        "eval_disjoint": "the same characters in windows of T that do not overlap (stride T)",
        "by_position": (f"windows of {setup.lengths[-1]} starting every {setup.position_stride} characters "
                        f"of the same {setup.eval_chars} validation characters"),
        "rope_variants": (f"each RoPE model read at {setup.fine_tune.context_length} positions with its frequencies "
                          f"changed, as is and after {setup.fine_tune.steps} steps at that length"),
        "rows": rows}, indent=1) + "\n")
    return 0
