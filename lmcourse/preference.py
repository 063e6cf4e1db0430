"""Preference tuning with DPO (Rafailov et al. 2023), on preferences that code decides.

Given a prompt ``x`` and two responses, the *chosen* ``y_w`` and the *rejected*
``y_l``, Direct Preference Optimization trains the policy ``pi`` against a frozen
reference ``pi_ref`` (the model before tuning) with the loss::

    L = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

which is the loss of a Bradley-Terry preference model whose reward is the scaled log-ratio
``beta * log(pi / pi_ref)``. It is the closed-form answer to RLHF's problem
(maximise a reward minus ``beta`` times the KL divergence to the reference; Christiano
et al. 2017, Ouyang et al. 2022) without a reward model or sampling during training.

The chapter's preference is one a program decides: a line of verse of ten syllables
(the iambic pentameter's count) is preferred to one of another length.
:func:`syllables` is a heuristic counter (vowel groups, with corrections for a silent
final *e* and a few endings); its agreement with a pronouncing dictionary is measured
in the chapter's tests.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .data import load_play, split_plays
from .device import eval_mode
from .generation import generate

IGNORE_INDEX = -100  # as lmcourse.mlm: targets with this id carry no loss


def sequence_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed log-probability of each row's targets, skipping ``IGNORE_INDEX``: ``(B,)``.

    ``logits`` ``(B, T, V)``, ``targets`` ``(B, T)``; a response's log-probability
    ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)`` when only the response's targets are kept.

    >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 ids
    >>> round(sequence_logprob(logits, torch.tensor([[-100, 2, 3]])).item(), 4)  # 2 x ln(1/4)
    -2.7726
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"need logits (B, T, V) and targets (B, T), got {tuple(logits.shape)}, "
                         f"{tuple(targets.shape)}")
    keep = targets != IGNORE_INDEX  # (B, T)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, T)
    return (picked * keep).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """The mean DPO loss over a batch of pairs, from sequence log-probabilities ``(B,)`` each.

    At the start (policy = reference) every margin is 0 and the loss is ``ln 2``:

    >>> z = torch.zeros(3)
    >>> round(dpo_loss(z, z, z, z).item(), 4)
    0.6931
    >>> round(dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
    ...                torch.tensor([-2.0]), beta=0.5).item(), 4)  # margin 0.5 x (1 - (-1)) = 1
    0.3133
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probabilities must have one shape, got {sorted(shapes)}")
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))  # (B,)
    return -F.logsigmoid(margin).mean()


def implicit_reward(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward of a response: ``beta * (log pi - log pi_ref)``."""
    return beta * (policy - reference)


# ----------------------------------------------------------------------------------
# The preference: ten syllables

_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def word_syllables(word: str) -> int:
    """A heuristic syllable count of one word (at least 1): vowel groups, corrected.

    Counts groups of vowels (``y`` included); a final silent ``e`` (``fire``,
    ``love``) does not count unless the word ends in consonant + ``le`` (``noble``);
    a final ``-ed`` is silent after a letter other than ``t`` or ``d`` (modern
    speech; in verse the editions often sound it, which the rule gets wrong);
    a final ``-es`` is silent after most consonants; an apostrophe-``d`` or -``s``
    adds nothing.

    >>> [word_syllables(w) for w in ("love", "noble", "music", "fire", "heaven", "tomorrow", "i'll")]
    [1, 2, 2, 1, 2, 3, 1]
    """
    w = word.lower().strip("'")
    if not w or not re.fullmatch(r"[a-z']+", w):
        raise ValueError(f"expected one word of letters, got {word!r}")
    w = w.split("'")[0] if w.endswith(("'d", "'s", "'st", "'ll")) else w.replace("'", "")
    n = len(_VOWEL_GROUPS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee", "ye")) and n > 1:
        n -= 1  # silent final e
    elif w.endswith("le") and len(w) > 2 and w[-3] not in "aeiouy" and n == 1:
        n += 1  # a bare "-ble" word such as "ble" is rare; keep the count sane
    if w.endswith("ed") and len(w) > 3 and w[-3] not in "tde" and n > 1:
        n -= 1  # silent -ed: "loved", "changed" (Shakespeare's editors print a sounded one as -ed too)
    if w.endswith("es") and len(w) > 3 and w[-3] not in "aeiouyscxzgh" and n > 1:
        n -= 1  # silent -es: "loves", "times"
    return max(1, n)


def syllables(line: str) -> int:
    """The heuristic syllable count of a line: the sum over its words.

    >>> syllables("Shall I compare thee to a summer's day?")
    10
    """
    return sum(word_syllables(w) for w in _WORD.findall(line.lower()))


def is_decasyllable(line: str) -> bool:
    """The chapter's preference: a line of exactly ten syllables (by :func:`syllables`).

    >>> is_decasyllable("But soft, what light through yonder window breaks?"), is_decasyllable("Anon.")
    (True, False)
    """
    return syllables(line) == 10


def preference_pairs(prompts: list[str], samples: list[list[str]], score) -> list[tuple[str, str, str]]:
    """``(prompt, chosen, rejected)`` for each prompt whose samples hold one that ``score`` accepts and one it does not.

    ``samples[i]`` are responses sampled for ``prompts[i]``; the first accepted one
    is chosen and the first rejected one is rejected; prompts with all samples on
    one side give no pair.

    >>> preference_pairs(["a", "b"], [["xx", "x"], ["x", "y"]], lambda s: len(s) == 2)
    [('a', 'xx', 'x')]
    """
    if len(prompts) != len(samples):
        raise ValueError(f"{len(prompts)} prompts but {len(samples)} lists of samples")
    pairs = []
    for prompt, responses in zip(prompts, samples, strict=True):
        good = [r for r in responses if score(r)]
        bad = [r for r in responses if not score(r)]
        if good and bad:
            pairs.append((prompt, good[0], bad[0]))
    return pairs


# ----------------------------------------------------------------------------------
# Prompts, samples and pairs


def verse_prompts(split: str, n: int, length: int = 64, seed: int = 0) -> list[str]:
    """``n`` prompts of exactly ``length`` characters: the text before a line of verse, ending in its newline.

    Each ends just before a line of a verse speech (every line capitalised, as
    :func:`lmcourse.finetune.speech_label` reads verse) that is not the speech's
    first, drawn at random from the plays of ``split``.

    >>> p = verse_prompts("val", 3)
    >>> len(p), {len(x) for x in p}, all(x.endswith("\\n") for x in p)
    (3, {64}, True)
    """
    if length < 2 or n < 1:
        raise ValueError(f"need n >= 1 and length >= 2, got n={n}, length={length}")
    ends = []
    for play in split_plays(split):
        text = load_play(play)
        pos = 0
        for block in text.split("\n\n"):
            lines = block.split("\n")
            if len(lines) >= 4 and all(line[:1].isupper() for line in lines[1:]):
                cut = pos + len(lines[0]) + 1 + len(lines[1]) + 1  # after the speech's first line
                for line in lines[2:]:
                    if cut >= length:
                        ends.append(text[cut - length:cut])
                    cut += len(line) + 1
            pos += len(block) + 2
    if len(ends) < n:
        raise ValueError(f"split {split!r} gives {len(ends)} prompts, fewer than {n}")
    g = torch.Generator().manual_seed(seed)
    return [ends[i] for i in sorted(torch.randperm(len(ends), generator=g)[:n].tolist())]


@torch.no_grad()
def sample_lines(model: nn.Module, prompts: list[str], tok, k: int = 4, max_chars: int = 60,
                 generator: torch.Generator | None = None, batch_size: int = 64) -> list[list[str]]:
    """``k`` sampled next lines (temperature 1, cut at the first newline) for each prompt of equal length."""
    if len({len(p) for p in prompts}) > 1:
        raise ValueError("the prompts must have one length (they are sampled as one batch)")
    out: list[list[str]] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        ids = torch.tensor([tok.encode(p) for p in chunk]).repeat_interleave(k, dim=0)  # (b k, T)
        new = generate(model, ids, max_chars, generator=generator)[:, ids.shape[1]:]  # (b k, max_chars)
        texts = [tok.decode(row.tolist()).split("\n")[0] for row in new]
        out += [texts[j * k:(j + 1) * k] for j in range(len(chunk))]
    return out


def encode_pairs(pairs: list[tuple[str, str, str]], tok, context_length: int = 128) -> torch.Tensor:
    """Pairs as the ``"dpo"`` objective reads them: ``(N, 4, context_length)``.

    Rows: chosen inputs, chosen targets, rejected inputs, rejected targets, each for
    ``prompt + response + "\\n"``; targets are ``IGNORE_INDEX`` inside the prompt
    and the padding, so a sequence log-probability is the response's (newline included).
    """
    rows = torch.full((len(pairs), 4, context_length), IGNORE_INDEX, dtype=torch.long)
    rows[:, 0::2] = 0
    for i, (prompt, chosen, rejected) in enumerate(pairs):
        n_prompt = len(tok.encode(prompt))
        for j, response in enumerate((chosen, rejected)):
            ids = tok.encode(prompt + response + "\n")
            if len(ids) - 1 > context_length:
                raise ValueError(f"pair {i} has {len(ids) - 1} tokens, more than {context_length}")
            x, y = ids[:-1], [IGNORE_INDEX if t + 1 < n_prompt else v for t, v in enumerate(ids[1:])]
            rows[i, 2 * j, :len(x)], rows[i, 2 * j + 1, :len(y)] = torch.tensor(x), torch.tensor(y)
    return rows


@torch.no_grad()
def response_logprobs(model: nn.Module, prompts: list[str], responses: list[str], tok,
                      batch_size: int = 64) -> torch.Tensor:
    """``log pi(response + "\\n" | prompt)`` for each pair, in nats: ``(N,)``."""
    pairs = [(p, r, r) for p, r in zip(prompts, responses, strict=True)]
    rows = encode_pairs(pairs, tok, context_length=model.config.context_length)
    out = []
    with eval_mode(model):
        for i in range(0, len(rows), batch_size):
            x, y = rows[i:i + batch_size, 0], rows[i:i + batch_size, 1]
            out.append(sequence_logprob(model(x), y))
    return torch.cat(out)


def score_policy(policy: nn.Module, reference: nn.Module, prompts: list[str], tok, k: int = 4,
                 seed: int = 0, score=is_decasyllable) -> dict[str, float]:
    """Sample ``k`` lines per prompt from ``policy``; the reward and the KL to ``reference``.

    ``reward``: share of samples that ``score`` accepts. ``kl``: the mean of
    ``log pi(y|x) - log pi_ref(y|x)`` over the samples ``y ~ pi``, a Monte Carlo
    estimate of KL(pi || pi_ref) per line in nats (0 for the reference itself);
    ``kl_per_char``: the same divided by the mean number of characters scored.
    ``syllables``: mean heuristic syllables per sample; ``empty``: share of empty lines.
    """
    g = torch.Generator().manual_seed(seed)
    samples = [s for group in sample_lines(policy, prompts, tok, k=k, generator=g) for s in group]
    repeated = [p for p in prompts for _ in range(k)]
    logp = response_logprobs(policy, repeated, samples, tok)
    logp_ref = response_logprobs(reference, repeated, samples, tok)
    kl = (logp - logp_ref).mean().item()
    chars = sum(len(s) + 1 for s in samples) / len(samples)
    return {"reward": sum(map(score, samples)) / len(samples), "kl": kl, "kl_per_char": kl / chars,
            "syllables": sum(map(syllables, samples)) / len(samples),
            "empty": sum(s == "" for s in samples) / len(samples), "examples": samples[:8]}
