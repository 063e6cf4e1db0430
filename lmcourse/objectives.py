"""Training objectives: how the engine draws a batch and what its loss is.

The engine of :mod:`lmcourse.train` is the same for every model of the course;
``TrainConfig.objective`` picks one of these:

* ``"clm"``, :class:`NextToken`: next-token prediction on random windows (the GPT);
* ``"tbptt"``, :class:`Stream`: next-token prediction on a contiguous stream with the
  recurrent state carried across batches and detached (the LSTM of chapter 3);
* ``"mlm"``, :class:`Masked`: BERT's loss on masked positions (chapter 10);
* ``"sft"``, :class:`Examples`: next-token loss on fixed, padded examples, only where the
  target is not ``IGNORE_INDEX`` (the response of an instruction, chapter 14);
* ``"dpo"``, :class:`Preference`: the DPO loss on (chosen, rejected) pairs against a
  frozen reference model (Rafailov et al. 2023, chapter 14).

An objective draws the *global* batch from the engine's seeded generator
(:meth:`NextToken.sample`), computes the loss of one micro-batch
(:meth:`NextToken.loss`) and of one evaluation batch (:meth:`NextToken.eval_loss`),
and saves whatever state it carries (:meth:`NextToken.state_dict`) so that a stopped
run resumes exactly.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .data import random_windows
from .device import rank_and_world
from .lstm import detach_state
from .metrics import mean_nll
from .mlm import IGNORE_INDEX, mask_tokens, mlm_loss
from .preference import dpo_loss, sequence_logprob


class BatchSpec(Protocol):
    """What an objective reads from the training config (:class:`lmcourse.train.TrainConfig` has it all)."""

    batch_size: int  # windows (or stream rows) per global batch
    context_length: int  # tokens per window (the BPTT length for a stream)
    grad_accum: int  # micro-batches per update
    mask_token_id: int  # "mlm": the id of [MASK]
    mlm_probability: float  # "mlm": share of positions chosen
    dpo_beta: float  # "dpo": strength of the pull toward the reference model


def logits_of(out) -> torch.Tensor:
    """A model's logits: recurrent models return ``(logits, state)``."""
    return out[0] if isinstance(out, tuple) else out


class NextToken:
    """``"clm"``: random windows, mean next-token NLL (a GPT, or any model of ids -> logits)."""

    def __init__(self, config: BatchSpec, train_ids: torch.Tensor, vocab_size: int) -> None:
        self.c, self.ids = config, train_ids

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The next global training batch ``(x, y)``, each ``(B, T)``."""
        return random_windows(self.ids, self.c.batch_size, self.c.context_length, generator=generator)

    def eval_batch(self, ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One fixed evaluation batch of ``ids``."""
        return random_windows(ids, self.c.batch_size, self.c.context_length, generator=generator)

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int = 0) -> torch.Tensor:
        """The training loss of one micro-batch (``rows``: its first row in the global batch).

        The engine divides it by ``grad_accum`` and DistributedDataParallel averages it
        over processes, so the update follows the mean over the global batch.
        """
        return self.eval_loss(net, x, y)

    def eval_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss of one batch: mean next-token NLL."""
        return mean_nll(logits_of(net(x)).float(), y)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Stream(NextToken):
    """``"tbptt"``: the token stream cut into ``batch_size`` rows, read in order.

    Row b of every batch continues where row b of the last one stopped
    (:func:`lmcourse.data.stream_batches`), so a recurrent model carries its state
    ``(h, c)`` from batch to batch; the state is *detached*, so gradients flow back
    at most ``context_length`` steps (Zaremba et al., 2014). At the end of the
    stream a new epoch starts from the top with a fresh state.
    """

    def __init__(self, config: BatchSpec, train_ids: torch.Tensor, vocab_size: int) -> None:
        super().__init__(config, train_ids, vocab_size)
        row_len = len(train_ids) // config.batch_size
        if row_len < 2:
            raise ValueError(f"{len(train_ids)} tokens are too few for {config.batch_size} rows")
        self.rows = train_ids[: row_len * config.batch_size].view(config.batch_size, row_len)  # (B, L)
        self.starts = list(range(0, row_len - 1, config.context_length))
        self.chunk = 0  # index of the next chunk in self.starts
        self.states: dict[int, tuple[torch.Tensor, ...]] = {}  # carried state, by first row of a micro-batch

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[self.chunk]
        end = min(start + self.c.context_length, self.rows.shape[1] - 1)
        if self.chunk == 0:
            self.states = {}  # a new epoch: every row restarts at the top of its slice
        self.chunk = (self.chunk + 1) % len(self.starts)
        return self.rows[:, start:end], self.rows[:, start + 1:end + 1]  # (B, T) each

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int = 0) -> torch.Tensor:
        state = self.states.get(rows)
        logits, state = net(x, None if state is None else detach_state(state))  # (B, T, V)
        self.states[rows] = state
        return mean_nll(logits.float(), y)

    def state_dict(self) -> dict:
        return {"chunk": self.chunk, "states": {str(k): [t.detach().cpu() for t in v] for k, v in self.states.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.chunk = state["chunk"]
        self.states = {int(k): tuple(v) for k, v in state["states"].items()}


class Masked(NextToken):
    """``"mlm"``: random windows corrupted by :func:`lmcourse.mlm.mask_tokens`, loss on chosen positions.

    Every step draws new windows and a new mask (dynamic masking, as RoBERTa does).
    """

    def __init__(self, config: BatchSpec, train_ids: torch.Tensor, vocab_size: int) -> None:
        super().__init__(config, train_ids, vocab_size)
        self.vocab_size = vocab_size
        self.chosen = 1  # positions with a label in the current global batch

    def _mask(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(x, mask_token_id=self.c.mask_token_id, vocab_size=self.vocab_size,
                           mlm_probability=self.c.mlm_probability, generator=generator)

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = self._mask(super().sample(generator)[0], generator)
        self.chosen = max(1, int((labels != IGNORE_INDEX).sum()))
        return inputs, labels

    def eval_batch(self, ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._mask(super().eval_batch(ids, generator)[0], generator)

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int = 0) -> torch.Tensor:
        # Micro-batches and processes hold different numbers of chosen positions, so a mean
        # per micro-batch would weight them unequally: sum here and divide by the global
        # count, scaled back up by the engine's / grad_accum and DDP's mean over processes.
        logits = logits_of(net(x)).float()
        total = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        return total * (self.c.grad_accum * rank_and_world()[1] / self.chosen)

    def eval_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mlm_loss(logits_of(net(x)).float(), y)


class Examples(NextToken):
    """``"sft"``: fixed examples ``(N, 2, T)``, inputs and targets; no loss where the target is ``IGNORE_INDEX``.

    :func:`lmcourse.instructions.encode_examples` builds them: the targets of the
    prompt and of the padding are ``IGNORE_INDEX``, so the loss is the mean NLL of the
    response tokens alone (each micro-batch's own mean). Each step draws
    ``batch_size`` examples with replacement.
    """

    rows = 2  # inputs, targets

    def __init__(self, config: BatchSpec, train_ids: torch.Tensor, vocab_size: int) -> None:
        super().__init__(config, train_ids, vocab_size)
        check_examples(train_ids, self.rows)

    def _draw(self, data: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_examples(data, self.rows)
        idx = torch.randint(0, len(data), (self.c.batch_size,), generator=generator)
        return data[idx, 0::2], data[idx, 1::2]  # (B, rows/2, T) each

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._draw(self.ids, generator)
        return x[:, 0], y[:, 0]  # (B, T)

    def eval_batch(self, ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._draw(ids, generator)
        return x[:, 0], y[:, 0]

    def eval_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits_of(net(x)).float()  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)


class Preference(Examples):
    """``"dpo"``: pairs ``(N, 4, T)``: chosen inputs, chosen targets, rejected inputs, rejected targets.

    The targets are ``IGNORE_INDEX`` off the response, so :func:`lmcourse.preference.sequence_logprob`
    sums the log-probabilities of the response alone. The loss is
    :func:`lmcourse.preference.dpo_loss` against ``reference``, a frozen copy of
    the model before preference tuning (its log-probabilities computed on the fly,
    without gradients).
    """

    rows = 4

    def __init__(self, config: BatchSpec, train_ids: torch.Tensor, vocab_size: int,
                 reference: nn.Module | None = None) -> None:
        super().__init__(config, train_ids, vocab_size)
        if reference is None:
            raise ValueError('objective "dpo" needs a reference model: train(..., reference=frozen_copy)')
        self.reference = reference.eval()
        for p in reference.parameters():
            p.requires_grad_(False)

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._draw(self.ids, generator)  # (B, 2, T) each: [chosen, rejected]

    def eval_batch(self, ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._draw(ids, generator)

    def eval_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x2, y2 = x.flatten(0, 1), y.flatten(0, 1)  # (2B, T): chosen and rejected interleaved
        policy = sequence_logprob(logits_of(net(x2)).float(), y2).view(B, 2)
        self.reference.to(x.device)
        with torch.no_grad():
            ref = sequence_logprob(logits_of(self.reference(x2)).float(), y2).view(B, 2)
        return dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=self.c.dpo_beta)


def check_examples(data: torch.Tensor, rows: int) -> None:
    """Raise a ``ValueError`` unless ``data`` is an integer tensor ``(N, rows, T)``."""
    if not isinstance(data, torch.Tensor) or data.dim() != 3 or data.shape[1] != rows or len(data) == 0:
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"expected examples of shape (N, {rows}, T) with N >= 1, got {shape}")
    if data.dtype != torch.long:
        raise ValueError(f"examples must be torch.long ids, got {data.dtype}")


OBJECTIVES = {"clm": NextToken, "tbptt": Stream, "mlm": Masked, "sft": Examples, "dpo": Preference}
EXAMPLE_OBJECTIVES = ("sft", "dpo")  # their data are (N, rows, T) examples, not one token stream
