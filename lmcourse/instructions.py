"""Instruction tuning data built from the plays by code: a chat template, loss masking, exact match.

Three tasks, each a question about a piece of a play with one right answer:

* ``speaker``: two speeches (speaker and the start of the first line) -> who speaks next;
* ``lastword``: a line of verse without its last word -> that word;
* ``form``: 24 characters of a line -> ``verse`` or ``prose`` (:func:`lmcourse.finetune.speech_label`).

Examples from the training plays train, those from the validation plays evaluate:
whole plays are held out, so no test passage was seen in training.

**The chat template.** The character tokenizer has no spare ids, so the markers are
short sequences of characters the plays never hold: ``$`` appears once in the
4.3M training characters and never before a letter, so ``$u``, ``$b`` and ``$e`` are
free to mean "user", "bot" and "end"::

    $u
    Who next?
    ...
    $b
    HAMLET$e

The model learns to write ``$e`` after an answer, which is where decoding stops.

**Loss masking.** :func:`encode_examples` sets the target of every prompt token to
``IGNORE_INDEX``, so the SFT loss (objective ``"sft"`` of :mod:`lmcourse.objectives`)
is the NLL of the response and its end marker only.

**Exact match.** Greedy decoding writes the answer exactly iff at every response
position (the end marker included) the argmax of the logits, fed the right prefix, is
the right token; :func:`exact_match` checks that in one batched forward pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from .data import load_play, split_plays
from .device import eval_mode
from .finetune import _speeches, speech_label
from .mlm import IGNORE_INDEX

USER, BOT, END = "$u\n", "$b\n", "$e"
TASKS = ("speaker", "lastword", "form")
QUESTIONS = {"speaker": "Who next?", "lastword": "Last word?", "form": "Verse or prose?"}
PAD_ID = 0  # the input id of padding (its target is IGNORE_INDEX, so it never counts)


@dataclass(frozen=True)
class Example:
    """One instruction: its task, the text after the question, and the answer."""

    task: str
    context: str
    answer: str

    @property
    def prompt(self) -> str:
        """The user's message: the question, then the context."""
        return f"{QUESTIONS[self.task]}\n{self.context}"


def chat(prompt: str, response: str | None = None) -> str:
    """The chat template; without ``response`` the text a model continues.

    >>> chat("Who next?", "HAMLET")
    '$u\\nWho next?\\n$b\\nHAMLET$e'
    >>> chat("Who next?")
    '$u\\nWho next?\\n$b\\n'
    """
    head = f"{USER}{prompt}\n{BOT}"
    return head if response is None else f"{head}{response}{END}"


def _heading(block: str) -> tuple[str, str] | None:
    lines = block.split("\n")
    if len(lines) < 2 or not lines[0].endswith(":"):
        return None
    return lines[0][:-1], lines[1]


def play_examples(text: str) -> list[Example]:
    """Every example of the three tasks that one play's text gives, in order.

    >>> text = "A:\\nGood morrow, sir, and welcome home to Rome\\n\\nB:\\nFie\\n\\nA:\\nGo"
    >>> [(e.task, e.answer) for e in play_examples(text)]
    [('speaker', 'A'), ('lastword', 'Rome')]
    """
    out: list[Example] = []
    speeches = [s for s in (_heading(b) for b in text.split("\n\n")) if s is not None]
    for (h1, l1), (h2, l2), (h3, _) in zip(speeches, speeches[1:], speeches[2:], strict=False):
        if max(len(h1), len(h2), len(h3)) <= 10:
            out.append(Example("speaker", f"{h1}:\n{l1[:12]}\n{h2}:\n{l2[:12]}", h3))
    for lines in _speeches(text):
        label = speech_label(lines)
        for line in lines:
            words = line.split(" ")
            last = words[-1].strip(",.;:!?'-")
            if (label != 1 and line[:1].isupper() and 4 <= len(words) and len(line) <= 48
                    and last.isalpha() and len(last) <= 12):
                out.append(Example("lastword", " ".join(words[:-1]), last))
        if label is not None:
            for line in lines[1:]:
                if len(line) >= 24:
                    out.append(Example("form", line[0].lower() + line[1:24], ("verse", "prose")[label]))
    return out


def build_instructions(split: str, per_task: int | None = None, seed: int = 0) -> list[Example]:
    """The examples of the plays of ``split``; with ``per_task``, that many of each task drawn at random.

    With ``per_task``, half the ``form`` examples are verse and half prose.

    >>> ex = build_instructions("val", per_task=5)
    >>> len(ex), sorted(Counter(e.task for e in ex).values())
    (15, [5, 5, 5])
    """
    examples = [e for play in split_plays(split) for e in play_examples(load_play(play))]
    if per_task is None:
        return examples
    g = torch.Generator().manual_seed(seed)
    out = []
    for task in TASKS:
        # form: as many verse as prose examples (verse is nine in ten lines), so guessing gives 1/2
        groups = ("verse", "prose") if task == "form" else (None,)
        for answer in groups:
            pool = [e for e in examples if e.task == task and answer in (None, e.answer)]
            n = per_task // len(groups) + (per_task % len(groups) if answer == groups[0] else 0)
            if len(pool) < n:
                raise ValueError(f"split {split!r} has {len(pool)} {task} examples, fewer than {n}")
            out += [pool[i] for i in sorted(torch.randperm(len(pool), generator=g)[:n].tolist())]
    return out


def encode(prefix: str, response: str, tok, mask_prompt: bool = True) -> tuple[list[int], list[int]]:
    """Inputs and targets of ``prefix + response``; targets inside the prefix are ``IGNORE_INDEX`` if ``mask_prompt``.

    Target ``t`` is token ``t + 1``: it is masked when that token belongs to the prefix.

    >>> from lmcourse.tokenization import shakespeare_char_tokenizer
    >>> x, y = encode("ab", "cd", shakespeare_char_tokenizer())
    >>> len(x), y[0], y[1] != -100
    (3, -100, True)
    """
    ids = tok.encode(prefix + response)
    n_prefix = len(tok.encode(prefix))
    if n_prefix < 1 or n_prefix >= len(ids):
        raise ValueError("need a non-empty prefix and a non-empty response")
    x, y = ids[:-1], ids[1:]
    if mask_prompt:
        y = [IGNORE_INDEX if t + 1 < n_prefix else v for t, v in enumerate(y)]
    return x, y


def natural_prefix(example: Example) -> str | None:
    """The question asked in the plays' own format (no template), for a base model; None for ``form``.

    >>> natural_prefix(Example("speaker", "A:\\nHail\\nB:\\nWhat", "A"))
    'A:\\nHail\\n\\nB:\\nWhat\\n\\n'
    >>> natural_prefix(Example("lastword", "Or I my", "life"))
    'Or I my '
    """
    if example.task == "speaker":
        h1, l1, h2, l2 = example.context.split("\n")
        return f"{h1}\n{l1}\n\n{h2}\n{l2}\n\n"
    if example.task == "lastword":
        return example.context + " "
    return None


def encode_examples(examples: list[Example], tok, context_length: int = 128,
                    mask_prompt: bool = True, shots: dict[str, Example] | None = None,
                    natural: bool = False) -> torch.Tensor:
    """Examples as the ``"sft"`` objective reads them: ``(N, 2, context_length)`` inputs and targets.

    The prefix is ``chat(prompt)`` (after ``chat(shot) + "\\n"`` with ``shots``, one
    example per task shown first); the response is ``answer + "$e"``. Rows are padded
    with ``PAD_ID`` inputs and ``IGNORE_INDEX`` targets; an example longer than
    ``context_length`` raises a ``ValueError``. ``natural``: the prefix is
    :func:`natural_prefix` instead (the response keeps its end marker, which a
    lenient score does not require).
    """
    rows = torch.full((len(examples), 2, context_length), IGNORE_INDEX, dtype=torch.long)
    rows[:, 0] = PAD_ID
    for i, e in enumerate(examples):
        shot = "" if shots is None else chat(shots[e.task].prompt, shots[e.task].answer) + "\n"
        prefix = natural_prefix(e) if natural else shot + chat(e.prompt)
        if prefix is None:
            raise ValueError(f"task {e.task!r} has no natural prefix")
        x, y = encode(prefix, e.answer + END, tok, mask_prompt)
        if len(x) > context_length:
            raise ValueError(f"example {i} has {len(x)} tokens, more than context_length {context_length}")
        rows[i, 0, :len(x)], rows[i, 1, :len(y)] = torch.tensor(x), torch.tensor(y)
    return rows


@torch.no_grad()
def response_correct(model: torch.nn.Module, rows: torch.Tensor, stop_ids: list[int] | None = None,
                     batch_size: int = 64) -> torch.Tensor:
    """For encoded examples (prompt masked), whether greedy decoding writes each response: ``(N,)`` bool.

    Teacher forcing: greedy decoding writes the response iff the argmax at every
    response position, fed the right prefix, is the right token. With ``stop_ids``
    (the ids that may end an answer) only the answer itself must match, and the
    position where ``$e`` starts must predict any stop id: "the answer, then a
    non-letter", the test for a model that never saw the end marker.
    """
    out = []
    with eval_mode(model):
        for i in range(0, len(rows), batch_size):
            x, y = rows[i:i + batch_size, 0], rows[i:i + batch_size, 1]  # (b, T)
            keep = y != IGNORE_INDEX  # (b, T): the response's targets
            T = int(keep.nonzero()[:, 1].max()) + 1
            x, y, keep = x[:, :T], y[:, :T], keep[:, :T]
            pred = model(x).argmax(-1)  # (b, T)
            ok = pred == y
            if stop_ids is not None:
                last = keep.cumsum(-1).eq(keep.sum(-1, keepdim=True)) & keep  # the end marker's last token
                end_first = last.roll(-1, dims=-1)  # the end marker's first token ("$")
                keep = keep & ~last
                ok = torch.where(end_first, torch.isin(pred, torch.tensor(stop_ids)), ok)
            out.append((ok | ~keep).all(-1))
    return torch.cat(out)


def exact_match(model: torch.nn.Module, examples: list[Example], tok, shots: dict[str, Example] | None = None,
                per_task: int | None = None, lenient: bool = False, natural: bool = False) -> dict[str, float]:
    """Share of ``examples`` whose answer greedy decoding writes, per task.

    Strict (default): the answer and then the end marker ``$e``. ``lenient``: the
    answer and then any character that is not a letter (how a base model, which
    never saw ``$e``, is scored). ``natural``: asked in the plays' own format
    (:func:`natural_prefix`; tasks without one are left out; lenient scoring).
    ``per_task``: only the first that many of each task.
    """
    stop = None
    if lenient or natural:
        stop = [i for i in range(tok.vocab_size) if not tok.decode([i]).isalpha()]
    tasks = [t for t in TASKS if not natural or t != "form"]
    by_task = {t: [e for e in examples if e.task == t][:per_task] for t in tasks}
    return {t: response_correct(model, encode_examples(ex, tok, shots=shots, natural=natural),
                                stop).float().mean().item()
            for t, ex in by_task.items() if ex}


def majority_answers(examples: list[Example]) -> dict[str, str]:
    """The most frequent answer of each task (the first in order among ties).

    >>> majority_answers([Example("form", "x", "verse"), Example("form", "y", "verse")])
    {'form': 'verse'}
    """
    return {t: Counter(e.answer for e in examples if e.task == t).most_common(1)[0][0]
            for t in TASKS if any(e.task == t for e in examples)}


def two_back(example: Example) -> str:
    """The ``speaker`` rule of dialogue: the next speaker is the one before the last (A, B, A).

    >>> two_back(Example("speaker", "A:\\nline\\nB:\\nline", "A"))
    'A'
    """
    if example.task != "speaker":
        raise ValueError(f"two_back answers the speaker task, not {example.task!r}")
    return example.context.split("\n")[0][:-1]


def baseline_accuracy(train: list[Example], test: list[Example]) -> dict[str, float]:
    """Exact match of the best simple rule per task: ``two_back`` for ``speaker``, the majority answer otherwise."""
    major = majority_answers(train)
    out = {}
    for task in TASKS:
        ex = [e for e in test if e.task == task]
        if ex:
            guess = [two_back(e) if task == "speaker" else major[task] for e in ex]
            out[task] = sum(g == e.answer for g, e in zip(guess, ex, strict=True)) / len(ex)
    return out


def shortest_shots(examples: list[Example]) -> dict[str, Example]:
    """One demonstration per task for one-shot prompting: its shortest example (the first among ties).

    Short, so that demonstration and question fit the 128-character context together.
    """
    return {t: min((e for e in examples if e.task == t), key=lambda e: len(e.prompt) + len(e.answer))
            for t in TASKS if any(e.task == t for e in examples)}
