"""Today's recipe, one change at a time: the ablation of chapter 11.

Starting from a GPT-2-style model (learned positions, LayerNorm, GELU MLP, AdamW,
context 128), each row adds one change to the row above it:

    GPT-2 baseline -> +RoPE -> +RMSNorm -> +ReLU^2 MLP -> +QK-norm -> +Muon -> +context 512

Every row trains the same number of steps on the same number of tokens per step
(a longer context means fewer windows per batch), with the same model width and
depth, so the rows cost about the same compute; each is trained with several
seeds and scored on the same held-out characters (every character of the first
``eval_chars`` of the validation plays, in windows of the row's context sliding by
half a window). ``python -m lmcourse ablation`` runs it and writes the table to
``checkpoints/ablation.json``, which chapter 11 reads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..data import as_tensor, load_shakespeare
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer
from ..train import TrainConfig, evaluate_stream, train
from ..transformer import GPT, GPTConfig

BASE_MODEL = GPTConfig(vocab_size=75, context_length=128, d_model=96, n_layers=4, n_heads=4, dropout=0.0,
                       tie_weights=True, positional="learned", bias=True)
BASE_TRAIN = TrainConfig(steps=600, batch_size=16, context_length=128, lr=3e-3, min_lr=3e-4, warmup_steps=50,
                         weight_decay=0.1, grad_clip=1.0, eval_every=600, eval_batches=2)


@dataclass(frozen=True)
class Row:
    """One row of the ablation: its name and the model and training configs it trains."""

    name: str
    model: GPTConfig
    train: TrainConfig


def rows(base_model: GPTConfig = BASE_MODEL, base_train: TrainConfig = BASE_TRAIN) -> list[Row]:
    """The cumulative rows, each adding one change to the one before."""
    steps = [
        ("GPT-2 baseline", {}, {}),
        ("+ RoPE", {"positional": "rope"}, {}),
        ("+ RMSNorm", {"norm": "rms", "bias": False}, {}),
        ("+ ReLU^2 MLP", {"mlp": "relu2"}, {}),
        ("+ QK-norm", {"qk_norm": True}, {}),
        ("+ Muon", {}, {"optimizer": "muon"}),
    ]
    out, m, t = [], base_model, base_train
    for name, model_change, train_change in steps:
        m, t = replace(m, **model_change), replace(t, **train_change)
        out.append(Row(name, m, t))
    long = 4 * m.context_length  # the same tokens per step: a quarter of the windows, four times as long
    out.append(Row(f"+ context {long}", replace(m, context_length=long),
                   replace(t, context_length=long, batch_size=t.batch_size // 4)))
    return out


def run_row(row: Row, seed: int, train_ids: torch.Tensor, val_ids: torch.Tensor) -> dict:
    """Train ``row`` with ``seed``; its held-out nats per character and the wall time."""
    torch.manual_seed(seed)
    model = GPT(row.model)
    start = time.perf_counter()
    train(model, train_ids, val_ids, replace(row.train, seed=seed), device="cpu")
    seconds = time.perf_counter() - start
    nll = evaluate_stream(model, val_ids, row.model.context_length)
    return {"seed": seed, "val_nats_per_char": round(nll, 4), "train_seconds": round(seconds, 1),
            "parameters": model.num_params()}


def summarise(results: list[dict]) -> dict:
    """Mean, standard deviation, min and max of the runs' held-out nats per character."""
    values = [r["val_nats_per_char"] for r in results]
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=BASE_TRAIN.steps, help="optimizer steps per run")
    parser.add_argument("--eval-chars", type=int, default=100_000, help="held-out characters each run is scored on")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "ablation.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", action="append", default=None, metavar="ROW",
                        help="train only this row (repeatable), e.g. --only '+ Muon' with a longer --steps")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 2 or args.eval_chars < 2:
        parser.error("need --seeds >= 1, --steps >= 2 and --eval-chars >= 2")
    torch.set_num_threads(args.threads)
    tok = shakespeare_char_tokenizer()
    train_ids = as_tensor(tok.encode(load_shakespeare("train")))
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))[:args.eval_chars]
    base_train = replace(BASE_TRAIN, steps=args.steps, eval_every=args.steps,
                         warmup_steps=min(BASE_TRAIN.warmup_steps, args.steps - 1))
    table = []
    chosen = rows(BASE_MODEL, base_train)
    if args.only:
        unknown = set(args.only) - {r.name for r in chosen}
        if unknown:
            parser.error(f"no rows {sorted(unknown)}; rows: {[r.name for r in chosen]}")
        chosen = [r for r in chosen if r.name in args.only]
    for row in chosen:
        runs = [run_row(row, seed, train_ids, val_ids) for seed in range(args.seeds)]
        entry = {"name": row.name, "model": asdict(row.model), "train": asdict(row.train),
                 "tokens_per_run": row.train.steps * row.train.batch_size * row.train.context_length,
                 "runs": runs, **summarise(runs)}
        table.append(entry)
        each = ", ".join(f"{r['val_nats_per_char']:.3f}" for r in runs)
        seconds = statistics.fmean(r["train_seconds"] for r in runs)
        print(f"{row.name:<16} {entry['mean']:.4f} +- {entry['std']:.4f} nats/char ({each}; {seconds:.0f} s per run)",
              flush=True)
    command = "python -m lmcourse ablation" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("seeds", args.seeds), ("steps", args.steps),
                                                      ("eval_chars", args.eval_chars)))
    command += "".join(f" --only '{name}'" for name in args.only or [])
    if args.out != CHECKPOINT_DIR / "ablation.json":
        command += f" --out lmcourse/checkpoints/{args.out.name}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "eval": f"first {args.eval_chars} validation characters, "
                                    "windows of each row's context sliding by half a window",
                                    "rows": table}, indent=1) + "\n")
    return 0
