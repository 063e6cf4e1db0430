"""Chapter 7's same-play control: a GPT fitted on the first 90% of every training play.

    python -m lmcourse heldout --seeds 3

Validation in this course is three whole plays that training never sees. How much
of a model's validation loss is the price of *new plays* (new casts, new words)
rather than of text it has not memorised? The 7-gram of chapter 7 answers it by
fitting the first 90% of every training play and scoring twice: on the last 10% of
those plays (the tails) and on the held-out plays. This command runs the same
control for a GPT, with seeds: each seed trains one small character GPT on the
heads, then scores every character of the tails and of the held-out plays (pooled
and per play), in windows of its context sliding by half a window. The results go
to ``checkpoints/heldout.json`` with the command that reproduces them; chapter 7
reads them beside its live 7-gram.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..data import VAL_PLAYS, as_tensor, load_play, load_shakespeare, play_heads_and_tails
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer
from ..train import TrainConfig, Trainer, evaluate_stream
from ..transformer import GPT, GPTConfig

HELDOUT_FILE = CHECKPOINT_DIR / "heldout.json"
# a 4-layer character GPT of 0.82M parameters; 2,000 steps of 32 x 128 characters (8.2M, about two passes)
MODEL = GPTConfig(vocab_size=75, context_length=128, d_model=128, n_layers=4, n_heads=4)
TRAIN = TrainConfig(steps=2000, batch_size=32, context_length=128, lr=3e-3, min_lr=3e-4, warmup_steps=100,
                    weight_decay=0.1, grad_clip=1.0, eval_every=2000, eval_batches=1)


def run_seed(seed: int, train: TrainConfig = TRAIN, model_config: GPTConfig = MODEL, fraction: float = 0.9,
             eval_chars: int | None = None, say=print) -> dict:
    """Train one GPT from ``seed`` on the heads; its loss on the tails and on the held-out plays (nats/char).

    ``eval_chars`` scores only the first that many characters of each text (``None``: all of them).
    """
    if eval_chars is not None and eval_chars < 2:
        raise ValueError(f"eval_chars must be None or >= 2, got {eval_chars}")
    tok = shakespeare_char_tokenizer()
    heads, tails = play_heads_and_tails(fraction)
    torch.manual_seed(seed)
    model = GPT(model_config)
    trainer = Trainer(model, as_tensor(tok.encode(heads)), replace(train, seed=seed), device="cpu")
    model.train()
    start = time.perf_counter()
    for step in range(train.steps):
        loss = trainer.step(step)
        if step % 500 == 0 or step == train.steps - 1:
            say(f"  seed {seed} step {step}: training loss {loss:.3f}")
    seconds = time.perf_counter() - start
    model.eval()
    T = model_config.context_length

    def score(text: str) -> float:
        return round(evaluate_stream(model, as_tensor(tok.encode(text[:eval_chars])), T), 4)

    return {"seed": seed, "tails": score(tails), "heldout": score(load_shakespeare("val")),
            "heldout_plays": {play: score(load_play(play)) for play in VAL_PLAYS},
            "train_seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse heldout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=TRAIN.steps, help="training steps per seed")
    parser.add_argument("--out", type=Path, default=HELDOUT_FILE)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 2:
        parser.error("need --seeds >= 1 and --steps >= 2")
    torch.set_num_threads(args.threads)
    train = replace(TRAIN, steps=args.steps, eval_every=args.steps,
                    warmup_steps=min(TRAIN.warmup_steps, args.steps - 1))
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(seed, train, say=lambda s: print(s, flush=True)))
        r = runs[-1]
        print(f"seed {seed}: tails {r['tails']:.4f}, held-out {r['heldout']:.4f} nats/char "
              f"({r['train_seconds']:.0f} s)", flush=True)
    command = f"python -m lmcourse heldout --seeds {args.seeds}"
    command += f" --steps {args.steps}" if args.steps != TRAIN.steps else ""
    entry = {"command": command, "model": asdict(MODEL), "train": asdict(train),
             "data": "the first 90% of every training play; scored on the last 10% (tails) and on the held-out "
                     "plays, every character, windows of the context sliding by half a window",
             "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(entry, indent=1) + "\n")
    return 0


def load_results(path: str | Path = HELDOUT_FILE) -> dict:
    """The stored control; says which command writes it if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results in {path}: run python -m lmcourse heldout")
    return json.loads(path.read_text())


if __name__ == "__main__":
    sys.exit(main())
