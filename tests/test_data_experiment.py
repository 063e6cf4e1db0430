"""Chapter 13's stored runs: the canaries, the texts and the stored file agree with the code."""

from lmcourse.data import load_shakespeare
from lmcourse.experiments.data import (
    PER_LEVEL,
    REPEATS,
    Run,
    load_results,
    make_canaries,
    plan,
    quality_filter,
    training_text,
)


def test_canaries_are_distinct_and_natural_lines_come_from_the_test_plays():
    canaries = make_canaries(0)
    assert len(canaries) == 2 * PER_LEVEL * len(REPEATS)
    assert len({c["prefix"].split(":")[0] for c in canaries}) == len(canaries)  # one speaker each
    test_text, train_text = load_shakespeare("test"), load_shakespeare("train")
    for c in canaries:
        if c["kind"] == "natural":
            line = c["prefix"].split("\n", 1)[1] + c["secret"]
            assert line in test_text and line not in train_text
        else:
            assert c["secret"].isdigit() and len(c["secret"]) == 9
    assert make_canaries(0) == canaries and make_canaries(1) != canaries


def test_dedup_keeps_one_copy_of_each_canary_and_raw_keeps_them_all():
    raw, canaries = training_text(Run("canaries", "raw", 0))
    dedup, _ = training_text(Run("canaries", "dedup", 0))
    for c in canaries:
        assert raw.count(c["block"]) == c["repeats"]
        assert dedup.count(c["block"]) == min(c["repeats"], 1)


def test_quality_filter_drops_short_speeches_only():
    text = "A:\nAy.\n\nB:\nSo foul and fair a day.\n\nC:\nMy lord?\n\n"
    assert quality_filter(text) == "B:\nSo foul and fair a day.\n\n"


def test_stored_runs_are_runs_of_the_plan():
    runs = load_results()["runs"]
    names = {r.name for r in plan()}
    assert set(runs) <= names
    for name, r in runs.items():
        assert r["command"].startswith("python -m lmcourse data"), name
        assert r["name"] == name
