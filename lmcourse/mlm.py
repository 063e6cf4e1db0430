"""Masked language modeling: BERT's objective on a bidirectional transformer encoder.

A causal language model factorises P(x) left to right and is trained on every
position, ``L_CLM = -sum_t log p(x_t | x_<t)``. A *masked* language model
(Devlin et al., 2019, "BERT") corrupts a random subset M of the positions and
predicts the originals from everything that is left, on both sides::

    L_MLM = -(1/|M|) sum_{t in M} log p(x_t | x~)       x~ = the corrupted sequence

:func:`mask_tokens` draws M (each non-special position with probability 0.15)
and corrupts it the BERT way: 80 percent of the chosen positions become
``[MASK]``, 10 percent a random token, 10 percent stay as they are (BERT's
answer to ``[MASK]`` never appearing in fine-tuning; its own ablation found the mix
matters little). The labels hold
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

Without a causal mask the position scheme alone tells left from right. ALiBi's bias
``-m|i - j|`` is symmetric, so an encoder with only that signal maps a reversed text
to reversed logits (:func:`mirror_gap` measures how far a model is from that); the
shipped encoder uses RoPE (Su et al., 2021), whose scores depend on the signed offset.
:func:`evaluate_mlm` scores held-out text, its headline the accuracy on positions
shown as ``[MASK]``; :func:`blank_log_probs` scores single blanks with a causal model
(left context) or the encoder (both sides, or left only): CLM against MLM on the same
blanks; :func:`count_fill_in` is the counting baseline for the same blanks.
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
    ``loss`` and ``accuracy`` count every chosen position, ``mask_only_accuracy``
    only those shown as ``[MASK]`` (the headline: the answer is not in the input),
    ``random_accuracy`` those shown as a random token and ``kept_accuracy`` those
    left as they were (the answer is visible). ``mask_accuracy`` is the old name of
    ``mask_only_accuracy``. ``positions`` counts the chosen positions,
    ``mask_positions`` those shown as ``[MASK]``.
    """
    if num_batches < 1 or batch_size < 1:
        raise ValueError(f"num_batches and batch_size must be >= 1, got {num_batches} and {batch_size}")
    T = context_length or model.config.context_length
    g = torch.Generator().manual_seed(seed)
    device = model.tok_emb.weight.device
    total = 0.0
    hits = {"chosen": 0, "mask": 0, "random": 0, "kept": 0}
    counts = dict.fromkeys(hits, 0)
    with eval_mode(model):
        for _ in range(num_batches):
            x, _y = random_windows(as_tensor(ids), batch_size, T, generator=g)
            inputs, labels = mask_tokens(x, mask_token_id=mask_token_id, vocab_size=model.config.vocab_size,
                                         generator=g)
            logits = model(inputs.to(device)).float().cpu()  # (B, T, V)
            chosen = labels != IGNORE_INDEX
            kinds = {"chosen": chosen, "mask": inputs == mask_token_id, "kept": chosen & (inputs == x)}
            kinds["random"] = chosen & ~kinds["mask"] & ~kinds["kept"]
            total += F.cross_entropy(logits[chosen], labels[chosen], reduction="sum").item()
            hit = logits.argmax(-1) == labels
            for k, where in kinds.items():
                hits[k] += int(hit[where].sum())
                counts[k] += int(where.sum())
    acc = {k: hits[k] / counts[k] if counts[k] else float("nan") for k in hits}
    return {"loss": total / counts["chosen"], "accuracy": acc["chosen"], "mask_only_accuracy": acc["mask"],
            "mask_accuracy": acc["mask"], "random_accuracy": acc["random"], "kept_accuracy": acc["kept"],
            "positions": counts["chosen"], "mask_positions": counts["mask"]}


@torch.no_grad()
def mirror_gap(model: GPT, ids: torch.Tensor) -> float:
    """``max |model(flip(x)) - flip(model(x))|`` over a batch ``ids`` of shape ``(B, T)``.

    Zero (to rounding) for a model that cannot tell left from right: a bidirectional
    encoder whose only position signal is symmetric in ``i - j`` (ALiBi's
    ``-m|i - j|``) maps a reversed text to the reversed logits. RoPE and learned
    positions break the symmetry.

    >>> from lmcourse.transformer import GPTConfig
    >>> x = torch.randint(10, (2, 8), generator=torch.Generator().manual_seed(0))
    >>> def encoder(positional):  # untrained: near-uniform attention, so RoPE's gap starts small
    ...     torch.manual_seed(0)
    ...     return GPT(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=1, n_heads=2,
    ...                          causal=False, positional=positional))
    >>> mirror_gap(encoder("alibi"), x) < 1e-6, mirror_gap(encoder("rope"), x) > 1e-5
    (True, True)
    """
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.dtype != torch.long:
        raise ValueError("ids must be a (B, T) torch.long tensor of token ids")
    device = model.tok_emb.weight.device
    with eval_mode(model):
        x = ids.to(device)
        return (model(x.flip(1)) - model(x).flip(1)).abs().max().item()


@torch.no_grad()
def blank_log_probs(model: GPT, ids, positions, *, mask_token_id: int | None = None, side: str = "both",
                    batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(true token), best guess)`` at each of ``positions`` of ``ids``, one blank at a time.

    A causal model (``model.config.causal``) reads the ``context_length`` tokens
    just before each position and predicts it from the left side only. A masked
    model reads a window of ``context_length`` tokens with the position replaced
    by ``mask_token_id``: in the middle of the window for ``side="both"``
    (moved inwards at the ends of ``ids``), at its end for ``side="left"``. Give
    each model the ids of its own tokenizer. Returns two ``(N,)`` tensors on the
    CPU: float64 log-probabilities and long predictions.
    """
    ids, positions = as_tensor(ids), torch.as_tensor(positions, dtype=torch.long)
    T, n = model.config.context_length, len(ids)
    if positions.ndim != 1 or positions.numel() == 0:
        raise ValueError("positions must be a non-empty 1-D sequence of indices into ids")
    if side not in ("both", "left"):
        raise ValueError(f"side must be 'both' or 'left', got {side!r}")
    causal = model.config.causal
    if causal == (mask_token_id is not None):
        raise ValueError("give mask_token_id for a bidirectional model, and only for one")
    left_only = causal or side == "left"
    low = T if causal else T - 1 if left_only else 0
    if positions.min() < low or positions.max() >= n or n < T:
        raise ValueError(f"positions must lie in {low}..{n - 1} (the model reads {T} tokens)")
    if left_only:  # the window ends at the blank (causal: just before it)
        starts = positions - T if causal else positions - (T - 1)
    else:
        starts = (positions - T // 2).clamp(0, n - T)
    offsets = positions - starts if not causal else torch.full_like(positions, T)  # blank's place in the window
    device = model.tok_emb.weight.device
    logps, preds = [], []
    with eval_mode(model):
        for i in range(0, len(positions), batch_size):
            s, o = starts[i:i + batch_size], offsets[i:i + batch_size]
            windows = ids[s[:, None] + torch.arange(T)]  # (b, T)
            rows = torch.arange(len(s))
            if not causal:
                windows[rows, o] = mask_token_id
            logits = model(windows.to(device)).double().cpu()  # (b, T, V)
            at = logits[rows, o - 1 if causal else o]  # (b, V): the logits that predict the blank
            logps.append(at.log_softmax(-1)[rows, ids[positions[i:i + batch_size]]])
            preds.append(at.argmax(-1))
    return torch.cat(logps), torch.cat(preds)


def count_fill_in(train_ids, ids, positions, widths: Sequence[int] = (4, 3, 2, 1)) -> torch.Tensor:
    """A counting baseline for single blanks: the token seen most often between the same neighbours.

    For the blank at each of ``positions`` of ``ids``, take its ``w`` tokens on the
    left and ``w`` on the right and predict the token that ``train_ids`` holds most
    often between that same pair of contexts (ties: the smaller id), for the largest
    ``w`` in ``widths`` whose context occurs in ``train_ids``; a blank too near an
    end of ``ids`` for a width, or whose contexts never occur, backs off to the next
    width, and after the last one to the most common token of ``train_ids``. No
    model, no training: the both-sides analogue of an n-gram. Returns ``(N,)`` ids.

    >>> train = torch.tensor([1, 2, 3, 1, 2, 3, 1, 4, 3])
    >>> count_fill_in(train, torch.tensor([1, 0, 3, 0]), [1, 3], widths=(1,))
    tensor([2, 1])
    """
    train, ids = as_tensor(train_ids), as_tensor(ids)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.ndim != 1 or positions.numel() == 0 or positions.min() < 0 or positions.max() >= len(ids):
        raise ValueError(f"positions must be a non-empty 1-D sequence of indices into ids (0..{len(ids) - 1})")
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be ints >= 1, got {widths!r}")
    V = int(max(train.max(), ids.max())) + 1
    pred = torch.full_like(positions, -1)
    for w in sorted(set(widths), reverse=True):
        if V ** (2 * w + 1) >= 2**62:
            raise ValueError(f"width {w} with {V} token ids does not fit a 64-bit context key")
        todo = (pred < 0) & (positions >= w) & (positions + w < len(ids))
        if not todo.any() or len(train) < 2 * w + 1:
            continue
        offsets = [o for o in range(-w, w + 1) if o != 0]  # the 2w neighbours
        N = len(train) - 2 * w  # centres w .. len - w - 1
        key = torch.zeros(N, dtype=torch.long)  # (N,) the 2w neighbours as one base-V number
        for o in offsets:
            key = key * V + train[w + o:w + o + N]
        q = torch.zeros(int(todo.sum()), dtype=torch.long)  # the blanks' keys, built the same way
        for o in offsets:
            q = q * V + ids[positions[todo] + o]
        hit = torch.isin(key, q)
        pair, count = torch.unique(key[hit] * V + train[w:w + N][hit], return_counts=True)  # sorted by (key, token)
        if len(pair) == 0:
            continue
        # best token per key: most counts first, the smaller token among ties (stable sorts keep that order)
        order = torch.sort(-count, stable=True).indices
        order = order[torch.sort(pair[order] // V, stable=True).indices]
        keys, first = torch.unique_consecutive(pair[order] // V, return_counts=True)
        best = pair[order][torch.cumsum(first, 0) - first] % V  # (K,) one token per key
        at = torch.searchsorted(keys, q).clamp(max=len(keys) - 1)
        found = keys[at] == q
        rows = todo.nonzero().squeeze(1)
        pred[rows[found]] = best[at[found]]
    pred[pred < 0] = torch.bincount(train).argmax()
    return pred


def mask_tokenizer():
    """The course's character tokenizer with ``[MASK]`` at id 0 (characters shift up by one)."""
    return shakespeare_char_tokenizer(special_tokens=[MASK_TOKEN])
