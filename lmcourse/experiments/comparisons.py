"""The controlled experiments of chapters 4, 6, 7 and 8, trained once with seeds and stored.

    python -m lmcourse experiments tying      # chapter 6: tied vs untied, at equal steps and equal size
    python -m lmcourse experiments norms      # chapter 6: pre-norm vs post-norm, with and without warmup
    python -m lmcourse experiments training   # chapter 7: a learning-rate sweep, no warmup, no clipping
    python -m lmcourse experiments attention  # chapter 4: no mixing, a bag of words, one head, four heads
    python -m lmcourse experiments kv_heads   # chapter 8: multi-head, grouped-query, multi-query at equal training

An experiment is a list of :class:`Arm` s: one model config and one training
config each, every arm a small change to the same baseline. Every arm is trained
with several seeds (the seed sets the initial weights and the batches) for the
same number of steps on the same number of tokens per step, then scored on the
same held-out characters (the first ``eval_chars`` of the validation plays, every
token, in windows of the context sliding by half a window). Each run keeps its
per-step training loss and gradient norm (before clipping), so a chapter can draw
the early steps where warmup and clipping act. The results go under the
experiment's name in ``checkpoints/experiments.json`` with the command that
reproduces them; the chapters read that file, and train only tiny live versions.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..data import as_tensor, load_shakespeare
from ..embedding_geometry import frequency_groups, mean_pairwise_cosine
from ..metrics import bits_per_char
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer, train_bpe
from ..train import TrainConfig, Trainer, evaluate_stream
from ..transformer import GPT, GPTConfig, scale_input

EXPERIMENTS_FILE = CHECKPOINT_DIR / "experiments.json"
TOKENIZER_NAMES = ("char", "bpe2048")
VARIANTS = ("plain", "output bias", "input x sqrt(D)")  # how the GPT of an arm is built (build_model)

# chapter 7's baseline (and chapter 6's pre-norm): a 4-layer character GPT, 300 steps of 16 x 64 characters
CHAR_MODEL = GPTConfig(vocab_size=75, context_length=64, d_model=64, n_layers=4, n_heads=4)
CHAR_TRAIN = TrainConfig(steps=300, batch_size=16, context_length=64, lr=3e-3, min_lr=3e-4, warmup_steps=30,
                         weight_decay=0.1, grad_clip=1.0, eval_every=300, eval_batches=1)
# chapter 6's tying comparison: the 2-layer GPT of the chapter on a 2048-token BPE vocabulary, 800 steps
BPE_MODEL = GPTConfig(vocab_size=2048, context_length=64, d_model=64, n_layers=2, n_heads=4)
BPE_TRAIN = replace(CHAR_TRAIN, steps=800, warmup_steps=50, eval_every=800)
# chapters 4 and 8's longer runs: the same, 2,000 steps
LONG_CHAR_TRAIN = replace(CHAR_TRAIN, steps=2000, eval_every=2000)


@dataclass(frozen=True)
class Arm:
    """One arm of an experiment: its name, what it trains, and on which tokens."""

    name: str
    model: GPTConfig
    train: TrainConfig
    tokenizer: str = "char"  # "char" | "bpe2048" (a byte-level BPE trained on the training plays)
    variant: str = "plain"  # one of VARIANTS: "output bias" and "input x sqrt(D)" change the tied GPT (build_model)

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZER_NAMES:
            raise ValueError(f"tokenizer must be one of {TOKENIZER_NAMES}, got {self.tokenizer!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")


class OutputBiasGPT(GPT):
    """A GPT whose output layer adds one learned number per token (as BERT's MLM head does), zero at the start.

    Built from the same seed, its other weights start equal to :class:`GPT`'s: the bias draws no random numbers.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.out_bias = nn.Parameter(torch.zeros(config.vocab_size))  # (V,): 1-D, so never weight-decayed

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return super().logits(h) + self.out_bias


def build_model(arm: "Arm") -> GPT:
    """The GPT that ``arm`` trains, from the seed already set.

    ``"input x sqrt(D)"`` multiplies the token embeddings by sqrt(D) on the way in only
    (Vaswani et al.; a tied output layer still reads the matrix itself), with the same
    initial weights as the plain model.
    """
    if arm.variant == "output bias":
        return OutputBiasGPT(arm.model)
    model = GPT(arm.model)
    return scale_input(model, arm.model.d_model ** 0.5) if arm.variant == "input x sqrt(D)" else model


def _at_lr(config: TrainConfig, lr: float, **changes) -> TrainConfig:
    """``config`` at peak rate ``lr``, decaying to a tenth of it, with any other ``changes``."""
    return replace(config, lr=lr, min_lr=lr / 10, **changes)


def arms(name: str) -> list[Arm]:
    """The arms of experiment ``name`` (one of :data:`EXPERIMENTS`), baseline first.

    >>> [arm.name for arm in arms("tying")][:3]
    ['tied, D=64', 'untied, D=64', 'tied, D=88 (as many parameters as untied)']
    """
    if name == "tying":
        return [Arm("tied, D=64", BPE_MODEL, BPE_TRAIN, "bpe2048"),
                Arm("untied, D=64", replace(BPE_MODEL, tie_weights=False), BPE_TRAIN, "bpe2048"),
                # 374,176 parameters against the untied model's 366,336: the saved V x D spent on width
                Arm("tied, D=88 (as many parameters as untied)", replace(BPE_MODEL, d_model=88), BPE_TRAIN,
                    "bpe2048"),
                # the same three at a higher rate: is the ranking an artefact of one untuned rate?
                Arm("tied, D=64, lr 1e-2", BPE_MODEL, _at_lr(BPE_TRAIN, 1e-2), "bpe2048"),
                Arm("untied, D=64, lr 1e-2", replace(BPE_MODEL, tie_weights=False), _at_lr(BPE_TRAIN, 1e-2),
                    "bpe2048"),
                Arm("tied, D=88, lr 1e-2", replace(BPE_MODEL, d_model=88), _at_lr(BPE_TRAIN, 1e-2), "bpe2048"),
                # the tied model with what tied models add: a per-token output bias; the input scaled by sqrt(D)
                Arm("tied, D=64, output bias", BPE_MODEL, BPE_TRAIN, "bpe2048", "output bias"),
                Arm("tied, D=64, input x sqrt(D)", BPE_MODEL, BPE_TRAIN, "bpe2048", "input x sqrt(D)")]
    if name == "norms":
        post = replace(CHAR_MODEL, norm_position="post")
        no_warmup = replace(CHAR_TRAIN, warmup_steps=0)
        return [Arm("pre-norm, lr 3e-3", CHAR_MODEL, CHAR_TRAIN),
                Arm("post-norm, lr 3e-3", post, CHAR_TRAIN),
                Arm("pre-norm, lr 3e-3, no warmup", CHAR_MODEL, no_warmup),
                Arm("post-norm, lr 3e-3, no warmup", post, no_warmup),
                Arm("pre-norm, lr 1e-2", CHAR_MODEL, _at_lr(CHAR_TRAIN, 1e-2)),
                Arm("post-norm, lr 1e-2", post, _at_lr(CHAR_TRAIN, 1e-2)),
                # does a longer warmup rescue post-norm? (pre-norm beside it, warmed up alike)
                Arm("pre-norm, lr 3e-3, warmup 100", CHAR_MODEL, replace(CHAR_TRAIN, warmup_steps=100)),
                Arm("post-norm, lr 3e-3, warmup 100", post, replace(CHAR_TRAIN, warmup_steps=100)),
                Arm("post-norm, lr 3e-3, warmup 200", post, replace(CHAR_TRAIN, warmup_steps=200))]
    if name == "training":
        sweep = [Arm(f"lr {lr:.0e}", CHAR_MODEL, _at_lr(CHAR_TRAIN, lr)) for lr in (1e-3, 3e-3, 1e-2, 3e-2)]
        return sweep + [
            Arm("lr 1e-02, no warmup", CHAR_MODEL, _at_lr(CHAR_TRAIN, 1e-2, warmup_steps=0)),
            Arm("lr 1e-02, no clipping", CHAR_MODEL, _at_lr(CHAR_TRAIN, 1e-2, grad_clip=0.0)),
            Arm("lr 1e-02, no warmup, no clipping", CHAR_MODEL,
                _at_lr(CHAR_TRAIN, 1e-2, warmup_steps=0, grad_clip=0.0)),
            # the sweep again without warmup: does the best rate move?
            *[Arm(f"lr {lr:.0e}, no warmup", CHAR_MODEL, _at_lr(CHAR_TRAIN, lr, warmup_steps=0))
              for lr in (1e-3, 3e-3, 3e-2)],
            # a 5-step warmup: is it the first few steps at full rate that cost?
            Arm("lr 1e-02, 5-step warmup", CHAR_MODEL, _at_lr(CHAR_TRAIN, 1e-2, warmup_steps=5)),
            # five times longer (the same 30-step warmup): does the cold start catch up?
            Arm("lr 1e-02, 1500 steps", CHAR_MODEL, _at_lr(CHAR_TRAIN, 1e-2, steps=1500, eval_every=1500)),
            Arm("lr 1e-02, 1500 steps, no warmup", CHAR_MODEL,
                _at_lr(CHAR_TRAIN, 1e-2, steps=1500, eval_every=1500, warmup_steps=0)),
        ]
    if name == "attention":  # chapter 4: what attention buys, at equal width, depth and training
        long = LONG_CHAR_TRAIN
        return [Arm("no mixing (each position alone)", replace(CHAR_MODEL, mixer="none"), long),
                Arm("equal weights on the past (bag of words)", replace(CHAR_MODEL, mixer="mean"), long),
                Arm("attention, 1 head of 64", replace(CHAR_MODEL, n_heads=1), long),
                Arm("attention, 4 heads of 16", CHAR_MODEL, long)]
    if name == "kv_heads":  # chapter 8: sharing keys and values, and the cache it saves, at equal training
        long = LONG_CHAR_TRAIN
        return [Arm("4 key/value heads (multi-head)", CHAR_MODEL, long),
                Arm("2 key/value heads (grouped-query)", replace(CHAR_MODEL, n_kv_heads=2), long),
                Arm("1 key/value head (multi-query)", replace(CHAR_MODEL, n_kv_heads=1), long),
                # the same cache as 2 and as 1 key/value heads, spent on fewer layers instead
                Arm("multi-head, 2 layers (the cache of 2 heads)", replace(CHAR_MODEL, n_layers=2), long),
                Arm("multi-head, 1 layer (the cache of 1 head)", replace(CHAR_MODEL, n_layers=1), long)]
    raise ValueError(f"no experiment {name!r}; the experiments are: {', '.join(EXPERIMENTS)}")


EXPERIMENTS = ("tying", "norms", "training", "attention", "kv_heads")


@dataclass(frozen=True)
class Data:
    """One tokenizer's training ids, held-out ids and characters per held-out token."""

    train_ids: torch.Tensor
    val_ids: torch.Tensor
    chars_per_token: float


def load_data(tokenizer: str, eval_chars: int) -> Data:
    """The training plays and the first ``eval_chars`` held-out characters, as ``tokenizer`` ids."""
    if tokenizer not in TOKENIZER_NAMES:
        raise ValueError(f"tokenizer must be one of {TOKENIZER_NAMES}, got {tokenizer!r}")
    if eval_chars < 2:
        raise ValueError(f"eval_chars must be >= 2, got {eval_chars}")
    train_text, val_text = load_shakespeare("train"), load_shakespeare("val")[:eval_chars]
    tok = shakespeare_char_tokenizer() if tokenizer == "char" else train_bpe(train_text, vocab_size=2048)
    val_ids = as_tensor(tok.encode(val_text))
    return Data(as_tensor(tok.encode(train_text)), val_ids, len(val_text) / len(val_ids))


def run_arm(arm: Arm, seed: int, data: Data) -> dict:
    """Train ``arm`` from seed ``seed`` on the CPU; its held-out score and per-step log.

    Returns ``seed``, ``val_nats_per_token`` and ``val_bits_per_char`` (every held-out
    token), ``parameters``, ``train_seconds``, and per step the training ``loss`` and
    the global ``grad_norm`` before clipping.
    """
    if not isinstance(arm, Arm):
        raise TypeError(f"arm must be an Arm, got {type(arm).__name__}")
    if arm.model.vocab_size <= int(data.train_ids.max()):
        raise ValueError(f"arm {arm.name!r} has vocab_size {arm.model.vocab_size}, too small for its data")
    torch.manual_seed(seed)
    model = build_model(arm)
    trainer = Trainer(model, data.train_ids, replace(arm.train, seed=seed), device="cpu")
    model.train()
    losses, norms = [], []
    start = time.perf_counter()
    for step in range(arm.train.steps):
        losses.append(trainer.step(step))
        norms.append(trainer.grad_norm.item())
    seconds = time.perf_counter() - start
    nll = evaluate_stream(model, data.val_ids, arm.model.context_length)
    # the output matrix's rows of the tokens seen fewer than 100 times in training, and of as many commonest
    V = arm.model.vocab_size
    n_rare = int((torch.bincount(data.train_ids, minlength=V) < 100).sum())
    geometry = {}
    if min(n_rare, V - n_rare) >= 2:  # two groups of two or more, apart
        rare, frequent = frequency_groups(data.train_ids, V, rare_below=100, n_frequent=min(n_rare, V - n_rare))
        out = (model.tok_emb.weight if model.head is None else model.head.weight).detach().double()
        geometry = {"rare_tokens": n_rare, "rare_cosine": round(mean_pairwise_cosine(out[rare]), 4),
                    "frequent_cosine": round(mean_pairwise_cosine(out[frequent]), 4)}
    return {"seed": seed, "val_nats_per_token": round(nll, 4),
            "val_bits_per_char": round(bits_per_char(nll, data.chars_per_token), 4),
            "parameters": model.num_params(), "train_seconds": round(seconds, 1), **geometry,
            "loss": [round(v, 3) for v in losses], "grad_norm": [float(f"{v:.3g}") for v in norms]}


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation, min and max of ``values``, rounded to 4 places.

    >>> spread([1.0, 2.0, 3.0])
    {'mean': 2.0, 'std': 1.0, 'min': 1.0, 'max': 3.0}
    """
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"need one or more finite values, got {values!r}")
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4)}


def run_experiment(name: str, seeds: int = 3, steps: int | None = None, eval_chars: int = 50_000,
                   say=print) -> dict:
    """Every arm of experiment ``name`` with seeds ``0 .. seeds - 1``: the entry the JSON file stores."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if steps is not None and steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    table, data = [], {}
    for arm in arms(name):
        if steps is not None:
            arm = replace(arm, train=replace(arm.train, steps=steps, eval_every=steps,
                                             warmup_steps=min(arm.train.warmup_steps, steps - 1)))
        if arm.tokenizer not in data:
            data[arm.tokenizer] = load_data(arm.tokenizer, eval_chars)
        runs = [run_arm(arm, seed, data[arm.tokenizer]) for seed in range(seeds)]
        c = arm.train
        entry = {"name": arm.name, "model": asdict(arm.model), "train": asdict(c), "tokenizer": arm.tokenizer,
                 "variant": arm.variant,
                 "tokens_per_run": c.steps * c.batch_size * c.context_length,
                 "chars_per_token": round(data[arm.tokenizer].chars_per_token, 4), "runs": runs,
                 "val_nats_per_token": spread([r["val_nats_per_token"] for r in runs]),
                 "val_bits_per_char": spread([r["val_bits_per_char"] for r in runs])}
        table.append(entry)
        each = ", ".join(f"{r['val_nats_per_token']:.3f}" for r in runs)
        s = entry["val_nats_per_token"]
        say(f"{arm.name:<44} {s['mean']:.4f} +- {s['std']:.4f} nats/token ({each}; "
            f"{statistics.fmean(r['train_seconds'] for r in runs):.0f} s per run)")
    command = f"python -m lmcourse experiments {name} --seeds {seeds} --eval-chars {eval_chars}"
    command += f" --steps {steps}" if steps is not None else ""
    return {"command": command, "eval": f"first {eval_chars} validation characters, every token, windows of the "
                                        "context sliding by half a window", "arms": table}


def load_results(name: str, path: str | Path = EXPERIMENTS_FILE) -> dict:
    """The stored entry of experiment ``name``; says which command writes it if it is missing."""
    path = Path(path)
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if name not in stored:
        raise FileNotFoundError(f"no results for {name!r} in {path}: run python -m lmcourse experiments {name}")
    return stored[name]


def dumps(results: dict) -> str:
    """``results`` as indented JSON with every list of numbers on one line (a per-step log is one line)."""
    text = json.dumps(results, indent=1)
    return re.sub(r"\[[^\[\]{}\"]*\]", lambda m: "[" + " ".join(m.group(0)[1:-1].split()) + "]", text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=EXPERIMENTS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=None, help="override every arm's number of steps")
    parser.add_argument("--eval-chars", type=int, default=50_000, help="held-out characters each run is scored on")
    parser.add_argument("--out", type=Path, default=EXPERIMENTS_FILE)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seeds < 1 or (args.steps is not None and args.steps < 2) or args.eval_chars < 2:
        parser.error("need --seeds >= 1, --steps >= 2 and --eval-chars >= 2")
    torch.set_num_threads(args.threads)
    entry = run_experiment(args.name, args.seeds, args.steps, args.eval_chars, say=lambda s: print(s, flush=True))
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {}
    stored[args.name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(stored))
    return 0


if __name__ == "__main__":
    sys.exit(main())
