"""The stored scaling sweep as chapter 12 and its companion page read it.

:func:`load_sweep` gathers the runs stored by ``python -m lmcourse scaling``
(``lmcourse/checkpoints/scaling.json``) into the groups both pages use. The
functions after it are the pieces of the chapter's analysis that both pages
need: where a size's best learning rate lies among the rates tried
(:func:`bracket`), approach 2's vertex over a window of each IsoFLOP profile
(:func:`window_vertex`, :func:`vertices`), the seed noise of one run
(:func:`pooled_sd`, :func:`replicates`), approach 2's noise interval
(:func:`noise_interval`) and approach 3's law with its stored bootstrap refits
(:func:`grid_law`, :func:`stored_refits`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from ..data import load_shakespeare
from ..scaling_laws import LossLaw, bootstrap, effective_data_sampled, fit_loss_law, isoflop_minimum, power_law
from ..shipped import CHECKPOINT_DIR
from .scaling import BASE_TRAIN, HELDOUT, grid_results, heldout, load_results

LAW_KEYS = ("E", "A", "alpha", "B", "beta")
FAILED_MARGIN = 0.2  # a seed this far above the lowest of its configuration's seeds failed to train


@dataclass
class Sweep:
    """The stored runs, grouped. ``grid_runs`` holds each (budget, size) at its best peak rate (seed 0);
    ``by_budget[C]`` the same runs of one budget, smallest first; ``at_rate[C, N]`` maps every peak rate tried at
    that size (seed 0) to its loss."""

    runs: dict[str, dict]
    lr0: float  # the recipe's peak learning rate
    train_chars: int  # characters in the training plays
    held_names: list[str]  # the held-out runs the sweep plans
    grid_runs: list[dict]
    one_rate: list[dict]  # every size at lr0
    by_budget: dict[float, list[dict]]
    budgets: list[float]
    data_all: list[dict]  # data-constrained runs on the first U characters of the plays, every rate
    data_runs: list[dict]  # ... at lr0
    spread_runs: list[dict]  # data-constrained runs with U drawn from all the plays
    held_runs: list[dict]  # the held-out runs as planned (lr0)
    held_all: list[dict]  # the held-out configuration at every rate trained, lowest rate first
    at_rate: dict[tuple[float, int], dict[float, float]]
    rates: list[float]

    def profiles(self, lr: float | None = None) -> dict[float, list[dict]]:
        """Each budget's runs, smallest first: each size at its best rate, or with ``lr`` every size at that rate."""
        if lr is None:
            return self.by_budget
        out: dict[float, list[dict]] = defaultdict(list)
        for r in sorted(grid_results({"runs": self.runs}, lr), key=lambda r: r["non_embedding_params"]):
            out[r["budget"]].append(r)
        return dict(out)


def load_sweep(table: dict | None = None) -> Sweep:
    """The stored sweep (``load_results()`` unless a table is given), grouped as the chapter reads it."""
    runs = (table or load_results())["runs"]
    lr0 = BASE_TRAIN.lr
    held_names = [r.name for r in heldout()]
    grid_runs = grid_results({"runs": runs})
    by_budget: dict[float, list[dict]] = defaultdict(list)
    for r in sorted(grid_runs, key=lambda r: r["non_embedding_params"]):
        by_budget[r["budget"]].append(r)
    data_all = [r for r in runs.values() if r["unique_chars"] is not None and not r.get("spread")]
    at_rate: dict[tuple[float, int], dict[float, float]] = defaultdict(dict)
    for r in runs.values():
        if r["unique_chars"] is None and r["seed"] == 0 and r["name"] not in held_names:
            at_rate[r["budget"], r["non_embedding_params"]][r["lr"]] = r["val_nats_per_char"]
    return Sweep(
        runs=runs, lr0=lr0, train_chars=len(load_shakespeare("train")), held_names=held_names,
        grid_runs=grid_runs, one_rate=grid_results({"runs": runs}, lr0), by_budget=dict(by_budget),
        budgets=sorted(by_budget), data_all=data_all, data_runs=[r for r in data_all if r["lr"] == lr0],
        spread_runs=[r for r in runs.values() if r.get("spread")],
        held_runs=[runs[n] for n in held_names if n in runs],
        held_all=sorted((r for r in runs.values() if (r["layers"], r["width"], r["budget"]) in HELDOUT
                         and r["seed"] == 0), key=lambda r: r["lr"]),
        at_rate=dict(at_rate), rates=sorted({lr for v in at_rate.values() for lr in v}))


def depth_sweep(layers: int = 2, table: dict | None = None, extra: dict | None = None) -> Sweep:
    """The IsoFLOP grid of one depth: the runs of the stored sweep (``table``, ``load_results()`` unless given)
    with ``layers`` layers, and the runs of ``extra`` (``checkpoints/scaling_depth<layers>.json`` unless given:
    other widths of that depth, trained with ``--table depth<layers>``), grouped by :func:`load_sweep`. Only grid
    runs are kept (no data-constrained or held-out runs)."""
    if extra is None:
        extra = load_results(CHECKPOINT_DIR / f"scaling_depth{layers}.json")
    held = set(HELDOUT)
    runs = {name: r for name, r in {**(table or load_results())["runs"], **extra["runs"]}.items()
            if r["layers"] == layers and r["unique_chars"] is None
            and (r["layers"], r["width"], r["budget"]) not in held}
    if not runs:
        raise ValueError(f"depth_sweep: no stored grid run has {layers} layers")
    return load_sweep({"runs": runs})


def bracket(got: dict[float, float]) -> str:
    """Where the best of the rates tried (rate -> loss) lies among them: ``"bracketed"`` (a rate tried on each
    side), ``"highest tried"``, ``"lowest tried"`` or ``"one rate"``.

    >>> bracket({1e-3: 2.0, 2e-3: 1.9, 4e-3: 1.95}), bracket({1e-3: 2.0, 2e-3: 1.9})
    ('bracketed', 'highest tried')
    """
    best, tried = min(got, key=got.get), sorted(got)
    if len(tried) == 1:
        return "one rate"
    if tried[0] < best < tried[-1]:
        return "bracketed"
    return "highest tried" if best == tried[-1] else "lowest tried"


def window(ls: Sequence[float], k: int = 2) -> range:
    """The positions along one profile that approach 2's parabola sees: the lowest loss of ``ls`` and up to ``k``
    neighbours on each side.

    >>> list(window([2.0, 1.9, 1.8, 1.85, 1.9, 2.0], 1)), list(window([1.5, 1.6, 1.7], 2))
    ([1, 2, 3], [0, 1, 2])
    """
    i = min(range(len(ls)), key=ls.__getitem__)
    return range(max(0, i - k), min(len(ls), i + k + 1))


def window_vertex(ns: Sequence[float], ls: Sequence[float], k: int = 2) -> float | None:
    """Approach 2's vertex over the lowest run of one profile and up to ``k`` neighbours on each side (``ns``,
    ``ls``: sizes and losses along the profile, smallest first); None when the window holds fewer than three
    sizes. Raises ValueError, from :func:`isoflop_minimum`, when the window's parabola has no minimum."""
    if len(ns) != len(ls):
        raise ValueError(f"window_vertex: {len(ns)} sizes but {len(ls)} losses")
    near = window(ls, k)
    if len(near) < 3:  # a parabola needs three sizes
        return None
    return isoflop_minimum([ns[j] for j in near], [ls[j] for j in near])


def vertices(profiles: dict[float, list[dict]], k: int = 2, losses: dict[float, list[float]] | None = None,
             count: str = "non_embedding_params") -> dict[float, float]:
    """Each budget's :func:`window_vertex` along ``profiles[C]`` (runs, smallest first), with the runs' own losses
    or ``losses[C]`` in their place, and N read from the runs' ``count`` field; budgets without one are left out."""
    out = {}
    for C, prof in profiles.items():
        if not all(isinstance(r, dict) for r in prof):
            raise TypeError(f"vertices: profiles[{C:g}] must be a list of runs (dicts); pass losses apart, as "
                            "vertices(profiles, k, losses)")
        ls = losses[C] if losses is not None else [r["val_nats_per_char"] for r in prof]
        v = window_vertex([r[count] for r in prof], ls, k)
        if v is not None:
            out[C] = v
    return out


def exponent(points: dict[float, float]) -> float:
    """The exponent a of a power law y = K C^a through points C -> y (least squares in log-log space)."""
    return power_law(list(points), list(points.values()))[1]


def pooled_sd(groups: Iterable[Sequence[dict]]) -> float:
    """The sd of one run's loss, pooled over groups of runs that differ only in their seed (groups of one are
    skipped)."""
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        raise ValueError("pooled_sd: no group holds two or more runs")
    ss = sum(torch.tensor([r["val_nats_per_char"] for r in g], dtype=torch.float64).var().item() * (len(g) - 1)
             for g in groups)
    return math.sqrt(ss / sum(len(g) - 1 for g in groups))


def replicates(sweep: Sweep) -> tuple[dict[tuple, list[dict]], list[tuple[dict, float]]]:
    """The grid's configurations (budget, layers, width, rate) trained with more than one seed, the held-out
    configuration left out, and the runs that failed to train: a run more than ``FAILED_MARGIN`` nats above the
    lowest of its configuration's seeds is counted apart, as ``(run, lowest)``, not as noise."""
    reps: dict[tuple, list[dict]] = defaultdict(list)
    for r in sweep.runs.values():
        if r["unique_chars"] is None and (r["layers"], r["width"], r["budget"]) not in HELDOUT:
            reps[r["budget"], r["layers"], r["width"], r["lr"]].append(r)
    kept, failed = {}, []
    for key, group in reps.items():
        if len(group) < 2:
            continue
        low = min(r["val_nats_per_char"] for r in group)
        failed += [(r, low) for r in group if r["val_nats_per_char"] > low + FAILED_MARGIN]
        kept[key] = [r for r in group if r["val_nats_per_char"] <= low + FAILED_MARGIN]
    return kept, failed


@dataclass
class SeedSpreads:
    """The sd of one run's loss, measured several ways (nats per character). ``seed_sd``: the data-constrained
    runs at the recipe's rate (one configuration, three seeds at each number of epochs); ``data_tuned``: the same at
    peak rate 1e-2; ``replicates``: the grid's configurations trained with more than one seed, pooled, and split
    into runs under ``SHORT_STEPS`` steps (``short``) and the rest (``long``); ``reps`` and ``failed`` as
    :func:`replicates` gives them."""

    seed_sd: float
    data_tuned: float
    replicates: float
    short: float
    long: float
    reps: dict[tuple, list[dict]]
    failed: list[tuple[dict, float]]

    def by_length(self, run: dict) -> float:
        """The sd for a run of this length: ``short`` under ``SHORT_STEPS`` steps, ``long`` from there on."""
        return self.short if run["steps"] < SHORT_STEPS else self.long


SHORT_STEPS = 1000


def seed_spreads(sweep: Sweep) -> SeedSpreads:
    """The seed noise of one run, from the stored runs that repeat a configuration (see :class:`SeedSpreads`)."""
    def by_unique(rate: float) -> list[list[dict]]:
        groups: dict[int, list[dict]] = defaultdict(list)
        for r in sweep.data_all:
            if r["lr"] == rate:
                groups[r["unique_chars"]].append(r)
        return list(groups.values())

    reps, failed = replicates(sweep)
    return SeedSpreads(
        seed_sd=pooled_sd(by_unique(sweep.lr0)), data_tuned=pooled_sd(by_unique(1e-2)),
        replicates=pooled_sd(reps.values()),
        short=pooled_sd(g for g in reps.values() if g[0]["steps"] < SHORT_STEPS),
        long=pooled_sd(g for g in reps.values() if g[0]["steps"] >= SHORT_STEPS), reps=reps, failed=failed)


NOISE_MODELS = ("data-constrained seeds", "replicates, pooled", "replicates, by run length",
                "the same, each size's best rate chosen again")


def noise_intervals(sweep: Sweep, spreads: SeedSpreads, seed: int = 0, draws: int = 200
                    ) -> dict[str, tuple[tuple[float, float], int]]:
    """Approach 2's :func:`noise_interval` (k = 2) under each noise model of ``NOISE_MODELS``, in that order, from
    one generator seeded with ``seed``: every run at ``spreads.seed_sd``; at ``spreads.replicates``; at the sd of
    its length; and the last again with every rate tried redrawn and each size's best chosen again."""
    gen = torch.Generator().manual_seed(seed)
    models = ((lambda r: spreads.seed_sd, False), (lambda r: spreads.replicates, False),
              (spreads.by_length, False), (spreads.by_length, True))
    return {name: noise_interval(sweep, sd, gen, draws, rechoose)
            for name, (sd, rechoose) in zip(NOISE_MODELS, models, strict=True)}


def noise_interval(sweep: Sweep, sd: Callable[[dict], float], generator: torch.Generator, draws: int = 200,
                   rechoose: bool = False, k: int = 2) -> tuple[tuple[float, float], int]:
    """The middle 90 percent of approach 2's exponent a (window ``k``) over ``draws`` redraws of every tuned grid
    loss r with Gaussian noise of sd ``sd(r)``, and how many redraws kept a vertex at every budget (the others are
    dropped). With ``rechoose``, every rate tried at each size is redrawn and the best chosen again."""
    got = []

    def redrawn(r: dict) -> float:
        tried = sweep.at_rate[r["budget"], r["non_embedding_params"]]
        losses = [v for v in tried.values() if math.isfinite(v)] if rechoose else [r["val_nats_per_char"]]
        return min(loss + sd(r) * torch.randn(1, generator=generator, dtype=torch.float64).item()
                   for loss in losses)

    for _ in range(draws):
        noisy = {C: [redrawn(r) for r in sweep.by_budget[C]] for C in sweep.budgets}
        try:
            v = vertices(sweep.by_budget, k, noisy)
        except ValueError:  # a redrawn profile with no minimum
            continue
        if len(v) == len(sweep.budgets):
            got.append(exponent(v))
    if not got:
        raise ValueError("noise_interval: no redraw kept a vertex at every budget")
    lo, hi = interval(got)
    return (lo, hi), len(got)


def interval(values: Sequence[float]) -> tuple[float, float]:
    """The middle 90 percent (5th and 95th percentiles) of ``values``."""
    q = torch.tensor(list(values), dtype=torch.float64).quantile(torch.tensor([0.05, 0.95], dtype=torch.float64))
    return q[0].item(), q[1].item()


def a_of(law: LossLaw) -> float:
    """The exponent of N*(C) under a law: beta / (alpha + beta)."""
    return law.beta / (law.alpha + law.beta)


def grid_data(runs: Sequence[dict]) -> tuple[list[int], list[float], list[float]]:
    """Grid runs' N (non-embedding parameters), D (characters read) and final losses."""
    return ([r["non_embedding_params"] for r in runs], [r["tokens"] for r in runs],
            [r["val_nats_per_char"] for r in runs])


def grid_law(runs: Sequence[dict]) -> tuple[list[int], list[float], list[float], LossLaw]:
    """Approach 3 on grid runs: their N, D and losses (:func:`grid_data`), and the law fitted to them."""
    N, D, L = grid_data(runs)
    return N, D, L, fit_loss_law(N, D, L)


def stored_refits(sweep: Sweep, law: LossLaw, check: int = 10) -> tuple[dict, list[LossLaw], list[LossLaw]]:
    """The bootstrap refits ``python -m lmcourse scaling bootstrap`` stored (``scaling_bootstrap.json``): the
    table, the single-start refits and the multi-start ones. Checks that they were made from this sweep's tuned grid
    and this law, and recomputes the first ``check`` single-start refits (they must match to 1e-6)."""
    stored = json.loads((CHECKPOINT_DIR / "scaling_bootstrap.json").read_text())
    if stored["runs"] != sorted(r["name"] for r in sweep.grid_runs):
        raise ValueError("stored_refits: the stored refits were made from other runs; run "
                         "`python -m lmcourse scaling bootstrap` again")
    if any(abs(stored["law"][k] / getattr(law, k) - 1) > 1e-6 for k in LAW_KEYS):
        raise ValueError("stored_refits: the stored full fit differs from this law")
    single, multi = ([LossLaw(**{k: f[k] for k in LAW_KEYS}) for f in stored[kind]] for kind in ("single", "multi"))
    if check:
        N, D, L = grid_data(sweep.grid_runs)
        again = bootstrap(N, D, L, law, samples=check, seed=stored["seed"])
        if any(abs(getattr(f, k) / getattr(g, k) - 1) > 1e-6 for f, g in zip(again, single, strict=False)
               for k in ("A", "alpha", "B", "beta")):
            raise ValueError("stored_refits: recomputed refits differ from the stored ones")
    return stored, single, multi


def refit_near(law: LossLaw, N: Sequence[float], D: Sequence[float], L: Sequence[float],
               floor: float | None = None) -> LossLaw:
    """:func:`fit_loss_law` from a few starts around ``law`` (fast: for refits of the grid's law to subsets or
    variants of its runs); with ``floor``, E is held there and the other four are fitted."""
    starts = {"a": (math.log(law.A), math.log(law.A) + 2), "b": (math.log(law.B), math.log(law.B) + 3),
              "alpha": (law.alpha,), "beta": (law.beta,)}
    if floor is None:
        starts["e"] = (math.log(law.E), math.log(0.5))
    return fit_loss_law(N, D, L, starts=starts, floor=floor)


def epoch_groups(runs: Iterable[dict], lr: float) -> dict[float, torch.Tensor]:
    """Data-constrained runs at peak rate ``lr``: epochs -> the seeds' losses (float64), fewest epochs first."""
    got: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        if r["lr"] == lr:
            got[r["epochs"]].append(r["val_nats_per_char"])
    return {e: torch.tensor(v, dtype=torch.float64) for e, v in sorted(got.items())}


def rises(groups: dict[float, torch.Tensor]) -> dict[float, tuple[float, float, float]]:
    """epochs -> (mean loss, mean minus one epoch's mean, two standard errors of that difference), from the seeds
    of each group and of the one-epoch group."""
    if 1.0 not in groups:
        raise ValueError("rises: the groups need a one-epoch group to measure from")
    one = groups[1.0]
    return {e: (v.mean().item(), v.mean().item() - one.mean().item(),
                2 * math.sqrt(v.var().item() / len(v) + one.var().item() / len(one)))
            for e, v in groups.items()}


def predicted_rise(law: LossLaw, n: float, tokens: float, epochs: float, r_star: float) -> float:
    """The law's loss at ``epochs`` minus at one epoch, for a model of ``n`` parameters reading ``tokens`` characters
    at random positions of ``tokens / epochs`` unique ones, with Muennighoff et al.'s effective data (in its
    expectation over Poisson read counts, :func:`~lmcourse.scaling_laws.effective_data_sampled`) in place of D."""
    return (law(n, effective_data_sampled(tokens / epochs, tokens, r_star))
            - law(n, effective_data_sampled(tokens, tokens, r_star)))


R_STAR_GRID = torch.logspace(-1, 2, 301).tolist()


def fit_r_star(law: LossLaw, n: float, tokens: float, means: dict[float, float]) -> float:
    """The R* of ``R_STAR_GRID`` whose :func:`predicted_rise` fits the measured mean rises best (least squares;
    ``means``: epochs -> mean loss, one epoch included)."""
    return min(R_STAR_GRID, key=lambda r: sum((predicted_rise(law, n, tokens, e, r) - (m - means[1.0])) ** 2
                                              for e, m in means.items()))


def r_star_interval(law: LossLaw, n: float, tokens: float, groups: dict[float, torch.Tensor], draws: int = 200,
                    seed: int = 0) -> tuple[float, float]:
    """The middle 90 percent of :func:`fit_r_star` over ``draws`` redraws of each group's mean, from a normal
    distribution around it with the seeds' sd pooled over all the groups (the law held: this is the seeds' share of
    R*'s uncertainty only). Pooling gives the sd more degrees of freedom than three seeds a group would, and a
    parametric redraw does not shrink the spread as resampling three seeds with replacement does (by 2/3)."""
    gen = torch.Generator().manual_seed(seed)
    dof = sum(len(v) - 1 for v in groups.values())
    if dof < 1:
        raise ValueError("r_star_interval: the groups hold no repeated seeds to measure a spread from")
    sd = math.sqrt(sum(v.var().item() * (len(v) - 1) for v in groups.values() if len(v) > 1) / dof)
    fitted = []
    for _ in range(draws):
        means = {e: v.mean().item() + sd / math.sqrt(len(v)) * torch.randn(1, generator=gen, dtype=torch.float64).item()
                 for e, v in groups.items()}
        fitted.append(fit_r_star(law, n, tokens, means))
    return interval(fitted)
