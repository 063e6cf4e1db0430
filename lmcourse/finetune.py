"""Fine-tuning a pretrained encoder: a classifier head, a linear probe, full fine-tuning, from scratch.

BERT (Devlin et al., 2019) is pretrained once with the masked objective and then
*fine-tuned*: a small head on top of the encoder's hidden states, trained on a
labelled task with every weight free to move. Two baselines frame what the
pretraining buys:

* a **linear probe** (Alain & Bengio, 2016, "Understanding intermediate layers
  using linear classifier probes"): the encoder is frozen and only a linear
  classifier is trained on its features; it measures what the features already hold;
* **from scratch**: the same architecture, randomly initialised, trained on the
  labelled data only; it measures what the labels alone can teach, if it trains.

A baseline with no network at all frames both: :func:`char_ngram_features` counts
the character n-grams of each line (a bag of n-grams, rows scaled to unit length)
and :func:`fit_logistic_regression` fits a linear classifier on them, the classic
text classifier before pretraining.

:class:`EncoderClassifier` mean-pools the encoder's last hidden states (after its
final norm) over the positions and applies a linear head::

    h = (1/T) sum_t LN(H_L)_t        logits = W h + b          (B, D) -> (B, K)

The task here is derived from the corpus: is a line of a play **verse or prose**
(:func:`verse_prose_lines`)? In the edition the course reads, prose is printed
wrapped mid-sentence, so the lines of a prose speech after its first one mostly
start with a lowercase letter, while every verse line starts with a capital. A
speech is labelled by that rule; the classifier sees one of its later lines, cut
to a fixed length, with its first letter lowercased, so the rule itself is hidden
from it: it must tell verse from prose by the words and their rhythm.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import load_play, split_plays
from .device import eval_mode
from .train import TrainConfig, lr_at
from .transformer import GPT

LABELS = ("verse", "prose")  # class 0, class 1


def _speeches(text: str) -> Iterator[list[str]]:
    """The lines of each speech of a play's text (``SPEAKER:`` line dropped)."""
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if len(lines) > 1:
            yield lines[1:]


def speech_label(lines: list[str], min_lines: int = 3, prose_share: float = 0.3) -> int | None:
    """0 (verse), 1 (prose) or ``None`` (too short or unclear) for the lines of one speech.

    Prose: at least ``prose_share`` of the lines after the first start with a
    lowercase letter. Verse: none does. A speech of fewer than ``min_lines`` lines
    gets no label, nor does one in between.

    >>> speech_label(["Here's a knocking indeed! If a", "man were porter of", "old turning the key."])
    1
    >>> speech_label(["Thou hadst, and more, Miranda.", "That this lives in thy mind?", "In the dark backward"])
    0
    """
    if len(lines) < min_lines:
        return None
    rest = lines[1:]
    lower = sum(line[:1].islower() for line in rest) / len(rest)
    return 0 if lower == 0 else 1 if lower >= prose_share else None


def verse_prose_lines(split: str, length: int = 32) -> tuple[list[str], list[int]]:
    """Lines of the plays of ``split``, labelled verse (0) or prose (1) by :func:`speech_label`.

    Every line after the first of a labelled speech that has at least ``length``
    characters, cut to ``length`` characters, with its first character lowercased
    (the case of a line's first letter is what the label was read from). Returns
    ``(texts, labels)`` in play order; all texts have exactly ``length`` characters.

    >>> texts, labels = verse_prose_lines("val")
    >>> len(texts) == len(labels), {len(t) for t in texts}, sorted(set(labels))
    (True, {32}, [0, 1])
    """
    if not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    texts: list[str] = []
    labels: list[int] = []
    for play in split_plays(split):
        for lines in _speeches(load_play(play)):
            label = speech_label(lines)
            if label is None:
                continue
            for line in lines[1:]:
                if len(line) >= length:
                    texts.append(line[0].lower() + line[1:length])
                    labels.append(label)
    return texts, labels


def balanced_indices(labels, per_class: int, generator: torch.Generator) -> torch.Tensor:
    """``per_class`` random indices of each class (sorted), drawn without replacement from ``generator``."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {tuple(labels.shape)}")
    picked = []
    for k in labels.unique().tolist():
        where = (labels == k).nonzero().squeeze(1)
        if len(where) < per_class:
            raise ValueError(f"class {k} has {len(where)} examples, fewer than per_class={per_class}")
        picked.append(where[torch.randperm(len(where), generator=generator)[:per_class]])
    return torch.cat(picked).sort().values


class EncoderClassifier(nn.Module):
    """A classifier on a (bidirectional) :class:`GPT`: mean-pooled last hidden states, then a linear head.

    >>> from lmcourse.transformer import GPTConfig
    >>> enc = GPT(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=1, n_heads=2, causal=False))
    >>> EncoderClassifier(enc, num_classes=3)(torch.zeros(4, 8, dtype=torch.long)).shape
    torch.Size([4, 3])
    """

    def __init__(self, encoder: GPT, num_classes: int = 2) -> None:
        super().__init__()
        if not isinstance(encoder, GPT):
            raise TypeError(f"encoder must be an lmcourse GPT, got {type(encoder).__name__}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.d_model, num_classes)

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean over positions of the encoder's final-norm hidden states: ``(B, T) -> (B, D)``."""
        captured: list[torch.Tensor] = []
        # the output of ln_f is the last hidden state before the LM head; a hook takes it
        # without a second copy of the forward pass
        handle = self.encoder.ln_f.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.encoder(ids)
        finally:
            handle.remove()
        return captured[0].mean(dim=1)  # (B, T, D) -> (B, D)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids))  # (B, K)


def _check(ids: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or ids.ndim != 2:
        raise ValueError("ids must be a (N, T) torch.long tensor of token ids")
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(ids),):
        raise ValueError(f"labels must be a tensor of shape ({len(ids)},), one class per row of ids")


@torch.no_grad()
def encoder_features(model: EncoderClassifier, ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model.features`` of every row of ``ids`` ``(N, T)``, in eval mode and in batches: ``(N, D)``."""
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or ids.ndim != 2:
        raise ValueError("ids must be a (N, T) torch.long tensor of token ids")
    device = model.head.weight.device
    with eval_mode(model):
        return torch.cat([model.features(ids[i:i + batch_size].to(device)) for i in range(0, len(ids), batch_size)])


def train_classifier(model: EncoderClassifier, ids: torch.Tensor, labels: torch.Tensor, *, steps: int = 150,
                     batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.01,
                     freeze_encoder: bool = False, seed: int = 0,
                     features: torch.Tensor | None = None) -> list[float]:
    """Train ``model`` on ``(ids, labels)`` with AdamW, warmup + cosine; returns the loss of every step.

    ``freeze_encoder=True`` is the linear probe: the encoder's features are computed
    once (or taken from ``features``, :func:`encoder_features` of the same encoder and
    ``ids``, to reuse them across seeds) and only the head learns. Otherwise every
    weight learns (fine-tuning, or training from scratch when the encoder was never
    pretrained). Batches are drawn with replacement from a generator seeded with
    ``seed``, on the CPU.
    """
    _check(ids, labels)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if features is not None and not freeze_encoder:
        raise ValueError("features are for a frozen encoder (freeze_encoder=True)")
    if features is not None and features.shape != (len(ids), model.head.in_features):
        raise ValueError(f"features must have shape ({len(ids)}, {model.head.in_features}), "
                         f"got {tuple(features.shape)}")
    torch.manual_seed(seed)
    device = model.head.weight.device
    g = torch.Generator().manual_seed(seed)
    schedule = TrainConfig(steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=steps // 10)
    if freeze_encoder:
        model.encoder.requires_grad_(False)
        inputs = encoder_features(model, ids) if features is None else features.to(device)
        params = list(model.head.parameters())
    else:
        model.encoder.requires_grad_(True)
        inputs, params = ids, list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    losses = []
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule)
        rows = torch.randint(len(ids), (batch_size,), generator=g)
        x, y = inputs[rows].to(device), labels[rows].to(device)
        logits = model.head(x) if freeze_encoder else model(x)  # (B, K)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def classifier_accuracy(model: EncoderClassifier, ids: torch.Tensor, labels: torch.Tensor,
                        batch_size: int = 256) -> float:
    """The share of rows of ``ids`` whose most probable class is ``labels``."""
    _check(ids, labels)
    device = model.head.weight.device
    with eval_mode(model):
        pred = torch.cat([model(ids[i:i + batch_size].to(device)).argmax(-1).cpu()
                          for i in range(0, len(ids), batch_size)])
    return (pred == labels.cpu()).float().mean().item()


def char_ngram_features(texts: Sequence[str], n_max: int,
                        vocabulary: dict[str, int] | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """Bag of character 1- to ``n_max``-grams of each text: ``(N, F)`` counts, each row scaled to unit length.

    The vocabulary (n-gram -> column) is built from ``texts`` in order of first
    appearance unless given; n-grams outside it are dropped (fit the vocabulary on
    the training texts, then reuse it for held-out ones). Returns ``(X, vocabulary)``.

    >>> X, vocab = char_ngram_features(["abab"], n_max=2)
    >>> vocab, (X[0] / X[0].max()).tolist(), round(X[0].norm().item(), 6)
    ({'a': 0, 'b': 1, 'ab': 2, 'ba': 3}, [1.0, 1.0, 1.0, 0.5], 1.0)
    """
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1:
        raise ValueError(f"n_max must be an int >= 1, got {n_max!r}")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a sequence of strings")
    grams = [[t[i:i + n] for n in range(1, n_max + 1) for i in range(len(t) - n + 1)] for t in texts]
    if vocabulary is None:
        vocabulary = {}
        for row in grams:
            for q in row:
                vocabulary.setdefault(q, len(vocabulary))
    X = torch.zeros(len(texts), len(vocabulary))
    for r, row in enumerate(grams):
        cols = torch.tensor([vocabulary[q] for q in row if q in vocabulary], dtype=torch.long)
        X[r].index_add_(0, cols, torch.ones(len(cols)))
    return X / X.norm(dim=1, keepdim=True).clamp(min=1e-12), vocabulary


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, *, l2: float, steps: int = 300,
                            lr: float = 0.05) -> nn.Linear:
    """Multinomial logistic regression by full-batch Adam: minimise ``CE(X W^T + b, y) + l2 ||W||^2``.

    The objective is convex, so any optimiser run long enough lands at the same
    minimum (the tests compare with L-BFGS). Returns the fitted ``nn.Linear``
    ``(F -> K)``; ``K`` is ``labels.max() + 1``.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or not features.is_floating_point():
        raise ValueError("features must be a (N, F) floating-point tensor")
    _check(torch.zeros(len(features), 1, dtype=torch.long), labels)
    if l2 < 0 or steps < 1 or lr <= 0:
        raise ValueError(f"need l2 >= 0, steps >= 1 and lr > 0, got {l2}, {steps}, {lr}")
    head = nn.Linear(features.shape[1], int(labels.max()) + 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(head(features), labels) + l2 * head.weight.pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.requires_grad_(False)
