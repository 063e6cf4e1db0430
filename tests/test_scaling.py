"""Chapter 12's sweep: the grid it trains, and that runs are stored one by one and resumed."""

import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lmcourse.experiments.scaling import (
    BUDGETS,
    CENTRE_TOKENS_PER_PARAM,
    DATA_EPOCHS,
    FAMILY,
    GAP_SIZES,
    MIN_STEPS,
    SIZES_PER_BUDGET,
    TOKENS_PER_STEP,
    data_constrained,
    grid,
    load_results,
    main,
    model_config,
    non_embedding_params,
    planned,
    store,
    train_config,
    unique_data,
)
from lmcourse.shipped import CHECKPOINT_DIR
from lmcourse.transformer import GPT


def test_non_embedding_params_leave_out_both_embeddings_and_count_the_rest():
    config = model_config(2, 64)
    model = GPT(config)
    embeddings = {"tok_emb.weight", "pos_emb.table.weight"}
    rest = sum(p.numel() for name, p in model.named_parameters() if name not in embeddings)
    assert non_embedding_params(config) == rest
    assert abs(rest - 12 * 2 * 64**2) / rest < 0.03  # 12 L d^2 plus biases and norms


def test_each_budget_trains_six_sizes_around_its_centre_at_its_compute():
    runs = grid()
    assert {r.budget for r in runs} == set(BUDGETS)
    for budget in BUDGETS:
        mine = [r for r in runs if r.budget == budget]
        assert len(mine) == SIZES_PER_BUDGET and all(r.steps >= MIN_STEPS for r in mine)
        ratios = []
        for r in mine:
            n = non_embedding_params(model_config(r.layers, r.width))
            assert math.isclose(6 * n * r.tokens, budget, rel_tol=0.01)  # C = 6 N D, to the step
            ratios.append(r.tokens / n)
        assert min(ratios) < CENTRE_TOKENS_PER_PARAM < max(ratios)  # the profile brackets the optimum
    assert len({r.name for r in runs}) == len(runs)
    assert all((r.layers, r.width) in FAMILY for r in runs)


def test_the_gap_sizes_fill_13k_to_57k_at_both_depths_and_only_when_named():
    sizes = {lw: non_embedding_params(model_config(*lw)) for lw in GAP_SIZES}
    assert all(12_768 < n < 56_640 for n in sizes.values())  # between the family's 1x32 and 2x48
    assert {layers for layers, _ in GAP_SIZES} == {1, 2} and not set(GAP_SIZES) & set(FAMILY)
    assert not any((r.layers, r.width) in GAP_SIZES for r in grid())  # never among a budget's six
    named = planned("python -m lmcourse scaling grid --budgets 1e12 --sizes 2x32,1x64 --lr 0.02")
    assert [(r.layers, r.width, r.lr) for r in named] == [(2, 32, 0.02), (1, 64, 0.02)]  # by size
    assert all(math.isclose(6 * sizes[r.layers, r.width] * r.tokens, 1e12, rel_tol=0.01) for r in named)


def test_data_constrained_runs_spend_equal_compute_on_fewer_unique_characters():
    runs = data_constrained()
    assert len({(r.steps, r.budget, r.layers, r.width) for r in runs}) == 1
    assert [round(r.tokens / r.unique_chars) for r in runs] == list(DATA_EPOCHS)
    tuned = planned("python -m lmcourse scaling data --seeds 3 --lr 0.01")
    assert [(r.unique_chars, r.seed) for r in tuned] == [(r.unique_chars, s) for r in runs for s in range(3)]
    assert all(r.lr == 0.01 and r.name.endswith("-lr0.01") for r in tuned)
    assert not {r.name for r in tuned} & {r.name for r in data_constrained(3)}  # stored beside the recipe's


def test_spread_runs_draw_their_unique_characters_from_all_the_plays():
    spread = planned("python -m lmcourse scaling data --seeds 3 --lr 0.01 --spread")
    first = planned("python -m lmcourse scaling data --seeds 3 --lr 0.01")
    assert [(r.unique_chars, r.seed) for r in spread] == [(r.unique_chars, r.seed) for r in first
                                                          if r.tokens // r.unique_chars > 1]  # 2 to 16 epochs
    assert all(r.name.endswith("-spread-s%d-lr0.01" % r.seed) for r in spread)
    ids = torch.arange(4_300_000)
    run = spread[-1]  # 16 epochs, seed 2
    got = unique_data(run, ids)
    assert len(got) == run.unique_chars == len(set(got.tolist()))  # no character twice
    assert torch.equal(unique_data(run, ids), got)  # the same draw every time
    assert got.min() < len(ids) / 8 and got.max() > 7 * len(ids) / 8  # from all over the plays
    assert not torch.equal(unique_data(spread[-2], ids), got)  # another seed, other blocks
    assert torch.equal(unique_data(first[-1], ids), ids[:first[-1].unique_chars])  # the first characters
    with pytest.raises(SystemExit):
        planned("python -m lmcourse scaling grid --spread")  # the data part's option only


def test_a_smaller_batch_reads_the_same_characters_in_more_steps():
    full = planned("python -m lmcourse scaling grid --budgets 1e12 --lr 0.01")
    half = planned("python -m lmcourse scaling grid --budgets 1e12 --lr 0.01 --batch 16")
    assert [(r.layers, r.width) for r in half] == [(r.layers, r.width) for r in full]  # the same sizes
    assert all(h.name == f.name + "-b16" and abs(h.steps - 2 * f.steps) <= 1 and abs(h.tokens / f.tokens - 1) < 0.01
               for h, f in zip(half, full, strict=True))
    assert train_config(half[0]).batch_size == 16 and train_config(full[0]).batch_size == 32
    with pytest.raises(SystemExit):
        planned("python -m lmcourse scaling data --batch 16")  # the grid's option only


def test_the_schedule_ends_with_the_run():
    run = grid()[0]
    config = train_config(run)
    assert config.steps == run.steps and 0 < config.warmup_steps <= max(1, run.steps // 20)
    assert run.tokens == run.steps * TOKENS_PER_STEP


def test_runs_are_stored_one_by_one_by_several_writers(tmp_path):
    path = tmp_path / "scaling.json"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: store(path, {"name": f"run{i}", "val_nats_per_char": i}, "cmd"), range(8)))
    table = load_results(path)
    assert sorted(table["runs"]) == [f"run{i}" for i in range(8)] and table["command"] == "cmd"


@pytest.mark.slow  # trains the smallest model for 111 steps
def test_the_command_trains_what_is_missing_and_skips_what_is_stored(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    assert main(["grid", "--budgets", "9e9", "--out", str(out)]) == 0  # only the smallest model fits
    runs = load_results(out)["runs"]
    (name, run), = runs.items()
    assert name == "C9e+09-L1-d16-s0" and run["steps"] >= MIN_STEPS
    assert run["history"]["val_loss"][-1] < run["history"]["val_loss"][0]  # it trained
    assert math.log(75) > run["val_nats_per_char"] > 1.0
    assert load_results(out)["command"] == "python -m lmcourse scaling grid --budgets 9e9"
    before = out.read_text()
    capsys.readouterr()
    assert main(["grid", "--budgets", "9e9", "--out", str(out)]) == 0
    assert out.read_text() == before and capsys.readouterr().out == ""  # nothing trained again
    json.loads(before)


def test_bad_arguments_are_refused_with_a_message(capsys):
    for argv in (["--shard", "2/2"], ["--budgets", "lots"], ["--seeds", "0"], ["grid", "--sizes", "3x95"],
                 ["data", "--sizes", "3x96"], ["grid", "--sizes", "big"], ["grid", "--sizes", "9x64"],
                 ["grid", "--table", "../elsewhere"], ["bootstrap", "--table", "depth2"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert "--shard" in capsys.readouterr().err


def test_shapes_outside_the_family_go_to_their_own_table(tmp_path, monkeypatch, capsys):
    import lmcourse.experiments.scaling as scaling

    runs = planned("python -m lmcourse scaling grid --budgets 1e13 --sizes 2x80,2x96 --lr 0.01 --table depth2")
    assert [r.name for r in runs] == ["C1e+13-L2-d80-s0-lr0.01", "C1e+13-L2-d96-s0-lr0.01"]
    assert all(math.isclose(6 * non_embedding_params(model_config(2, r.width)) * r.tokens, 1e13, rel_tol=0.01)
               for r in runs)
    monkeypatch.setattr(scaling, "CHECKPOINT_DIR", tmp_path)  # --list reads the table --table names, and no other
    monkeypatch.setattr(scaling, "load_results", lambda path: {"runs": {"C1e+13-L2-d80-s0-lr0.01": {
        "val_nats_per_char": 1.6}}} if path == tmp_path / "scaling_depth2.json" else {"runs": {}})
    assert scaling.main(["grid", "--budgets", "1e13", "--sizes", "2x80", "--lr", "0.01", "--table", "depth2",
                         "--list"]) == 0
    assert "C1e+13-L2-d80-s0-lr0.01" in capsys.readouterr().out.split("1.6000")[0]  # stored there


def test_other_learning_rates_get_their_own_names_and_schedules():
    from lmcourse.experiments.scaling import BASE_TRAIN, grid, train_config

    default, other = grid((1e12,))[0], grid((1e12,), lr=5e-3)[0]
    assert default.name == "C1e+12-L1-d16-s0"  # the stored names are unchanged
    assert other.name == "C1e+12-L1-d16-s0-lr0.005" and other.steps == default.steps
    assert train_config(default).lr == BASE_TRAIN.lr and train_config(default).min_lr == BASE_TRAIN.min_lr
    assert (train_config(other).lr, train_config(other).min_lr) == (5e-3, 5e-4)


def test_held_out_runs_at_any_rate_stay_out_of_the_grid():
    from lmcourse.experiments.scaling import grid_results, heldout

    default, tuned = heldout()[0], heldout(lr=1e-2)[0]
    assert default.name == "C1e+14-L5-d144-s0"  # the stored name is unchanged
    assert tuned.name == "C1e+14-L5-d144-s0-lr0.01" and tuned.steps == default.steps
    assert [r.name for r in planned("python -m lmcourse scaling heldout --lr 0.01")] == [tuned.name]

    def row(run, loss):
        return {"name": run.name, "layers": run.layers, "width": run.width, "budget": run.budget,
                "unique_chars": None, "seed": 0, "lr": run.lr, "non_embedding_params": 1, "val_nats_per_char": loss}

    table = {"runs": {r.name: row(r, loss) for r, loss in ((default, 1.5), (tuned, 1.4), (grid((1e12,))[0], 2.0))}}
    assert [r["name"] for r in grid_results(table)] == ["C1e+12-L1-d16-s0"]  # no fit sees them


def test_every_stored_run_keeps_a_command_that_plans_it():
    from lmcourse.experiments.scaling import planned

    runs = load_results()["runs"]
    assert runs, "no stored sweep"
    half = load_results(CHECKPOINT_DIR / "scaling_batch16.json")["runs"]  # chapter 12's half-batch profile
    assert half and all(r["train"]["batch_size"] == 16 for r in half.values())
    deep = load_results(CHECKPOINT_DIR / "scaling_depth2.json")["runs"]  # the companion's one-depth family
    assert deep and all(r["layers"] == 2 and "--table depth2" in r["command"] for r in deep.values())
    for name, run in {**runs, **half, **deep}.items():
        assert name in {r.name for r in planned(run["command"])}, f"{run['command']!r} does not train {name}"
    assert [r.name for r in planned("python -m lmcourse scaling data --seeds 3")][-1] == "C6e+12-L3-d80-U250112-s2"
    with pytest.raises(ValueError, match="not a command"):
        planned("python train.py")


@pytest.mark.slow
def test_a_stored_run_is_reproduced_by_its_command(tmp_path):
    """The cheapest-to-check stored run (121 steps, about 30 s on one core), retrained from its command."""
    from lmcourse.experiments.scaling import planned

    stored = load_results()["runs"]["C1e+12-L3-d96-s0"]
    out = tmp_path / "scaling.json"
    assert main(stored["command"].split()[4:] + ["--out", str(out)]) == 0
    again = load_results(out)["runs"]["C1e+12-L3-d96-s0"]
    assert [r.name for r in planned(stored["command"])] == ["C1e+12-L3-d96-s0"]
    assert again["val_nats_per_char"] == stored["val_nats_per_char"]
    assert again["history"]["val_loss"] == stored["history"]["val_loss"]


def test_train_one_refuses_what_it_cannot_train_with_a_message():
    from lmcourse.experiments.scaling import train_one

    with pytest.raises(ValueError, match="fewer than 100; raise the budget to at least"):
        train_one(1, 24, 1e9, 1e-2)
    with pytest.raises(ValueError, match="multiple of 8"):
        train_one(1, 20, 1e11, 1e-2)
    with pytest.raises(ValueError, match="positive numbers"):
        train_one(1, 24, 1e11, float("nan"))
