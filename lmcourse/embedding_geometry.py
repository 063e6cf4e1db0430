"""The geometry of a model's token rows: how alike they point, by token frequency (chapter 6).

Gao et al. (2019, "Representation Degeneration Problem in Training Natural
Language Generation Models") found that in trained, tied models the embeddings
of rare tokens crowd into a narrow cone. These functions measure it on any
``(V, D)`` matrix of rows (an embedding, an output layer), so chapter 6 can
compare the shipped tied GPT with its untied twin:

* :func:`mean_pairwise_cosine`: the mean cosine over all pairs of distinct rows
  (0 for random directions in high dimension, 1 when all rows point alike);
* :func:`common_direction`: the length of the mean row over the mean row length
  (0 when the rows cancel, 1 when they are all the same vector);
* :func:`frequency_groups`: the rare and the frequent token ids of a corpus.

>>> rows = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
>>> round(mean_pairwise_cosine(rows), 4)  # pairs: 0, 0.7071, 0.7071
0.4714
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rows(rows: torch.Tensor) -> torch.Tensor:
    if rows.dim() != 2 or len(rows) < 2:
        raise ValueError(f"need a (n, D) matrix of at least 2 rows, got shape {tuple(rows.shape)}")
    norms = rows.norm(dim=-1)
    if (norms == 0).any():
        raise ValueError(f"row {int((norms == 0).nonzero()[0])} is zero: it has no direction")
    return rows.detach().double()


def mean_pairwise_cosine(rows: torch.Tensor) -> float:
    """The mean cosine similarity over all pairs of distinct rows of ``rows`` ``(n, D)``."""
    unit = F.normalize(_rows(rows), dim=-1)
    n = len(unit)
    total = unit.sum(0).pow(2).sum() - n  # sum over i != j of u_i . u_j
    return (total / (n * (n - 1))).item()


def common_direction(rows: torch.Tensor) -> float:
    """``|mean row| / mean |row|``: how much of the rows' length is one shared vector.

    >>> common_direction(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    0.0
    """
    r = _rows(rows)
    return (r.mean(0).norm() / r.norm(dim=-1).mean()).item()


def frequency_groups(ids: torch.Tensor, vocab_size: int, rare_below: int,
                     n_frequent: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The token ids seen fewer than ``rare_below`` times in ``ids``, and as many of the most frequent.

    ``n_frequent`` (default: as many as the rare ones) sets the size of the
    frequent group. Both are sorted by count, rarest and commonest first.

    >>> rare, frequent = frequency_groups(torch.tensor([0, 0, 0, 1, 2, 2]), 4, rare_below=2)
    >>> rare.tolist(), frequent.tolist()  # token 3 never occurs, token 1 once
    ([3, 1], [0, 2])
    """
    counts = torch.bincount(torch.as_tensor(ids).flatten(), minlength=vocab_size)
    if len(counts) > vocab_size:
        raise ValueError(f"ids hold token {len(counts) - 1}, outside a vocabulary of {vocab_size}")
    order = torch.argsort(counts, stable=True)  # rarest first
    rare = order[counts[order] < rare_below]
    k = len(rare) if n_frequent is None else n_frequent
    if len(rare) < 2 or k < 2 or len(rare) + k > vocab_size:
        raise ValueError(f"{len(rare)} tokens are rarer than {rare_below} and {k} frequent ones are asked for, "
                         f"of {vocab_size}: need at least 2 in each group, and no overlap")
    return rare, order.flip(0)[:k]
