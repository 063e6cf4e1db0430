"""Masked language modeling: BERT's objective on a bidirectional transformer encoder.

A causal language model factorises P(x) left to right and is trained on every
position, ``L_CLM = -sum_t log p(x_t | x_<t)``. A *masked* language model
(Devlin et al., 2019, "BERT") corrupts a random subset M of the positions and
predicts the originals from everything that is left, on both sides::

    L_MLM = -(1/|M|) sum_{t in M} log p(x_t | x~)       x~ = the corrupted sequence

:func:`mask_tokens` draws M (each non-special position with probability 0.15)
and corrupts it the BERT way: 80 percent of the chosen positions become
``[MASK]``, 10 percent a random token, 10 percent stay as they are, so the model
cannot learn that only ``[MASK]`` positions need a prediction. The labels hold
the original id at chosen positions and ``-100`` elsewhere, the ``ignore_index``
of ``F.cross_entropy`` (and Hugging Face's convention), so :func:`mlm_loss` is
one call.

:class:`lmcourse.transformer.GPT` with ``GPTConfig(causal=False)`` is the encoder:
every position attends to every other, and its tied head gives a distribution over
the vocabulary at every position. :func:`fill_mask` gives the top-k predictions at
each ``[MASK]`` of a text. The engine of :mod:`lmcourse.train` trains it with
``TrainConfig(objective="mlm")``, and

    python -m lmcourse train --config mlm_char

reproduces the checkpoint the package ships (seeded, on the CPU). Its tokenizer is
:func:`mask_tokenizer`: ``[MASK]`` takes id 0, so every character's id is one more
than in the plain tokenizer of chapters 1-6.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .data import as_tensor, random_windows
from .device import eval_mode
from .tokenization import shakespeare_char_tokenizer
from .transformer import GPT

MASK_TOKEN = "[MASK]"
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index; Hugging Face uses it too


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    special_token_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of a batch of token ids: returns ``(inputs, labels)``.

    Each position whose id is not special is *chosen* independently with
    probability ``mlm_probability``. A chosen position becomes ``mask_token_id``
    (probability 0.8), a random token (0.1) or keeps its id (0.1). The random
    token is drawn uniformly from the non-special ids (``mask_token_id`` and
    ``special_token_ids`` are never drawn; it may equal the original, as in BERT).
    ``labels`` is the original id at chosen positions and ``-100`` elsewhere.

    All random numbers come from ``generator`` on the CPU (three draws of the
    shape of ``ids``, always), so a seed gives the same result on every device.

    >>> g = torch.Generator().manual_seed(0)
    >>> ids = torch.arange(1, 11).repeat(100, 1)                   # (100, 10)
    >>> inputs, labels = mask_tokens(ids, mask_token_id=0, vocab_size=11, generator=g)
    >>> chosen = labels != -100
    >>> bool((labels[chosen] == ids[chosen]).all()), bool((inputs[~chosen] == ids[~chosen]).all())
    (True, True)
    """
    ids = torch.as_tensor(ids)
    if ids.dtype != torch.long:
        raise ValueError(f"ids must be torch.long token ids, got {ids.dtype}")
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    specials = sorted({int(mask_token_id), *(int(s) for s in special_token_ids)})
    if any(not 0 <= s < vocab_size for s in specials):
        raise ValueError(f"special ids {specials} must lie in 0..{vocab_size - 1}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must lie in 0..{vocab_size - 1}, got {int(ids.min())}..{int(ids.max())}")
    normal = torch.ones(vocab_size, dtype=torch.bool)
    normal[specials] = False
    normal_ids = normal.nonzero().squeeze(1)  # (V - n_special,) the ids a random replacement may take
    if len(normal_ids) == 0:
        raise ValueError("every id is special: nothing to draw random replacements from")

    cpu = ids.cpu()
    u_choose = torch.rand(cpu.shape, generator=generator)
    u_action = torch.rand(cpu.shape, generator=generator)
    random_ids = normal_ids[torch.randint(len(normal_ids), cpu.shape, generator=generator)]
    chosen = (u_choose < mlm_probability) & normal[cpu]  # specials are never chosen
    to_mask = chosen & (u_action < 0.8)
    to_random = chosen & (u_action >= 0.8) & (u_action < 0.9)  # the last 0.1 keep their id
    inputs = torch.where(to_mask, torch.full_like(cpu, mask_token_id), cpu)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = torch.where(chosen, cpu, torch.full_like(cpu, IGNORE_INDEX))
    return inputs.to(ids.device), labels.to(ids.device)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions with a label (``labels != -100``).

    ``logits`` is ``(..., V)``, ``labels`` ``(...)``. Unchosen positions add nothing
    and do not count in the mean: ``F.cross_entropy(..., ignore_index=-100)``.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def fill_mask(model: GPT, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``top_k`` most probable tokens, with probabilities, at each ``[MASK]`` of ``text``.

    Returns one list per mask, left to right, best first. All masks are
    predicted at once from the same input (no mask sees another's answer).
    """
    mask_id = tokenizer.token_to_id(MASK_TOKEN)
    ids = tokenizer.encode(text)
    where = [i for i, t in enumerate(ids) if t == mask_id]
    if not where:
        raise ValueError(f"the text has no {MASK_TOKEN} token")
    if not 1 <= top_k <= model.config.vocab_size:
        raise ValueError(f"top_k must be in 1..{model.config.vocab_size}, got {top_k}")
    device = model.tok_emb.weight.device
    with eval_mode(model):
        logits = model(torch.tensor([ids], device=device))[0, where]  # (M, V)
    probs = torch.softmax(logits.double().cpu(), dim=-1)
    top = probs.topk(top_k, dim=-1)
    return [
        [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(ps, ix, strict=True)]
        for ps, ix in zip(top.values, top.indices, strict=True)
    ]


@torch.no_grad()
def evaluate_mlm(model: GPT, ids, *, mask_token_id: int, batch_size: int = 16, num_batches: int = 8,
                 seed: int = 1234, context_length: int | None = None) -> dict[str, float]:
    """MLM loss (nats) and accuracy over the chosen positions of seeded random windows.

    Windows and masks come from ``seed`` only, so two models see the same test.
    Returns ``{"loss", "accuracy", "mask_accuracy", "positions"}``; ``accuracy``
    counts all chosen positions, ``mask_accuracy`` only those shown as ``[MASK]``.
    """
    T = context_length or model.config.context_length
    g = torch.Generator().manual_seed(seed)
    device = model.tok_emb.weight.device
    total = correct = correct_m = n = n_m = 0.0
    with eval_mode(model):
        for _ in range(num_batches):
            x, _y = random_windows(as_tensor(ids), batch_size, T, generator=g)
            inputs, labels = mask_tokens(x, mask_token_id=mask_token_id, vocab_size=model.config.vocab_size,
                                         generator=g)
            logits = model(inputs.to(device)).float().cpu()  # (B, T, V)
            chosen, shown_mask = labels != IGNORE_INDEX, inputs == mask_token_id
            total += F.cross_entropy(logits[chosen], labels[chosen], reduction="sum").item()
            hit = logits.argmax(-1) == labels
            correct, correct_m = correct + hit[chosen].sum().item(), correct_m + hit[shown_mask].sum().item()
            n, n_m = n + chosen.sum().item(), n_m + shown_mask.sum().item()
    return {"loss": total / n, "accuracy": correct / n, "mask_accuracy": correct_m / n_m, "positions": int(n)}


def mask_tokenizer():
    """The course's character tokenizer with ``[MASK]`` at id 0 (characters shift up by one)."""
    return shakespeare_char_tokenizer(special_tokens=[MASK_TOKEN])
