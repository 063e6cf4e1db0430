"""Chapter 12's sweep: GPTs of many sizes trained at several compute budgets, stored run by run.

    python -m lmcourse scaling                      # the IsoFLOP grid, the data-constrained runs, the held-out run
    python -m lmcourse scaling --shard 0/2 &         # ... split over two processes (one core each)
    python -m lmcourse scaling --shard 1/2 &
    python -m lmcourse scaling --list               # the runs, their cost, and which are stored
    python -m lmcourse scaling grid --budgets 1e12 --lr 1.25e-3   # the 1e12 profile at another peak learning rate
    python -m lmcourse scaling grid --budgets 1e12 --sizes 3x96   # one family member (layers x width) at a budget
    python -m lmcourse scaling data --seeds 3       # the data-constrained runs, seeds 0, 1 and 2
    python -m lmcourse scaling grid --budgets 1e12 --batch 16   # the 1e12 profile at half the batch (own table)
    python -m lmcourse scaling grid --budgets 1e13 --sizes 2x80,2x96 --table depth2  # other shapes (own table)
    python -m lmcourse scaling bootstrap            # refit the stored grid: single- and multi-start bootstraps

Every stored run keeps the command that trains it (``command``); :func:`planned` lists the
runs a command line trains, so a reader can check that the command reproduces the run.

**The grid** (Hoffmann et al. 2022, "Chinchilla", approach 2: IsoFLOP profiles).
A family of GPT-2-style character models (the shipped ``gpt_char``'s recipe:
learned positions, LayerNorm, GELU, tied embeddings, context 128, AdamW at
2.5e-3 with warmup and a cosine decay to a tenth, 32 windows per step) from about
3.3k to 1.25M non-embedding parameters ``N``, each trained at several compute
budgets ``C`` for ``D = C / (6 N)`` characters: the cosine schedule always ends
with the run (Chinchilla's correction of Kaplan et al. 2020, whose runs were cut
from longer schedules). ``N`` counts the parameters outside the token and
position embeddings, as Kaplan et al. do, and ``C = 6 N D`` leaves out attention's
own FLOPs. At each budget the sizes are the family's six nearest to
:data:`CENTRE_TOKENS_PER_PARAM` characters per parameter (Chinchilla's optimum is
20; the first runs here put it far higher), none trained for fewer than
:data:`MIN_STEPS` steps.

**Data-constrained runs** (Muennighoff et al. 2023). One model size at one budget,
trained on the first ``D / epochs`` characters of the training plays repeated
``epochs`` times, for 1 to 16 epochs: equal compute, less and less unique data.
``data --spread`` draws each run's unique characters instead as blocks of
:data:`SPREAD_BLOCK` characters at random from all the training plays (2 to 16 epochs;
one epoch reads nearly all of them either way), so that fewer unique characters do
not also mean fewer plays.

**Batch.** ``grid --batch B`` trains the same sizes on the same characters in steps of ``B``
windows instead of 32 (twice the steps at 16), stored in ``checkpoints/scaling_batch<B>.json``
so the chapter's grid stays one batch size.

**Other shapes.** ``grid --sizes`` also takes shapes outside the family (any depth from 1 to
:data:`MAX_LAYERS`, any width a multiple of 8 from 16 up to :data:`MAX_WIDTH`); ``--table NAME`` stores
runs in ``checkpoints/scaling_<NAME>.json`` instead (chapter 12's companion keeps a family of one
depth there), so that no shape outside the family enters the chapter's grid.

**The held-out run** (:data:`HELDOUT`): the family's largest model at about three
times the grid's largest budget, which no fit sees; chapter 12 predicts its loss
from the grid's law (and the shipped ``gpt_char``'s, ten times further out).

**Learning rate.** A command trains its runs (grid, data-constrained or held-out) at one peak
learning rate, 2.5e-3 (the shipped recipe's) unless ``--lr`` names another (decaying to a tenth of it, as the default
does; stored under names ending in ``-lr<peak>``). The sweep trains each profile at several
rates, doubling them towards a worse one on each side of each size's best (chapter 12
prints where that bracket is reached), and the chapter's tuned grid takes each size at its
best (:func:`grid_results`; Kaplan et al. 2020 tuned their learning rate by size too).

**Bootstrap** (``bootstrap``, no training): the law fitted to the stored tuned grid (each
size at its best stored learning rate, :func:`grid_results`) and refitted to resamples of it, each refit once from the
full fit alone and once with :data:`BOOTSTRAP_EXTRA_STARTS` random starts besides, stored
in ``checkpoints/scaling_bootstrap.json`` (a few minutes of fitting, too slow for the page).

Every run is scored on the same held-out text (the first :data:`EVAL_CHARS`
characters of the validation plays, every character, windows of 128 sliding by
64) and keeps its validation loss at several points of training (fixed batches).
Each run goes into ``checkpoints/scaling.json`` under its name as soon as it ends
(several processes may write it: a lock file orders them), so a stopped sweep
picks up where it stopped and ``--shard K/N`` splits the runs over processes.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..data import as_tensor, load_shakespeare
from ..scaling_laws import LossLaw, bootstrap, fit_loss_law, law_objective
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer
from ..train import TrainConfig, evaluate_stream, train
from ..transformer import GPT, GPTConfig

# (layers, width): about 3.3k, 7.3k, 13k, 57k, 100k, 234k, 336k, 608k, 793k and 1.25M non-embedding
# parameters; the shipped gpt_char is (6, 160), 1.86M
FAMILY = ((1, 16), (1, 24), (1, 32), (2, 48), (2, 64), (3, 80), (3, 96), (4, 112), (4, 128), (5, 144))
# Between 13k and 57k the family changes depth from one layer to two, and two budgets' optima fall in that
# gap; these sizes fill it at both depths (about 28k and 50k with one layer, 25k and 39k with two). They
# are trained only where --sizes names them, never among a budget's default six.
GAP_SIZES = ((1, 48), (1, 64), (2, 32), (2, 40))
MAX_LAYERS, MAX_WIDTH = 8, 256  # the largest shape --sizes accepts (widths are multiples of 8)
BUDGETS = (1e12, 3e12, 1e13, 3e13)  # FLOPs (6 N D); gpt_char was trained with 3.0e14
BASE_MODEL = GPTConfig(vocab_size=75, context_length=128, dropout=0.0, tie_weights=True, positional="learned",
                       bias=True)
BASE_TRAIN = TrainConfig(batch_size=32, context_length=128, lr=2.5e-3, min_lr=2.5e-4, weight_decay=0.1,
                         grad_clip=1.0, eval_batches=4)
TOKENS_PER_STEP = BASE_TRAIN.batch_size * BASE_TRAIN.context_length
SIZES_PER_BUDGET = 6
# Where each budget's sizes are centred: N with D = 300 N. Chinchilla's optimum is 20 characters
# per parameter, but the first runs of this sweep (1e12 and 3e12 FLOPs, centred on 20) found every
# profile's lowest loss at its smallest model (13k and 57k parameters, 1,000 and 150 characters per
# parameter), so the grid moved down to bracket the minimum.
CENTRE_TOKENS_PER_PARAM = 300
MIN_STEPS = 100
EVALS_PER_RUN = 8  # fixed-batch validation losses kept per run, besides the final score
EVAL_CHARS = 100_000
DATA_MODEL = (3, 80)  # the data-constrained runs: this size ...
DATA_EPOCHS = (1, 2, 4, 8, 16)  # ... trained this many times over fewer characters ...
DATA_TOKENS = 4_000_000  # ... for this many characters in all (C = 6 N D, about 5.5e12)
SPREAD_BLOCK = 8192  # data --spread: unique characters in blocks of this many, drawn from all the plays
# Held out of every fit: a run the chapter predicts from the grid's law before reading its loss,
# (layers, width, FLOPs): the family's largest model at about 3x the grid's largest budget
HELDOUT = ((5, 144, 1e14),)
BOOTSTRAP_SAMPLES = 100  # resamples of the grid's runs
BOOTSTRAP_EXTRA_STARTS = 8  # random starts per resample, besides the full fit


def model_config(layers: int, width: int) -> GPTConfig:
    """A member of the family: heads of 32 dimensions where the width is a multiple of 32 from 96 up
    (as gpt_char's 5 heads of 32), else of 16."""
    head = 32 if width >= 96 and width % 32 == 0 else 16
    return replace(BASE_MODEL, n_layers=layers, d_model=width, n_heads=width // head)


def non_embedding_params(config: GPTConfig) -> int:
    """Parameters outside the token and position embeddings (the head is tied to the first).

    >>> non_embedding_params(model_config(1, 32))
    12768
    """
    model = GPT(config)
    return model.num_params() - model.tok_emb.weight.numel() - config.context_length * config.d_model


@dataclass(frozen=True)
class Run:
    """One training run of the sweep."""

    layers: int
    width: int
    budget: float  # C, FLOPs
    steps: int  # D = steps * batch * 128
    unique_chars: int | None = None  # train on only this many characters of the training plays (None: all)
    seed: int = 0
    lr: float = BASE_TRAIN.lr  # peak learning rate; the cosine decays to a tenth of it
    batch: int = BASE_TRAIN.batch_size  # windows of 128 characters per step
    spread: bool = False  # unique_chars in random blocks from all the plays, not the first characters

    @property
    def name(self) -> str:
        data = "" if self.unique_chars is None else f"-U{self.unique_chars}" + ("-spread" if self.spread else "")
        rate = "" if self.lr == BASE_TRAIN.lr else f"-lr{self.lr:g}"
        batch = "" if self.batch == BASE_TRAIN.batch_size else f"-b{self.batch}"
        return f"C{self.budget:.0e}-L{self.layers}-d{self.width}{data}-s{self.seed}{rate}{batch}"

    @property
    def tokens(self) -> int:
        return self.steps * self.batch * BASE_TRAIN.context_length


def grid(budgets: tuple[float, ...] = BUDGETS, seeds: int = 1, lr: float = BASE_TRAIN.lr,
         members: tuple[tuple[int, int], ...] | None = None, batch: int = BASE_TRAIN.batch_size) -> list[Run]:
    """The IsoFLOP runs: at each budget, the six sizes nearest (in log N) to the centre's characters per parameter
    (or, with ``members``, those shapes (layers, width), in or outside the family, that get at least
    ``MIN_STEPS`` steps of the recipe's batch), with ``batch`` windows per step (the same sizes at any batch:
    the same characters in more, smaller steps)."""
    sizes = [(layers, width, non_embedding_params(model_config(layers, width)))
             for layers, width in (FAMILY if members is None else dict.fromkeys(members))]
    runs = []
    for budget in budgets:
        target = math.sqrt(budget / (6 * CENTRE_TOKENS_PER_PARAM))  # N with D = 300 N
        fits = [s for s in sizes if budget / (6 * s[2]) >= MIN_STEPS * TOKENS_PER_STEP]
        chosen = sorted(fits, key=lambda s: abs(math.log(s[2] / target)))[:SIZES_PER_BUDGET] if members is None \
            else fits
        for layers, width, n in sorted(chosen, key=lambda s: s[2]):
            steps = round(budget / (6 * n * batch * BASE_TRAIN.context_length))
            runs += [Run(layers, width, budget, steps, seed=seed, lr=lr, batch=batch) for seed in range(seeds)]
    return runs


def data_constrained(seeds: int = 1, lr: float = BASE_TRAIN.lr, spread: bool = False) -> list[Run]:
    """Equal compute, 1 to 16 epochs over fewer and fewer unique characters, at peak learning rate ``lr``
    (with ``spread``, 2 to 16 epochs over characters drawn in blocks from all the plays)."""
    layers, width = DATA_MODEL
    n = non_embedding_params(model_config(layers, width))
    steps = round(DATA_TOKENS / TOKENS_PER_STEP)
    budget = float(f"{6 * n * steps * TOKENS_PER_STEP:.1e}")
    return [Run(layers, width, budget, steps, unique_chars=steps * TOKENS_PER_STEP // epochs, seed=seed, lr=lr,
                spread=spread)
            for epochs in DATA_EPOCHS if not (spread and epochs == 1) for seed in range(seeds)]


def unique_data(run: Run, train_ids: torch.Tensor) -> torch.Tensor:
    """The characters ``run`` trains on: all of ``train_ids``, its first ``unique_chars``, or (``spread``)
    ``unique_chars`` of them in blocks of :data:`SPREAD_BLOCK` drawn at random (the draw seeded by the run's
    seed), kept in the plays' order.

    >>> ids = torch.arange(10 * SPREAD_BLOCK)
    >>> got = unique_data(Run(3, 80, 1e12, 10, unique_chars=3 * SPREAD_BLOCK - 5, spread=True), ids)
    >>> len(got), len(set(got.tolist())), bool((got[1:] > got[:-1]).all())
    (24571, 24571, True)
    """
    if run.unique_chars is None:
        return train_ids
    if not run.spread:
        return train_ids[:run.unique_chars]
    blocks = len(train_ids) // SPREAD_BLOCK
    need = -(-run.unique_chars // SPREAD_BLOCK)
    if need > blocks:
        raise ValueError(f"{run.unique_chars:,} characters is more than the {blocks} whole blocks of the plays hold")
    gen = torch.Generator().manual_seed(run.seed)
    chosen = torch.randperm(blocks, generator=gen)[:need].sort().values
    return torch.cat([train_ids[b * SPREAD_BLOCK:(b + 1) * SPREAD_BLOCK] for b in chosen.tolist()])[:run.unique_chars]


def heldout(seeds: int = 1, lr: float = BASE_TRAIN.lr) -> list[Run]:
    """The runs no fit sees (:data:`HELDOUT`), at peak learning rate ``lr``."""
    runs = []
    for layers, width, budget in HELDOUT:
        steps = round(budget / (6 * non_embedding_params(model_config(layers, width)) * TOKENS_PER_STEP))
        runs += [Run(layers, width, budget, steps, seed=seed, lr=lr) for seed in range(seeds)]
    return runs


def train_config(run: Run) -> TrainConfig:
    """The shipped recipe stretched to the run: warmup 5% of the steps (at most 200), cosine to the end."""
    return replace(BASE_TRAIN, steps=run.steps, lr=run.lr, min_lr=run.lr / 10, batch_size=run.batch,
                   warmup_steps=min(200, max(1, run.steps // 20)),
                   eval_every=max(1, run.steps // EVALS_PER_RUN), seed=run.seed)


def train_run(run: Run, train_ids: torch.Tensor, val_ids: torch.Tensor, eval_ids: torch.Tensor) -> dict:
    """Train one run; what the chapter reads of it."""
    config = model_config(run.layers, run.width)
    torch.manual_seed(run.seed)
    model = GPT(config)
    data = unique_data(run, train_ids)
    start = time.perf_counter()
    history = train(model, data, val_ids, train_config(run), device="cpu")
    seconds = time.perf_counter() - start
    n = non_embedding_params(config)
    return {**asdict(run), "name": run.name, "model": asdict(config), "train": asdict(train_config(run)),
            "non_embedding_params": n, "params": model.num_params(), "tokens": run.tokens,
            "flops": 6 * n * run.tokens, "epochs": round(run.tokens / len(data), 3),
            "val_nats_per_char": round(evaluate_stream(model, eval_ids, config.context_length), 4),
            "history": {"steps": history.steps, "tokens": [s * run.tokens // run.steps for s in history.steps],
                        "train_loss": [round(x, 4) for x in history.train_loss],
                        "val_loss": [round(x, 4) for x in history.val_loss]},
            "train_seconds": round(seconds, 1)}


@functools.cache
def _plays() -> tuple[torch.Tensor, torch.Tensor]:
    tok = shakespeare_char_tokenizer()
    return as_tensor(tok.encode(load_shakespeare("train"))), as_tensor(tok.encode(load_shakespeare("val")))


def train_one(layers: int, width: int, budget: float, lr: float, seed: int = 0) -> float:
    """Train one IsoFLOP run of the sweep's recipe now, without storing it: the shape ``layers`` x ``width`` for
    ``budget`` FLOPs (C = 6 N D) at peak rate ``lr``; its validation loss in nats per character, scored as every
    stored run is (``nan`` if it diverged). The real runs of exercise 12's learning-rate search.

    A 7,272-parameter model (1 x 24) at 1e11 FLOPs is 559 steps, about ten seconds on one core."""
    if not (1 <= layers <= MAX_LAYERS and width % 8 == 0 and 16 <= width <= MAX_WIDTH):
        raise ValueError(f"train_one: a shape of 1 to {MAX_LAYERS} layers and a width that is a multiple of 8 from "
                         f"16 to {MAX_WIDTH}, got {layers} x {width}")
    if not (math.isfinite(lr) and lr > 0 and math.isfinite(budget)):
        raise ValueError(f"train_one: the peak rate and the budget must be positive numbers, got lr={lr}, "
                         f"budget={budget}")
    n = non_embedding_params(model_config(layers, width))
    steps = round(budget / (6 * n * TOKENS_PER_STEP))
    if steps < MIN_STEPS:
        raise ValueError(f"train_one: {budget:g} FLOPs give a {n:,}-parameter model {steps} steps, fewer than "
                         f"{MIN_STEPS}; raise the budget to at least {6 * n * TOKENS_PER_STEP * MIN_STEPS:.1e}")
    train_ids, val_ids = _plays()
    return train_run(Run(layers, width, budget, steps, seed=seed, lr=lr), train_ids, val_ids,
                     val_ids[:EVAL_CHARS])["val_nats_per_char"]


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock on ``path``'s lock file (other processes of the sweep wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_results(path: Path = CHECKPOINT_DIR / "scaling.json") -> dict:
    """The stored sweep: ``{"command": ..., "eval": ..., "runs": {name: run}}`` (empty runs if none)."""
    if not path.is_file():
        return {"runs": {}}
    return json.loads(path.read_text())


def store(path: Path, result: dict, command: str) -> None:
    """Add one finished run to the results file (under the lock)."""
    with locked(path):
        table = load_results(path)
        table["command"] = command  # the latest
        # every command that stored a run
        table["commands"] = sorted(set(table.get("commands", [table.get("command", command)])) | {command})
        table["eval"] = f"first {EVAL_CHARS} validation characters, every character, windows of 128 sliding by 64"
        table["runs"] = dict(sorted({**table.get("runs", {}), result["name"]: {**result, "command": command}}.items()))
        path.write_text(json.dumps(table, indent=1) + "\n")


def grid_results(table: dict, lr: float | None = None) -> list[dict]:
    """The stored IsoFLOP runs at seed 0, one per budget and size (not the held-out or data-constrained runs, nor
    the extra seeds): with ``lr=None`` the tuned grid, each size at the peak learning rate of its lowest stored
    loss at that budget; with a rate (``BASE_TRAIN.lr``: the one-rate grid), the runs at that rate.

    >>> runs = {"a": {"name": "a", "unique_chars": None, "seed": 0, "lr": 2.5e-3, "budget": 1e12,
    ...               "non_embedding_params": 10, "val_nats_per_char": 2.0},
    ...         "b": {"name": "b", "unique_chars": None, "seed": 0, "lr": 5e-3, "budget": 1e12,
    ...               "non_embedding_params": 10, "val_nats_per_char": 1.9},
    ...         "c": {"name": "c", "unique_chars": None, "seed": 1, "lr": 1e-2, "budget": 1e12,
    ...               "non_embedding_params": 10, "val_nats_per_char": 1.5}}
    >>> [r["name"] for r in grid_results({"runs": runs})], [r["name"] for r in grid_results({"runs": runs}, 2.5e-3)]
    (['b'], ['a'])
    """
    held = set(HELDOUT)  # (layers, width, budget), at every rate
    chosen: dict[tuple[float, int], dict] = {}
    for r in table["runs"].values():
        if r["unique_chars"] is not None or (r.get("layers"), r.get("width"), r["budget"]) in held \
                or r.get("seed", 0) != 0:
            continue
        if lr is not None and r.get("lr", BASE_TRAIN.lr) != lr:
            continue
        key = (r["budget"], r["non_embedding_params"])
        loss = r["val_nats_per_char"]
        loss = math.inf if math.isnan(loss) else loss  # a diverged run is the worst
        if key not in chosen or loss < chosen[key][0]:
            chosen[key] = (loss, r)
    return [chosen[k][1] for k in sorted(chosen)]


def fit_bootstraps(table: dict, samples: int = BOOTSTRAP_SAMPLES, extra_starts: int = BOOTSTRAP_EXTRA_STARTS,
                   seed: int = 0) -> dict:
    """The law fitted to the stored tuned grid (:func:`grid_results`) and its refits to resamples, from the full
    fit alone and with ``extra_starts`` random starts besides (the same resamples: see
    :func:`~lmcourse.scaling_laws.bootstrap`)."""
    runs = grid_results(table)
    N = [r["non_embedding_params"] for r in runs]
    D = [r["tokens"] for r in runs]
    L = [r["val_nats_per_char"] for r in runs]
    law = fit_loss_law(N, D, L)
    single = bootstrap(N, D, L, law, samples=samples, seed=seed)
    multi = bootstrap(N, D, L, law, samples=samples, seed=seed, extra_starts=extra_starts)
    g = torch.Generator().manual_seed(seed)  # the resamples again, to score both refits on each
    picks = [torch.randint(len(N), (len(N),), generator=g).tolist() for _ in range(samples)]

    def score(f: LossLaw, pick: list[int]) -> float:
        return law_objective(f, [N[i] for i in pick], [D[i] for i in pick], [L[i] for i in pick])

    return {"runs": sorted(r["name"] for r in runs), "samples": samples, "extra_starts": extra_starts,
            "seed": seed, "law": asdict(law),
            "single": [{**asdict(f), "objective": score(f, p)} for f, p in zip(single, picks, strict=True)],
            "multi": [{**asdict(f), "objective": score(f, p)} for f, p in zip(multi, picks, strict=True)]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmcourse scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="?", choices=("all", "grid", "data", "heldout", "bootstrap"), default="all")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per run (0, 1, ...)")
    parser.add_argument("--budgets", default=",".join(f"{b:.0e}" for b in BUDGETS), help="compute budgets, FLOPs")
    parser.add_argument("--sizes", default=None,
                        help="grid: these family members instead of each budget's six, as LxW,LxW (3x96)")
    parser.add_argument("--shard", default="0/1", help="K/N: train every N-th run, starting at the K-th")
    parser.add_argument("--out", type=Path, default=None,
                        help="the table to store runs in (default checkpoints/scaling.json; with --batch, "
                             "checkpoints/scaling_batch<B>.json)")
    parser.add_argument("--table", default=None,
                        help="store runs in checkpoints/scaling_<TABLE>.json (letters, digits, _), not the default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=BASE_TRAIN.lr,
                        help="peak learning rate of the runs (grid, data-constrained and held-out)")
    parser.add_argument("--batch", type=int, default=BASE_TRAIN.batch_size,
                        help="grid: windows per step (the same characters in more steps when smaller)")
    parser.add_argument("--spread", action="store_true",
                        help="data: unique characters in random blocks from all the plays, not the first ones")
    parser.add_argument("--list", action="store_true", help="list the runs and which are stored; train nothing")
    return parser


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[Run], str]:
    """The runs a parsed command line trains, and the command's canonical text."""
    try:
        budgets = tuple(float(b) for b in args.budgets.split(","))
        k, n_shards = (int(x) for x in args.shard.split("/"))
        members = None if args.sizes is None else tuple(
            tuple(int(v) for v in m.lower().split("x")) for m in args.sizes.split(","))
    except ValueError:
        parser.error("--budgets is a comma-separated list of numbers (1e12,3e12), --shard is K/N (0/2) "
                     "and --sizes is LAYERSxWIDTH,... (3x96)")
    if args.batch != BASE_TRAIN.batch_size and args.part != "grid":
        parser.error("--batch goes with the grid part")
    if args.spread and args.part != "data":
        parser.error("--spread goes with the data part")
    if args.seeds < 1 or args.batch < 1 or args.lr <= 0 or not 0 <= k < n_shards or any(b <= 0 for b in budgets):
        parser.error("need --seeds >= 1, --batch >= 1, --shard K/N with 0 <= K < N, and positive budgets")
    shapes_ok = members is None or all(len(m) == 2 and 1 <= m[0] <= MAX_LAYERS and m[1] % 8 == 0
                                       and 16 <= m[1] <= MAX_WIDTH for m in members)
    if members is not None and (not shapes_ok or args.part != "grid"):
        parser.error(f"--sizes goes with the grid part and names shapes LAYERSxWIDTH, 1 to {MAX_LAYERS} layers and a "
                     f"width that is a multiple of 8 from 16 up to {MAX_WIDTH} (the family: "
                     f"{', '.join(f'{a}x{b}' for a, b in sorted(FAMILY + GAP_SIZES))})")
    if args.table is not None and not args.table.replace("_", "").isalnum():
        parser.error("--table is a name of letters, digits and _ (depth2)")
    runs = (grid(budgets, args.seeds, args.lr, members, args.batch) if args.part in ("all", "grid") else []) + \
        (data_constrained(args.seeds, args.lr, args.spread) if args.part in ("all", "data") else []) + \
        (heldout(args.seeds, args.lr) if args.part in ("all", "heldout") else [])
    command = "python -m lmcourse scaling" + (f" {args.part}" if args.part != "all" else "") + \
        (f" --seeds {args.seeds}" if args.seeds != 1 else "") + \
        (f" --budgets {args.budgets}" if budgets != BUDGETS else "") + \
        (f" --sizes {args.sizes}" if members is not None else "") + \
        (f" --lr {args.lr:g}" if args.lr != BASE_TRAIN.lr else "") + \
        (f" --batch {args.batch}" if args.batch != BASE_TRAIN.batch_size else "") + \
        (" --spread" if args.spread else "") + \
        (f" --table {args.table}" if args.table is not None else "")
    return runs[k::n_shards], command


def planned(command: str) -> list[Run]:
    """The runs that ``command`` (``python -m lmcourse scaling ...``, as stored with each run) trains.

    >>> [r.name for r in planned("python -m lmcourse scaling grid --budgets 1e12 --sizes 3x96")]
    ['C1e+12-L3-d96-s0']
    """
    words = command.split()
    if words[:4] != ["python", "-m", "lmcourse", "scaling"]:
        raise ValueError(f"not a command of the sweep: {command!r}")
    parser = _parser()
    return _plan(parser, parser.parse_args(words[4:]))[0]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.part == "bootstrap" and args.table is not None:
        parser.error("bootstrap refits the chapter's grid (checkpoints/scaling.json); it takes no --table")
    if args.out is None:
        args.out = CHECKPOINT_DIR / (f"scaling_{args.table}.json" if args.table is not None
                                     else "scaling.json" if args.batch == BASE_TRAIN.batch_size
                                     else f"scaling_batch{args.batch}.json")
    if args.part == "bootstrap":
        torch.set_num_threads(args.threads)
        out = args.out.with_name("scaling_bootstrap.json")
        result = fit_bootstraps(load_results(args.out))
        out.write_text(json.dumps({"command": "python -m lmcourse scaling bootstrap", **result}, indent=1) + "\n")
        print(f"{len(result['runs'])} runs, {result['samples']} resamples -> {out}")
        return 0
    runs, command = _plan(parser, args)
    done = load_results(args.out)["runs"]
    if args.list:
        for run in runs:
            mark = f"{done[run.name]['val_nats_per_char']:.4f}" if run.name in done else "-"
            print(f"{run.name:<28} {run.steps:>6} steps  {run.tokens / 1e6:6.2f}M chars  {mark}")
        return 0
    torch.set_num_threads(args.threads)
    tok = shakespeare_char_tokenizer()
    train_ids = as_tensor(tok.encode(load_shakespeare("train")))
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))
    for run in runs:
        if run.name in load_results(args.out)["runs"]:
            continue
        result = train_run(run, train_ids, val_ids, val_ids[:EVAL_CHARS])
        store(args.out, result, command)
        print(f"{run.name:<28} {result['val_nats_per_char']:.4f} nats/char  {result['train_seconds']:.0f} s",
              flush=True)
    return 0
