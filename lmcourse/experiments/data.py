"""Chapter 13's runs: canaries against their repeats (raw and deduplicated text), and data quality.

    python -m lmcourse data                 # every run below, then the shipped model's extraction test
    python -m lmcourse data canaries        # the canary runs only (raw and deduplicated, 3 seeds)
    python -m lmcourse data quality         # raw, deduplicated and filtered text at equal compute, 3 seeds
    python -m lmcourse data extraction      # gpt_char: greedy extraction of training vs validation text
    python -m lmcourse data --list          # the runs and which are stored

**Canaries** (Carlini et al. 2019). Each seed draws its own canaries, speeches with a
made-up speaker: ``RANDOM`` ones, ``NAME:\\nMy number is DDDDDDDDD.`` (nine random
digits, ``|R| = 10^9``), and ``NATURAL`` ones, a line of a *test* play (never trained on,
never scored) under a made-up speaker. :data:`PER_LEVEL` of each kind go into the training
plays :data:`REPEATS` times each (0: drawn but never inserted, the control), at random
speech boundaries. The ``dedup`` runs train on the same text after
:func:`~lmcourse.dedup.drop_duplicate_blocks` (every repeated speech kept once: the
canaries too). After training, each random canary's exposure is estimated from
:data:`SAMPLES` random secrets under its own prefix, and every canary is tested for
greedy extraction (the secret, or a natural line's last characters after its first
:data:`NATURAL_PROMPT`).

**Data quality.** The same model and steps (:data:`QUALITY_TRAIN`: a third of the canary
runs' steps) on the raw training plays, on the plays with
repeated speeches dropped, and on the plays with speeches of fewer than
:data:`MIN_WORDS` words dropped (a heuristic quality filter), 3 seeds each, scored on the
same clean validation text (:data:`EVAL_CHARS` characters of the validation plays).

Every run goes into ``checkpoints/data.json`` with the command that trains it, as it
ends, so a stopped command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..data import as_tensor, load_shakespeare
from ..dedup import drop_duplicate_blocks, join_blocks, split_blocks, words
from ..memorisation import (
    continuation_nll,
    exposure_normal,
    exposure_sampled,
    extractable,
    greedy_matches,
    insert_blocks,
    random_secret,
)
from ..runs import load_pretrained
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer
from ..train import TrainConfig, evaluate_stream, train
from ..transformer import GPT, GPTConfig

MODEL = GPTConfig(vocab_size=75, context_length=64, d_model=64, n_layers=2, n_heads=2, dropout=0.0,
                  tie_weights=True, positional="learned", bias=True)  # 109k parameters
TRAIN = TrainConfig(steps=3000, batch_size=32, context_length=64, lr=3e-3, min_lr=3e-4, warmup_steps=100,
                    weight_decay=0.1, grad_clip=1.0, eval_every=1000, eval_batches=4)
SEEDS = (0, 1, 2)
REPEATS = (0, 1, 4, 16, 64)  # copies of each canary in the training text (0: the control)
PER_LEVEL = 4  # canaries of each kind per repeat level
SECRET_DIGITS = 9
SAMPLES = 4096  # random secrets scored under each canary's prefix
NATURAL_PROMPT = 15  # characters of a natural line given after its speaker's heading
MIN_WORDS = 4  # the quality filter drops speeches of fewer words
EVAL_CHARS = 100_000
EXTRACT = {"prefixes": 200, "prompt": 100, "suffix": 50}  # the shipped model's extraction test
# the quality runs are shorter (the one core this was run on was shared): a third of the canary runs' steps
QUALITY_TRAIN = replace(TRAIN, steps=1000, eval_every=250)
OUT = CHECKPOINT_DIR / "data.json"


@dataclass(frozen=True)
class Run:
    kind: str  # "canaries" | "quality"
    text: str  # "raw" | "dedup" | "filtered"
    seed: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.text}-s{self.seed}"


def plan(part: str = "all") -> list[Run]:
    """The runs of a part, in the order they train (seed by seed, so a partial table has every condition)."""
    runs = []
    if part in ("all", "canaries"):
        runs += [Run("canaries", text, s) for s in SEEDS for text in ("raw", "dedup")]
    if part in ("all", "quality"):
        runs += [Run("quality", text, s) for s in SEEDS for text in ("raw", "dedup", "filtered")]
    return runs


def quality_filter(text: str, min_words: int = MIN_WORDS) -> str:
    """Drop the speeches whose lines hold fewer than ``min_words`` words."""
    return join_blocks([b for b in split_blocks(text) if len(words(b.split("\n", 1)[1])) >= min_words])


def make_canaries(seed: int) -> list[dict]:
    """The seed's canaries: for each repeat level, :data:`PER_LEVEL` random and natural ones."""
    g = torch.Generator().manual_seed(10_000 + seed)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lines = sorted({line for line in load_shakespeare("test").split("\n")
                    if 30 <= len(line) <= 45 and not line.endswith(":")})
    canaries, names = [], set()
    for repeats in REPEATS:
        for kind in ("random", "natural"):
            for _ in range(PER_LEVEL):
                name = random_secret(6, g, letters)
                while name in names:
                    name = random_secret(6, g, letters)
                names.add(name)
                if kind == "random":
                    prefix, secret, tail = f"{name}:\nMy number is ", random_secret(SECRET_DIGITS, g), "."
                else:
                    line = lines.pop(int(torch.randint(len(lines), (1,), generator=g)))
                    prefix, secret, tail = f"{name}:\n{line[:NATURAL_PROMPT]}", line[NATURAL_PROMPT:], ""
                canaries.append({"kind": kind, "repeats": repeats, "prefix": prefix, "secret": secret,
                                 "block": prefix + secret + tail + "\n"})
    return canaries


def training_text(run: Run) -> tuple[str, list[dict]]:
    """The run's training text and its canaries (none for the quality runs)."""
    text = load_shakespeare("train")
    canaries = []
    if run.kind == "canaries":
        canaries = make_canaries(run.seed)
        text = insert_blocks(text, [(c["block"], c["repeats"]) for c in canaries],
                             torch.Generator().manual_seed(20_000 + run.seed))
    if run.text == "dedup":
        text, _ = drop_duplicate_blocks(text)
    elif run.text == "filtered":
        text = quality_filter(text)
    return text, canaries


def score_canaries(model: GPT, canaries: list[dict], text: str, seed: int) -> list[dict]:
    """Exposure (random canaries) and greedy extraction (all) of each canary, and its copies in ``text``."""
    tok = shakespeare_char_tokenizer()
    g = torch.Generator().manual_seed(30_000 + seed)
    out = []
    for c in canaries:
        prefix = tok.encode(c["prefix"])
        secret = torch.tensor([tok.encode(c["secret"])])
        nll = continuation_nll(model, prefix, secret).item()
        row = {**{k: c[k] for k in ("kind", "repeats", "prefix", "secret")}, "copies": text.count(c["block"]),
               "nll_bits": round(nll / 0.6931471805599453, 3),
               "extracted": bool(greedy_matches(model, torch.tensor([prefix]), secret)[0])}
        if c["kind"] == "random":
            samples = torch.randint(10, (SAMPLES, SECRET_DIGITS), generator=g) + tok.encode("0")[0]
            sampled = continuation_nll(model, prefix, samples)
            row["exposure_sampled"] = round(exposure_sampled(nll, sampled), 3)
            row["exposure_normal"] = round(exposure_normal(nll, sampled), 3)
        out.append(row)
    return out


def train_run(run: Run, val_ids: torch.Tensor) -> dict:
    text, canaries = training_text(run)
    tok = shakespeare_char_tokenizer()
    torch.manual_seed(run.seed)
    model = GPT(MODEL)
    cfg = replace(TRAIN if run.kind == "canaries" else QUALITY_TRAIN, seed=run.seed)
    start = time.perf_counter()
    history = train(model, as_tensor(tok.encode(text)), val_ids, cfg, device="cpu")
    seconds = time.perf_counter() - start
    result = {**asdict(run), "name": run.name, "model": asdict(MODEL), "train": asdict(cfg),
              "params": model.num_params(), "train_chars": len(text),
              "epochs": round(cfg.steps * cfg.batch_size * cfg.context_length / len(text), 3),
              "val_nats_per_char": round(evaluate_stream(model, val_ids[:EVAL_CHARS], MODEL.context_length), 4),
              "history": {"steps": history.steps, "train_loss": [round(x, 4) for x in history.train_loss],
                          "val_loss": [round(x, 4) for x in history.val_loss]},
              "train_seconds": round(seconds, 1)}
    if canaries:
        result["canaries"] = score_canaries(model, canaries, text, run.seed)
    return result


def shipped_extraction(seed: int = 0) -> dict:
    """gpt_char's greedy extraction of ``suffix`` characters after ``prompt`` ones, training vs validation text."""
    tok = shakespeare_char_tokenizer()
    model = load_pretrained("gpt_char", device="cpu")
    g = torch.Generator().manual_seed(seed)
    span = EXTRACT["prompt"] + EXTRACT["suffix"]
    result = {"model": "gpt_char", **EXTRACT}
    for split in ("train", "val"):
        ids = as_tensor(tok.encode(load_shakespeare(split)))
        starts = torch.randint(len(ids) - span, (EXTRACT["prefixes"],), generator=g).tolist()
        hits = extractable(model, ids, starts, EXTRACT["prompt"], EXTRACT["suffix"])
        result[split] = {"starts": starts, "extracted": hits.int().tolist()}
    return result


def load_results(path: Path = OUT) -> dict:
    """The stored runs: ``{"runs": {name: run}, "extraction": ...}`` (empty runs if none)."""
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def _store(path: Path, key: str, value: dict, command: str) -> None:
    table = load_results(path)
    if key == "extraction":
        table["extraction"] = {**value, "command": command}
    else:
        table["runs"] = dict(sorted({**table["runs"], key: {**value, "command": command}}.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse data", description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="?", choices=("all", "canaries", "quality", "extraction"), default="all")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="list the runs and which are stored; train nothing")
    args = parser.parse_args(argv)
    command = "python -m lmcourse data" + (f" {args.part}" if args.part != "all" else "")
    runs = plan(args.part)
    done = load_results(args.out)["runs"]
    if args.list:
        for run in runs:
            mark = f"{done[run.name]['val_nats_per_char']:.4f}" if run.name in done else "-"
            print(f"{run.name:<24} {mark}")
        return 0
    torch.set_num_threads(args.threads)
    tok = shakespeare_char_tokenizer()
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))
    for run in runs:
        if run.name in load_results(args.out)["runs"]:
            continue
        result = train_run(run, val_ids)
        _store(args.out, run.name, result, command)
        print(f"{run.name:<24} {result['val_nats_per_char']:.4f} nats/char  {result['train_seconds']:.0f} s",
              flush=True)
    if args.part in ("all", "extraction") and "extraction" not in load_results(args.out):
        _store(args.out, "extraction", shipped_extraction(), command)
        print("extraction stored", flush=True)
    return 0
