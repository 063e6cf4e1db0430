"""Chapter 14's runs: the shipped ``gpt_char`` adapted three ways, stored run by run.

    python -m lmcourse adaptation                 # every part: cpt, sft, dpo
    python -m lmcourse adaptation --part cpt      # continued pretraining on the King James Bible
    python -m lmcourse adaptation --part sft      # instruction tuning on the plays' instruction set
    python -m lmcourse adaptation --part dpo      # DPO toward ten-syllable lines
    python -m lmcourse adaptation --list          # the runs and which are stored

**cpt** (continued pretraining, Gururangan et al. 2020): ``gpt_char`` trained on the
KJV's training books by four methods (:data:`CPT_METHODS`): every weight; LoRA on
every linear layer of the blocks (:mod:`lmcourse.lora`); the tied embedding matrix
alone (which is also the unembedding, so this is "a new head" for a tied model); and
every weight on a mix whose :data:`REPLAY_SHARE` of windows come from the training
plays (replay). Each evaluation records the loss on the KJV's validation books and on
the validation plays (what is forgotten).

**sft** (supervised fine-tuning on instructions): ``gpt_char`` trained on the
instruction set of :mod:`lmcourse.instructions` (3,000 examples per task from the
training plays) with the loss on the response only (``sft``), on every token
(``nomask``), and with LoRA (``lora``); each is scored by exact match on 300
held-out instructions per task (validation plays). ``sft-base-s0`` scores the
untrained model (zero-shot, one-shot, in the plays' own format) and the simple rules;
``sft-long-s0`` is one seed of masked SFT run four times as long.

**dpo** (Rafailov et al. 2023): pairs from ``gpt_char``'s own samples (four next
lines for each of 400 verse prompts of the training plays; a ten-syllable line
preferred to one of another length), DPO on every weight at three betas, three
seeds; each tuned model is scored by sampling four lines for each of 64 prompts
of the validation plays: the share of ten-syllable lines (the reward) and the KL
to the reference. ``dpo-base-s0`` scores the reference itself.

Every run goes into ``checkpoints/adaptation.json`` under its name as soon as it
ends, with the command that trains it, so a stopped command resumes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..bible import load_kjv
from ..data import load_shakespeare
from ..instructions import baseline_accuracy, build_instructions, encode_examples, exact_match, shortest_shots
from ..lora import add_lora, freeze, trainable_count
from ..preference import encode_pairs, is_decasyllable, preference_pairs, sample_lines, score_policy, verse_prompts
from ..runs import load_pretrained
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer
from ..train import TrainConfig, train
from .scaling import load_results, store

OUT = CHECKPOINT_DIR / "adaptation.json"
SEEDS = (0, 1, 2)
CPT_METHODS = ("full", "lora", "embedding", "replay")
REPLAY_SHARE = 0.2  # share of the replay mix's characters (so of its windows) that are plays
LORA_RANK, LORA_ALPHA = 8, 16.0
CPT = TrainConfig(steps=120, batch_size=8, context_length=128, lr=3e-4, min_lr=3e-5, warmup_steps=10,
                  eval_every=20, eval_batches=6, weight_decay=0.0)
METHOD_LR = {"full": 3e-4, "replay": 3e-4, "lora": 2e-3, "embedding": 2e-3}  # LoRA and one matrix take a larger step


@dataclass(frozen=True)
class Run:
    part: str  # "cpt" | "sft" | "dpo"
    method: str
    seed: int
    beta: float = 0.0  # dpo only

    @property
    def name(self) -> str:
        beta = f"-beta{self.beta:g}" if self.part == "dpo" and self.method != "base" else ""
        return f"{self.part}-{self.method}{beta}-s{self.seed}"


def replay_mix(new_ids: torch.Tensor, old_ids: torch.Tensor, share: float) -> torch.Tensor:
    """``new_ids`` followed by enough of ``old_ids`` that the old text is ``share`` of the whole.

    Random windows of the mix then come from the old text with probability about ``share``.

    >>> replay_mix(torch.arange(8), torch.arange(100, 110), 0.2).tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 100, 101]
    """
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    n_old = round(len(new_ids) * share / (1 - share))
    if n_old > len(old_ids):
        raise ValueError(f"a share of {share} needs {n_old} old tokens, only {len(old_ids)} given")
    return torch.cat([new_ids, old_ids[:n_old]])


def prepare(model: torch.nn.Module, method: str) -> int:
    """Set up ``model`` for ``method`` (which parameters train); returns the count that train."""
    if method in ("full", "replay", "sft", "nomask", "long"):
        return freeze(model, trainable=("",))
    if method == "lora":
        add_lora(model, rank=LORA_RANK, alpha=LORA_ALPHA)
        return trainable_count(model)
    if method == "embedding":
        return freeze(model, trainable=("tok_emb.",))
    raise ValueError(f"unknown method {method!r}")


def cpt_runs() -> list[Run]:
    return [Run("cpt", m, s) for s in SEEDS for m in CPT_METHODS]


def train_cpt(run: Run) -> dict:
    tok = shakespeare_char_tokenizer()
    kjv_train, kjv_val = (torch.tensor(tok.encode(load_kjv(s))) for s in ("train", "val"))
    plays_train, plays_val = (torch.tensor(tok.encode(load_shakespeare(s))) for s in ("train", "val"))
    data = replay_mix(kjv_train, plays_train, REPLAY_SHARE) if run.method == "replay" else kjv_train
    model = load_pretrained("gpt_char")
    n_train = prepare(model, run.method)
    lr = METHOD_LR[run.method]
    cfg = TrainConfig(**{**CPT.__dict__, "lr": lr, "min_lr": lr / 10, "seed": run.seed})
    t0 = time.perf_counter()
    hist = train(model, data, kjv_val, cfg, extra_val={"plays": plays_val})
    return {"name": run.name, "part": "cpt", "method": run.method, "seed": run.seed, "trainable": n_train,
            "steps": hist.steps, "kjv_val": hist.val_loss, "plays_val": hist.extra["plays"],
            "train_loss": hist.train_loss, "lr": lr, "seconds": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------------
# Supervised fine-tuning on instructions

SFT_METHODS = ("sft", "nomask", "lora")  # every weight; every weight with the loss on every token; LoRA
SFT = TrainConfig(steps=150, batch_size=16, context_length=128, lr=1e-3, min_lr=1e-4, warmup_steps=10,
                  eval_every=50, eval_batches=6, weight_decay=0.0, objective="sft")
SFT_LR = {"sft": 1e-3, "nomask": 1e-3, "lora": 3e-3, "long": 1e-3}
SFT_TRAIN = 3000  # training instructions per task (form: half verse, half prose)
SFT_EVAL = 300  # held-out instructions per task (validation plays), scored for exact match


SFT_LONG_STEPS = 600  # "long": one seed of masked SFT four times as long (a probe, not a comparison)


def sft_runs() -> list[Run]:
    return ([Run("sft", "base", 0)] + [Run("sft", m, s) for s in SEEDS for m in SFT_METHODS]
            + [Run("sft", "long", 0)])


def score_sft_base(run: Run) -> dict:
    """The untrained ``gpt_char`` asked each way, and the simple rules, on the held-out instructions."""
    tok = shakespeare_char_tokenizer()
    train_ex = build_instructions("train", per_task=SFT_TRAIN)
    val_ex = build_instructions("val", per_task=SFT_EVAL)
    shots = shortest_shots(train_ex)
    model = load_pretrained("gpt_char")
    t0 = time.perf_counter()
    out = {"name": run.name, "part": "sft", "method": "base", "seed": 0,
           "zero_shot": exact_match(model, val_ex, tok, lenient=True),
           "one_shot": exact_match(model, val_ex, tok, shots=shots, lenient=True),
           "natural": exact_match(model, val_ex, tok, natural=True),
           "baseline": baseline_accuracy(train_ex, val_ex),
           "shots": {t: [e.prompt, e.answer] for t, e in shots.items()}}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def train_sft(run: Run) -> dict:
    if run.method == "base":
        return score_sft_base(run)
    tok = shakespeare_char_tokenizer()
    train_ex = build_instructions("train", per_task=SFT_TRAIN)
    val_ex = build_instructions("val", per_task=SFT_EVAL)
    data = encode_examples(train_ex, tok, context_length=128, mask_prompt=run.method != "nomask")
    val_data = encode_examples(val_ex, tok, context_length=128)
    plays_val = torch.tensor(tok.encode(load_shakespeare("val")))
    model = load_pretrained("gpt_char")
    n_train = prepare(model, run.method)
    lr = SFT_LR[run.method]
    steps = SFT_LONG_STEPS if run.method == "long" else SFT.steps
    cfg = TrainConfig(**{**SFT.__dict__, "lr": lr, "min_lr": lr / 10, "seed": run.seed, "steps": steps})
    t0 = time.perf_counter()
    hist = train(model, data, val_data, cfg, extra_val={"plays": plays_val})
    seconds = round(time.perf_counter() - t0, 1)
    scores = exact_match(model, val_ex, tok)
    lenient = exact_match(model, val_ex, tok, lenient=True)
    return {"name": run.name, "part": "sft", "method": run.method, "seed": run.seed, "trainable": n_train,
            "steps": hist.steps, "response_val": hist.val_loss, "plays_val": hist.extra["plays"],
            "exact_match": scores, "exact_match_lenient": lenient, "lr": lr, "seconds": seconds}


# ----------------------------------------------------------------------------------
# DPO toward ten-syllable lines

BETAS = (0.1, 0.3, 1.0)
DPO = TrainConfig(steps=30, batch_size=8, context_length=128, lr=1e-4, min_lr=1e-5, warmup_steps=5,
                  eval_every=10, eval_batches=4, weight_decay=0.0, objective="dpo")
DPO_PROMPTS = {"train": 400, "val": 64}  # prompts whose base samples make the pairs; val: also the reward's
DPO_SAMPLES = 4  # lines sampled per prompt


def dpo_runs() -> list[Run]:
    return [Run("dpo", "base", 0)] + [Run("dpo", "full", s, b) for s in SEEDS for b in BETAS]


_PAIRS: dict[str, torch.Tensor] = {}


def dpo_pairs(split: str) -> torch.Tensor:
    """The encoded pairs of ``split``: ``gpt_char``'s samples (seed 0), ten syllables preferred."""
    if split not in _PAIRS:
        tok = shakespeare_char_tokenizer()
        prompts = verse_prompts(split, DPO_PROMPTS[split], seed=0)
        samples = sample_lines(load_pretrained("gpt_char"), prompts, tok, k=DPO_SAMPLES,
                               generator=torch.Generator().manual_seed(0))
        _PAIRS[split] = encode_pairs(preference_pairs(prompts, samples, is_decasyllable), tok)
    return _PAIRS[split]


def train_dpo(run: Run) -> dict:
    tok = shakespeare_char_tokenizer()
    reference = load_pretrained("gpt_char")
    prompts = verse_prompts("val", DPO_PROMPTS["val"], seed=1)  # other prompts than the val pairs'
    plays_val = torch.tensor(tok.encode(load_shakespeare("val")))
    if run.method == "base":
        t0 = time.perf_counter()
        out = score_policy(reference, reference, prompts, tok, k=DPO_SAMPLES, seed=1)
        return {"name": run.name, "part": "dpo", "method": "base", "seed": 0, **out,
                "pairs": {s: len(dpo_pairs(s)) for s in ("train", "val")},
                "seconds": round(time.perf_counter() - t0, 1)}
    model = load_pretrained("gpt_char")
    cfg = TrainConfig(**{**DPO.__dict__, "seed": run.seed, "dpo_beta": run.beta})
    t0 = time.perf_counter()
    hist = train(model, dpo_pairs("train"), dpo_pairs("val"), cfg, reference=reference,
                 extra_val={"plays": plays_val})
    seconds = round(time.perf_counter() - t0, 1)
    out = score_policy(model, reference, prompts, tok, k=DPO_SAMPLES, seed=1)
    return {"name": run.name, "part": "dpo", "method": "full", "seed": run.seed, "beta": run.beta,
            "steps": hist.steps, "dpo_val": hist.val_loss, "dpo_train": hist.train_loss,
            "plays_val": hist.extra["plays"], **out, "seconds": seconds}


# ----------------------------------------------------------------------------------
# The command


def planned(part: str) -> list[Run]:
    """The runs of ``part`` ("all" for every part)."""
    parts = {"cpt": cpt_runs, "sft": sft_runs, "dpo": dpo_runs}
    if part not in (*parts, "all"):
        raise ValueError(f"part must be one of {(*parts, 'all')}, got {part!r}")
    return [r for p, f in parts.items() if part in (p, "all") for r in f()]


TRAINERS = {"cpt": train_cpt, "sft": train_sft, "dpo": train_dpo}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse adaptation", description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=("all", "cpt", "sft", "dpo"))
    parser.add_argument("--list", action="store_true", help="list the runs and which are stored")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m lmcourse adaptation" + ("" if args.part == "all" else f" --part {args.part}")
    runs = planned(args.part)
    done = load_results(args.out).get("runs", {})
    for run in runs:
        if args.list:
            print(f"{run.name:<28} {'stored' if run.name in done else '-'}")
            continue
        if run.name in done:
            continue
        result = TRAINERS[run.part](run)
        store(args.out, result, command)
        print(f"{run.name}: {result['seconds']} s", flush=True)
    return 0


