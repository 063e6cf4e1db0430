"""Duplicates in a corpus: exact repeats, near repeats (MinHash + LSH) and n-gram overlap between splits.

**Exact duplicates.** :func:`repeated_lines` counts the lines that occur more than once;
:func:`window_hashes` gives every ``width``-character window a 62-bit polynomial hash (two
rolling hashes modulo ``2^31 - 1``, computed in numpy), so :func:`duplicated_window_mask`
marks the characters covered by a window that occurs elsewhere: the measure of Lee et al.
(2022, "Deduplicating Training Data Makes Language Models Better"), who remove repeated
substrings of 50 tokens or more (they find them with a suffix array; a hash of every window
finds the same windows, for one fixed width).

**Near duplicates** (Broder 1997, "On the resemblance and containment of documents").
Two documents, as sets of character ``k``-shingles, have Jaccard similarity
``J = |A & B| / |A | B|``. For a random hash ``h``, ``P[min h(A) == min h(B)] = J``, so the
share of ``k`` hash functions whose minima agree estimates ``J`` with standard error
``sqrt(J (1 - J) / k)`` (:func:`minhash_signature`, :func:`minhash_jaccard`). LSH banding
cuts the signature into ``b`` bands of ``r`` rows; two documents become candidates when
any band agrees, with probability ``1 - (1 - J^r)^b`` (:func:`lsh_probability`), and the
candidates are checked with the exact Jaccard (:func:`near_duplicates`).

**Contamination** (Brown et al. 2020, GPT-3, appendix C): a held-out example is *dirty*
when any of its ``n``-grams of words (lower case, punctuation dropped) occurs in the
training text (:func:`dirty_examples`; GPT-3 used n = 13 at most).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

PRIME = 2**31 - 1  # a Mersenne prime: hashes and MinHash permutations work modulo it
_BASES = (257, 1_000_003)  # the two rolling hashes' bases
_WORD = re.compile(r"[a-z0-9']+")


def split_blocks(text: str) -> list[str]:
    """The speeches of a text in the plays' layout (``SPEAKER:\\nline\\n...``), blank-line separated.

    >>> split_blocks("A:\\nHi.\\n\\nB:\\nHo.\\n\\n")
    ['A:\\nHi.\\n', 'B:\\nHo.\\n']
    """
    return [b + "\n" for b in text.split("\n\n") if b.strip()]


def join_blocks(blocks: Sequence[str]) -> str:
    """The inverse of :func:`split_blocks`: each speech followed by a blank line."""
    return "".join(b.rstrip("\n") + "\n\n" for b in blocks)


def drop_duplicate_blocks(text: str) -> tuple[str, int]:
    """Keep the first copy of every speech (exact match, speaker included); return the text and how many were dropped.

    >>> drop_duplicate_blocks("A:\\nHi.\\n\\nB:\\nHo.\\n\\nA:\\nHi.\\n\\n")
    ('A:\\nHi.\\n\\nB:\\nHo.\\n\\n', 1)
    """
    seen: set[str] = set()
    kept = []
    for block in split_blocks(text):
        if block not in seen:
            seen.add(block)
            kept.append(block)
    return join_blocks(kept), len(split_blocks(text)) - len(kept)


def repeated_lines(text: str, min_chars: int = 1) -> Counter:
    """Lines of at least ``min_chars`` characters that occur more than once, with their counts.

    >>> repeated_lines("A:\\nHi.\\nA:\\nHo.\\n")
    Counter({'A:': 2})
    """
    if min_chars < 1:
        raise ValueError(f"min_chars must be >= 1, got {min_chars}")
    counts = Counter(line for line in text.split("\n") if len(line) >= min_chars)
    return Counter({line: c for line, c in counts.items() if c > 1})


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def window_hashes(text: str, width: int) -> np.ndarray:
    """A 62-bit hash of every ``width``-character window: ``len(text) - width + 1`` int64s.

    Each half is the polynomial ``sum_j c[i+j] B^(width-1-j) mod (2^31 - 1)`` for one base B;
    equal windows get equal hashes, different ones collide with probability about 2^-62.

    >>> h = window_hashes("abcabc", 3)
    >>> len(h), bool(h[0] == h[3]), bool(h[0] == h[1])
    (4, True, False)
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    c = _codes(text)
    n = len(c) - width + 1
    if n < 1:
        return np.zeros(0, dtype=np.int64)
    halves = []
    for base in _BASES:
        h = np.zeros(n, dtype=np.int64)
        for j in range(width):  # Horner's rule over the window, every window at once
            h = (h * base + c[j:j + n]) % PRIME
        halves.append(h)
    return (halves[0] << 31) | halves[1]


def duplicated_window_mask(text: str, width: int = 50, reference: str | None = None) -> np.ndarray:
    """Boolean mask over ``text``'s characters: True where a ``width``-character window covering it
    occurs more than once in ``text`` (``reference=None``) or occurs in ``reference``.

    >>> duplicated_window_mask("xabcyabcz", 3).astype(int).tolist()
    [0, 1, 1, 1, 0, 1, 1, 1, 0]
    """
    h = window_hashes(text, width)
    mask = np.zeros(len(text), dtype=bool)
    if len(h) == 0:
        return mask
    if reference is None:
        _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
        hit = counts[inverse] > 1
    else:
        hit = np.isin(h, window_hashes(reference, width))
    # a window starting at i covers characters i .. i + width - 1: spread each hit over its span
    starts = np.flatnonzero(hit)
    cover = np.bincount(starts, minlength=len(text) + 1) - np.bincount(starts + width, minlength=len(text) + 1)
    return np.cumsum(cover[:-1]) > 0


def shingles(text: str, k: int = 5) -> np.ndarray:
    """The distinct ``k``-character shingles of ``text``, as sorted hashes below 2^31 - 1.

    >>> len(shingles("abcabc", 3))  # abc, bca, cab
    3
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return np.unique(window_hashes(text, k) % PRIME)


def jaccard(a: np.ndarray | set, b: np.ndarray | set) -> float:
    """Exact Jaccard similarity ``|A & B| / |A | B|`` of two sets (0 for two empty sets).

    >>> jaccard({1, 2, 3}, {2, 3, 4})
    0.5
    """
    a, b = set(np.asarray(list(a)).tolist()), set(np.asarray(list(b)).tolist())
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def minhash_params(num_hashes: int, seed: int = 0) -> np.ndarray:
    """``num_hashes`` random pairs (a, b), 1 <= a < p, 0 <= b < p: the permutations ``h(x) = (a x + b) mod p``."""
    if num_hashes < 1:
        raise ValueError(f"num_hashes must be >= 1, got {num_hashes}")
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(1, PRIME, num_hashes), rng.integers(0, PRIME, num_hashes)], axis=1)


def minhash_signature(shingle_hashes: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The MinHash signature: for each (a, b) of ``params`` the minimum of ``(a x + b) mod p`` over the set.

    >>> p = minhash_params(4)
    >>> bool((minhash_signature(shingles("hello world"), p) == minhash_signature(shingles("hello world"), p)).all())
    True
    """
    x = np.asarray(shingle_hashes, dtype=np.int64) % PRIME
    if x.size == 0:
        raise ValueError("cannot sign an empty set: the text is shorter than the shingle length")
    a, b = params[:, :1], params[:, 1:]
    return ((a * x[None, :] + b) % PRIME).min(axis=1)  # (num_hashes,)  a x < 2^62 fits int64


def minhash_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The MinHash estimate of Jaccard similarity: the share of positions where two signatures agree."""
    if sig_a.shape != sig_b.shape:
        raise ValueError(f"signatures differ in shape: {sig_a.shape} vs {sig_b.shape}")
    return float((sig_a == sig_b).mean())


def lsh_probability(s: float, bands: int, rows: int) -> float:
    """Probability that two sets of Jaccard ``s`` share at least one of ``bands`` bands of ``rows`` rows.

    >>> round(lsh_probability(0.8, bands=20, rows=5), 4)
    0.9996
    """
    if not 0 <= s <= 1 or bands < 1 or rows < 1:
        raise ValueError(f"need 0 <= s <= 1 and bands, rows >= 1; got s={s}, bands={bands}, rows={rows}")
    return 1 - (1 - s**rows) ** bands


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of rows of ``signatures`` (N, bands * rows) that agree on a whole band."""
    if signatures.ndim != 2 or signatures.shape[1] != bands * rows:
        raise ValueError(f"signatures must be (N, bands * rows) = (N, {bands * rows}), got {signatures.shape}")
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, key in enumerate(signatures[:, band * rows:(band + 1) * rows]):
            buckets.setdefault(key.tobytes(), []).append(i)
        for members in buckets.values():
            pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
    return pairs


def near_duplicates(docs: Sequence[str], threshold: float = 0.5, k: int = 5, bands: int = 20, rows: int = 5,
                    seed: int = 0) -> list[tuple[int, int, float]]:
    """Pairs of documents with exact shingle Jaccard >= ``threshold``, found among LSH candidates.

    Returns ``(i, j, jaccard)`` sorted by decreasing similarity. Pairs LSH misses are not
    returned (the S-curve :func:`lsh_probability` says how often that happens).

    >>> near_duplicates(["to be or not to be", "to be or not to be!", "something else"])
    [(0, 1, 0.929)]
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    sets = [shingles(d, k) for d in docs]
    if any(len(s) == 0 for s in sets):
        raise ValueError(f"every document needs at least k = {k} characters")
    params = minhash_params(bands * rows, seed)
    sigs = np.stack([minhash_signature(s, params) for s in sets])  # (N, bands * rows)
    found = []
    for i, j in sorted(lsh_candidates(sigs, bands, rows)):
        sim = jaccard(sets[i], sets[j])
        if sim >= threshold:
            found.append((i, j, round(sim, 3)))
    return sorted(found, key=lambda t: (-t[2], t[0], t[1]))


def words(text: str) -> list[str]:
    """Words for the overlap test: lower case, punctuation dropped (apostrophes kept).

    >>> words("Fair is foul, and FOUL is fair!")
    ['fair', 'is', 'foul', 'and', 'foul', 'is', 'fair']
    """
    return _WORD.findall(text.lower())


def word_ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """The set of ``n``-grams of a list of words."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def dirty_examples(examples: Sequence[str], training_text: str, n: int = 13) -> list[bool]:
    """For each held-out example, whether any of its word ``n``-grams occurs in the training text.

    An example with fewer than ``n`` words has no ``n``-gram and counts as clean.

    >>> dirty_examples(["so foul and fair a day", "a new line here"], "so foul and fair a day I have not seen", n=4)
    [True, False]
    """
    train = word_ngrams(words(training_text), n)
    return [not word_ngrams(words(e), n).isdisjoint(train) for e in examples]
