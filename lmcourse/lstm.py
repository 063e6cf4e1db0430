"""The LSTM language model, trained with truncated backpropagation through time.

A recurrent model reads one token at a time and keeps a running summary of the
past, ``h_t = f(h_{t-1}, x_t)``. The long short-term memory cell (Hochreiter and
Schmidhuber, 1997; forget gate from Gers et al., 2000) makes ``f`` a set of
*gates* around an additive cell state ``c_t``, so gradients survive many steps::

    i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
    f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
    g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     candidate
    o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

:func:`lstm_cell` is that step written out; :class:`ScratchLSTM` loops it over
layers and time with ``torch.nn.LSTM``'s parameter names and layout, so the two
load each other's weights and are tested equal. :class:`LSTMLM` puts an embedding
in front and a linear layer to logits behind. The engine of :mod:`lmcourse.train`
trains it on a contiguous token stream with ``TrainConfig(objective="tbptt")``
(Zaremba et al., 2014): the hidden state is carried from batch to batch and
*detached*, so gradients flow back at most ``bptt`` steps.

    python -m lmcourse train --config lstm_char

reproduces the checkpoint the package ships (seeded, on the CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import check_ids, stream_batches
from .decoding import sample_next
from .device import eval_mode

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (L, B, H)


@dataclass(frozen=True)
class LSTMConfig:
    """The shape of an :class:`LSTMLM` (frozen: a model's config never changes)."""

    vocab_size: int = 75  # number of token ids (the course's character vocabulary)
    embed_dim: int = 64  # size of each token's embedding vector, the LSTM's input
    hidden_size: int = 256  # H: size of h_t and c_t in every layer
    num_layers: int = 2  # stacked LSTM layers; layer l reads layer l-1's h_t
    dropout: float = 0.1  # on the embeddings, between layers and before the output layer
    tie_weights: bool = False  # output layer = embedding matrix (needs embed_dim == hidden_size)
    scratch: bool = False  # run the from-scratch ScratchLSTM instead of torch.nn.LSTM

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and self.embed_dim != self.hidden_size:
            raise ValueError(
                f"tie_weights needs embed_dim == hidden_size, got {self.embed_dim} and {self.hidden_size}"
            )


def lstm_cell(
    x: torch.Tensor, state: State, w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: torch.Tensor, b_hh: torch.Tensor,
) -> State:
    """One LSTM step: ``(h_{t-1}, c_{t-1})`` and input ``x_t`` to ``(h_t, c_t)``.

    ``x`` is ``(B, I)``, ``h`` and ``c`` are ``(B, H)``; the weights are stacked in
    PyTorch's gate order (input, forget, candidate, output): ``w_ih`` ``(4H, I)``,
    ``w_hh`` ``(4H, H)``, biases ``(4H,)``.

    >>> B, I, H = 2, 3, 4
    >>> z = torch.zeros
    >>> h, c = lstm_cell(z(B, I), (z(B, H), z(B, H)), z(4 * H, I), z(4 * H, H), z(4 * H), z(4 * H))
    >>> h.shape, c.abs().max().item()
    (torch.Size([2, 4]), 0.0)
    """
    h, c = state
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)  # each (B, H)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g  # keep part of the old memory, write part of the candidate
    h = o * torch.tanh(c)  # expose part of the memory
    return h, c


class LSTMCell(nn.Module):
    """A single LSTM cell with its own weights (same layout as ``nn.LSTMCell``)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, state: State) -> State:
        return lstm_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class ScratchLSTM(nn.Module):
    """A multi-layer, batch-first LSTM built on :func:`lstm_cell`, a loop over time.

    Its parameters have ``nn.LSTM``'s names (``weight_ih_l0``, ...), so
    ``ScratchLSTM(...).load_state_dict(nn_lstm.state_dict())`` just works.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_size, self.num_layers, self.dropout = hidden_size, num_layers, dropout
        bound = 1.0 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size
            for name, shape in (("weight_ih", (4 * hidden_size, n_in)), ("weight_hh", (4 * hidden_size, hidden_size)),
                                ("bias_ih", (4 * hidden_size,)), ("bias_hh", (4 * hidden_size,))):
                self.register_parameter(f"{name}_l{layer}", nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h0, c0 = state  # each (L, B, H)
        hs, cs = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout)  # between layers only, as nn.LSTM does
            w = [getattr(self, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h, c = h0[layer], c0[layer]  # (B, H)
            outputs = []
            for t in range(x.shape[1]):  # the sequential part: step t needs step t-1
                h, c = lstm_cell(x[:, t], (h, c), *w)
                outputs.append(h)
            x = torch.stack(outputs, dim=1)  # (B, T, H)
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))


class LSTMLM(nn.Module):
    """Embedding -> LSTM layers -> dropout -> linear: logits ``(B, T, V)`` and the new state.

    >>> model = LSTMLM(LSTMConfig(vocab_size=10, embed_dim=8, hidden_size=8, num_layers=2))
    >>> logits, (h, c) = model(torch.zeros(3, 5, dtype=torch.long))
    >>> tuple(logits.shape), tuple(h.shape)
    ((3, 5, 10), (2, 3, 8))
    """

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        rnn_cls = ScratchLSTM if config.scratch else nn.LSTM
        kwargs = {} if config.scratch else {"batch_first": True}
        self.rnn = rnn_cls(config.embed_dim, config.hidden_size, config.num_layers,
                           dropout=config.dropout if config.num_layers > 1 else 0.0, **kwargs)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embed.weight  # (V, H) is (V, E) when E == H

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The all-zero ``(h, c)``, each ``(num_layers, B, hidden_size)``."""
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        p = self.head.weight
        return (torch.zeros(shape, device=device or p.device, dtype=p.dtype),
                torch.zeros(shape, device=device or p.device, dtype=p.dtype))

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        check_ids(idx, self.config.vocab_size, batched=True)
        if state is None:
            state = self.init_state(idx.shape[0], idx.device)
        x = self.drop(self.embed(idx))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H); h, c each (L, B, H)
        return self.head(self.drop(out)), state  # (B, T, V)


def detach_state(state: State) -> State:
    """Cut the graph behind ``(h, c)``: values carry on, gradients stop here (TBPTT)."""
    return state[0].detach(), state[1].detach()


def num_params(model: nn.Module) -> int:
    """Number of distinct trainable parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate(model: LSTMLM, ids, batch_size: int = 32, bptt: int = 256) -> float:
    """Mean NLL (nats per token) of ``ids`` in stream order, state carried across chunks."""
    device = model.head.weight.device
    state, total, count = None, 0.0, 0
    with eval_mode(model):
        for x, y in stream_batches(ids, batch_size, bptt):
            logits, state = model(x.to(device), state)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum").item()
            count += y.numel()
    return total / count


@torch.no_grad()
def generate(
    model: LSTMLM, prompt: list[int], n: int, temperature: float = 1.0,
    generator: torch.Generator | None = None, top_k: int | None = None, top_p: float | None = None,
) -> list[int]:
    """Sample ``n`` tokens after ``prompt`` one at a time, carrying the state.

    Each token is drawn by :func:`lmcourse.decoding.sample_next` (temperature,
    top-k, top-p: the same chain as the GPT's ``generate``) from float64 logits on
    the CPU, so a seed gives the same text on every device (as far as the logits agree).
    """
    if not prompt:
        raise ValueError("the prompt needs at least one token")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    device = model.head.weight.device
    ids = torch.tensor([prompt])
    check_ids(ids, model.config.vocab_size, batched=True)
    out: list[int] = []
    with eval_mode(model):
        logits, state = model(ids.to(device))  # read the whole prompt
        for _ in range(n):
            nxt = sample_next(logits[:, -1].double().cpu(), temperature=temperature, top_k=top_k, top_p=top_p,
                              generator=generator)  # (1,)
            out.append(int(nxt))
            logits, state = model(nxt[:, None].to(device), state)
    return out
