"""Duplicates, MinHash and LSH against exact counts, the binomial error and a brute-force S-curve."""

import math

import numpy as np
import pytest

from lmcourse.dedup import (
    dirty_examples,
    drop_duplicate_blocks,
    duplicated_window_mask,
    jaccard,
    lsh_candidates,
    lsh_probability,
    minhash_jaccard,
    minhash_params,
    minhash_signature,
    near_duplicates,
    repeated_lines,
    shingles,
    window_hashes,
    word_ngrams,
    words,
)


def brute_mask(text: str, width: int, reference: str | None = None) -> list[bool]:
    windows = [text[i:i + width] for i in range(len(text) - width + 1)]
    pool = set(reference[i:i + width] for i in range(len(reference) - width + 1)) if reference is not None else None
    mask = [False] * len(text)
    for i, w in enumerate(windows):
        hit = w in pool if pool is not None else windows.count(w) > 1
        if hit:
            for j in range(i, i + width):
                mask[j] = True
    return mask


def random_text(n: int, seed: int, alphabet: str = "ab") -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(alphabet), n))


def test_window_hashes_equal_exactly_for_equal_windows():
    text = random_text(400, 0, "abc")
    h = window_hashes(text, 6)
    windows = [text[i:i + 6] for i in range(len(text) - 5)]
    for i in range(0, len(windows), 7):
        for j in range(len(windows)):
            assert (h[i] == h[j]) == (windows[i] == windows[j])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duplicated_window_mask_matches_brute_force(seed):
    text, ref = random_text(300, seed), random_text(200, seed + 10)
    assert duplicated_window_mask(text, 7).tolist() == brute_mask(text, 7)
    assert duplicated_window_mask(text, 7, reference=ref).tolist() == brute_mask(text, 7, ref)


def test_repeated_lines_and_block_dedup():
    text = "A:\nHi.\n\nB:\nHo.\n\nA:\nHi.\n\nA:\nHo.\n\n"
    assert repeated_lines(text) == {"A:": 3, "Hi.": 2, "Ho.": 2}
    deduped, dropped = drop_duplicate_blocks(text)
    assert dropped == 1 and deduped == "A:\nHi.\n\nB:\nHo.\n\nA:\nHo.\n\n"
    with pytest.raises(ValueError, match="min_chars"):
        repeated_lines(text, 0)


def test_jaccard_by_hand():
    assert jaccard(shingles("abcd", 2), shingles("bcde", 2)) == pytest.approx(2 / 4)  # {bc, cd} of 4
    assert jaccard(set(), set()) == 0.0


def pair_with_jaccard(j_target: float, size: int, seed: int):
    """Two integer sets of ``size`` elements each with Jaccard close to j_target."""
    shared = round(2 * size * j_target / (1 + j_target))
    rng = np.random.default_rng(seed)
    pool = rng.choice(10**9, 2 * size, replace=False)
    a = pool[:size]
    b = np.concatenate([a[:shared], pool[size:2 * size - shared]])
    return a, b


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8])
def test_minhash_estimate_is_within_its_standard_error(target):
    a, b = pair_with_jaccard(target, 400, 0)
    j = jaccard(a, b)
    k = 256
    errors = []
    for seed in range(40):  # 40 independent families of hash functions
        p = minhash_params(k, seed)
        errors.append(minhash_jaccard(minhash_signature(a, p), minhash_signature(b, p)) - j)
    se = math.sqrt(j * (1 - j) / k)
    assert abs(np.mean(errors)) < 3 * se / math.sqrt(40)  # unbiased
    assert 0.7 * se < np.std(errors) < 1.3 * se  # and its spread is the binomial one


def test_minhash_agrees_with_datasketch():
    datasketch = pytest.importorskip("datasketch")
    text_a = "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day"
    text_b = "Tomorrow, and tomorrow, and tomorrow, creeps in this pace from day to day to the last"
    sa, sb = shingles(text_a, 5), shingles(text_b, 5)
    j = jaccard(sa, sb)
    k = 512
    p = minhash_params(k, 1)
    ours = minhash_jaccard(minhash_signature(sa, p), minhash_signature(sb, p))
    ma, mb = datasketch.MinHash(num_perm=k, seed=1), datasketch.MinHash(num_perm=k, seed=1)
    for i in range(len(text_a) - 4):
        ma.update(text_a[i:i + 5].encode())
    for i in range(len(text_b) - 4):
        mb.update(text_b[i:i + 5].encode())
    theirs = ma.jaccard(mb)
    se = math.sqrt(j * (1 - j) / k)
    assert abs(ours - j) < 4 * se and abs(theirs - j) < 4 * se and abs(ours - theirs) < 5 * se


def test_lsh_candidate_rate_follows_the_s_curve():
    bands, rows, trials = 8, 4, 300
    for target in (0.4, 0.6, 0.8):
        a, b = pair_with_jaccard(target, 200, 3)
        s = jaccard(a, b)
        hits = 0
        for seed in range(trials):
            p = minhash_params(bands * rows, 100 + seed)
            sigs = np.stack([minhash_signature(a, p), minhash_signature(b, p)])
            hits += (0, 1) in lsh_candidates(sigs, bands, rows)
        expected = lsh_probability(s, bands, rows)
        assert abs(hits / trials - expected) < 4 * math.sqrt(expected * (1 - expected) / trials) + 0.01


def test_near_duplicates_finds_a_planted_pair():
    rng = np.random.default_rng(0)
    docs = ["".join(rng.choice(list("abcdefgh "), 200)) for _ in range(30)]
    docs.append(docs[3][:190] + "zzzzzzzzzz")  # a near copy of doc 3
    found = near_duplicates(docs, threshold=0.5)
    assert [(i, j) for i, j, _ in found] == [(3, 30)]
    assert found[0][2] == pytest.approx(jaccard(shingles(docs[3]), shingles(docs[30])), abs=1e-3)
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates(docs, threshold=0)


def test_lsh_probability_by_hand_and_bad_input():
    assert lsh_probability(0.5, bands=1, rows=1) == 0.5
    assert lsh_probability(0.5, bands=2, rows=2) == pytest.approx(1 - 0.75**2)
    with pytest.raises(ValueError):
        lsh_probability(1.5, 2, 2)
    with pytest.raises(ValueError, match="bands \\* rows"):
        lsh_candidates(np.zeros((3, 10), dtype=np.int64), bands=3, rows=4)


def test_dirty_examples_follows_the_13_gram_rule():
    train = " ".join(f"w{i}" for i in range(100))
    clean = " ".join(f"w{i}" for i in range(0, 24, 2))  # no two consecutive training words
    dirty = "new words " + " ".join(f"w{i}" for i in range(50, 63)) + " end"  # 13 in a row
    short = " ".join(f"w{i}" for i in range(12))  # 12 words: no 13-gram at all
    assert dirty_examples([clean, dirty, short], train, n=13) == [False, True, False]
    assert words("O, Romeo!") == ["o", "romeo"]
    assert len(word_ngrams(["a", "b", "c"], 2)) == 2
