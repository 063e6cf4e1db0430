"""Chapter 7's same-play control: the heads and tails of the plays, one seed's run, the command."""

import json

import pytest

from lmcourse.data import VAL_PLAYS, load_play, play_heads_and_tails, split_plays
from lmcourse.experiments.heldout import HELDOUT_FILE, TRAIN, load_results, main, run_seed
from lmcourse.train import TrainConfig
from lmcourse.transformer import GPTConfig


def test_heads_and_tails_cut_every_play_at_the_fraction():
    heads, tails = play_heads_and_tails(0.9)
    plays = [load_play(name) for name in split_plays("train")]
    assert heads == "\n".join(p[: int(0.9 * len(p))] for p in plays)
    assert tails == "\n".join(p[int(0.9 * len(p)):] for p in plays)
    # nothing lost, nothing repeated: the plays are the heads and tails glued back
    assert len(heads) + len(tails) == sum(map(len, plays)) + 2 * (len(plays) - 1)
    val_heads, _ = play_heads_and_tails(0.5, split="val")
    assert val_heads.startswith(load_play(VAL_PLAYS[0])[:100])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_heads_and_tails_refuse_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        play_heads_and_tails(fraction)


def test_one_seed_scores_the_tails_and_every_held_out_play():
    tiny = GPTConfig(vocab_size=75, context_length=16, d_model=16, n_layers=1, n_heads=2)
    train = TrainConfig(steps=3, batch_size=4, context_length=16, warmup_steps=1, eval_every=3, eval_batches=1)
    said = []
    run = run_seed(1, train, tiny, eval_chars=300, say=said.append)
    assert run["seed"] == 1 and set(run["heldout_plays"]) == set(VAL_PLAYS)
    # three steps from uniform (ln 75 = 4.32): every score is still about uniform
    assert all(3.5 < v < 4.6 for v in [run["tails"], run["heldout"], *run["heldout_plays"].values()])
    assert said and said[0].startswith("  seed 1 step 0")
    with pytest.raises(ValueError, match="eval_chars"):
        run_seed(0, train, tiny, eval_chars=1)


def test_stored_control_is_the_code_s_recipe():
    stored = load_results()
    assert stored["command"] == "python -m lmcourse heldout --seeds 3"
    assert stored["train"] == json.loads(json.dumps(TRAIN.__dict__))
    assert [r["seed"] for r in stored["runs"]] == [0, 1, 2]
    for r in stored["runs"]:  # trained: well below uniform, and the new plays cost more than the tails
        assert r["tails"] < r["heldout"] < 2.0 and set(r["heldout_plays"]) == set(VAL_PLAYS)


def test_missing_results_and_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m lmcourse heldout"):
        load_results(tmp_path / "none.json")
    for bad in (["--seeds", "0"], ["--steps", "1"]):
        with pytest.raises(SystemExit):
            main([*bad, "--out", str(tmp_path / "x.json")])
    assert HELDOUT_FILE.name == "heldout.json"
