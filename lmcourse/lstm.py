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

Two other cells run in the same model for comparison (``LSTMConfig(cell=...)``):
the plain tanh recurrence ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``
(Elman, 1990) and the gated recurrent unit, GRU (Cho et al., 2014), which has
two gates and no separate cell state. :func:`state_gradient_norms` measures how
the gradient of a loss at step t fades with the distance k to ``h_{t-k}``: the
product of k Jacobians that makes the tanh recurrence hard to train (Bengio et
al., 1994; Hochreiter, 1991).
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

State = tuple[torch.Tensor, ...]  # LSTM: (h, c); GRU and tanh RNN: (h,); each (L, B, H)
CELLS = ("lstm", "gru", "rnn")


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
    cell: str = "lstm"  # "lstm" | "gru" (Cho et al., 2014) | "rnn" (the plain tanh recurrence)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.scratch and self.cell != "lstm":
            raise ValueError(f"scratch=True runs the from-scratch LSTM; it has no {self.cell!r} cell")
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


def rnn_cell(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """One step of the plain tanh recurrence, ``tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (as ``nn.RNNCell``).

    >>> z = torch.zeros
    >>> rnn_cell(z(2, 3), z(2, 4), z(4, 3), z(4, 4), z(4), torch.ones(4))[0]
    tensor([0.7616, 0.7616, 0.7616, 0.7616])
    """
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)  # (B, H)


def gru_cell(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """One GRU step (Cho et al., 2014) in ``nn.GRUCell``'s layout: gates stacked (reset, update, new)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)       reset gate
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)       update gate
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))    candidate
        h' = (1 - z) * n + z * h

    >>> z = torch.zeros
    >>> gru_cell(z(1, 2), torch.ones(1, 3), z(9, 2), z(9, 3), z(9), z(9))  # z = 1/2, n = 0
    tensor([[0.5000, 0.5000, 0.5000]])
    """
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)  # (B, H) each
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h  # an interpolation: z = 1 keeps h unchanged


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

    ``config.cell`` swaps the LSTM layers for GRU or tanh-RNN layers (``nn.GRU``,
    ``nn.RNN``); their state is ``(h,)`` instead of ``(h, c)``.

    >>> model = LSTMLM(LSTMConfig(vocab_size=10, embed_dim=8, hidden_size=8, num_layers=2))
    >>> logits, (h, c) = model(torch.zeros(3, 5, dtype=torch.long))
    >>> tuple(logits.shape), tuple(h.shape)
    ((3, 5, 10), (2, 3, 8))
    """

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        rnn_cls = ScratchLSTM if config.scratch else {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.cell]
        kwargs = {} if config.scratch else {"batch_first": True}
        self.rnn = rnn_cls(config.embed_dim, config.hidden_size, config.num_layers,
                           dropout=config.dropout if config.num_layers > 1 else 0.0, **kwargs)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embed.weight  # (V, H) is (V, E) when E == H

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The all-zero ``(h, c)`` (``(h,)`` for a GRU or tanh RNN), each ``(num_layers, B, hidden_size)``."""
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        p = self.head.weight
        parts = 2 if self.config.cell == "lstm" else 1
        return tuple(torch.zeros(shape, device=device or p.device, dtype=p.dtype) for _ in range(parts))

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        check_ids(idx, self.config.vocab_size, batched=True)
        if state is None:
            state = self.init_state(idx.shape[0], idx.device)
        x = self.drop(self.embed(idx))  # (B, T, E)
        if self.config.cell == "lstm":
            out, state = self.rnn(x, state)  # (B, T, H); h, c each (L, B, H)
        else:
            out, h = self.rnn(x, state[0])  # (B, T, H); h (L, B, H)
            state = (h,)
        return self.head(self.drop(out)), state  # (B, T, V)


def detach_state(state: State) -> State:
    """Cut the graph behind ``(h, c)`` (or ``(h,)``): values carry on, gradients stop here (TBPTT)."""
    return tuple(s.detach() for s in state)


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
def stream_nll(model: LSTMLM, ids, batch_size: int = 32, bptt: int = 256, warmup: int = 256) -> torch.Tensor:
    """The NLL (nats) of every token of ``ids`` after the first, in order: a float32 CPU tensor of ``len(ids) - 1``.

    Entry ``i`` is ``-ln P(ids[i + 1] | ids[:i + 1])``, the same targets, in the same
    order, as ``-NGramLM.token_log_probs(ids)``. The targets are cut into ``batch_size``
    contiguous pieces read side by side (state carried from chunk to chunk); each
    piece after the first starts reading ``warmup`` tokens early, without scoring
    them, so no scored token meets a cold (all-zero) state with less than ``warmup``
    tokens of context behind it. (:func:`evaluate` instead drops the tail of the
    stream and scores each row from a cold state.)

    >>> model = LSTMLM(LSTMConfig(vocab_size=5, embed_dim=4, hidden_size=4, num_layers=1))
    >>> stream_nll(model, torch.arange(5).repeat(4), batch_size=3, bptt=4, warmup=2).shape
    torch.Size([19])
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    n = len(ids)
    if n < 2:
        raise ValueError(f"ids needs at least two tokens, got {n}")
    for name, value, least in (("batch_size", batch_size, 1), ("bptt", bptt, 1), ("warmup", warmup, 0)):
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    device = model.head.weight.device
    bounds = torch.linspace(1, n, min(batch_size, n - 1) + 1).round().long().tolist()  # target index ranges
    pieces = [(max(0, a - 1 - warmup), a, e) for a, e in zip(bounds[:-1], bounds[1:], strict=True)]
    width = max(e - 1 - s for s, _, e in pieces)  # inputs ids[s : e - 1] predict ids[s + 1 : e]
    x = torch.zeros(len(pieces), width, dtype=torch.long)  # padded at the end: causal, so harmless
    y = torch.zeros_like(x)
    for row, (s, _, e) in enumerate(pieces):
        x[row, : e - 1 - s], y[row, : e - 1 - s] = ids[s : e - 1], ids[s + 1 : e]
    nll, state = [], None
    with eval_mode(model):
        for start in range(0, width, bptt):
            logits, state = model(x[:, start : start + bptt].to(device), state)  # (B, T, V)
            logp = torch.log_softmax(logits.float(), dim=-1)
            nll.append(-logp.gather(-1, y[:, start : start + bptt, None].to(device))[..., 0].cpu())
    nll = torch.cat(nll, dim=1)  # (B, width)
    out = torch.empty(n - 1)
    for row, (s, a, e) in enumerate(pieces):
        out[a - 1 : e - 1] = nll[row, a - 1 - s : e - 1 - s]  # targets ids[a .. e - 1]
    return out


def window_nll(model: LSTMLM, ids, targets, context: int, batch_size: int = 512) -> torch.Tensor:
    """The NLL (nats) of ``ids[t]`` for each ``t`` in ``targets``, reading only the ``context`` tokens before it.

    Each target gets its own cold (all-zero) state and reads ``ids[t - context : t]``,
    so the model can use at most ``context`` tokens of the past: the same
    restriction an n-gram of order ``context + 1`` works under. With ``context``
    equal to ``t`` the window starts at the stream's first token, which
    :func:`stream_nll` also reads from a cold state (tested equal). A model trained
    on a stream with its state carried rarely starts cold, so short windows also
    measure the cost of an unusual start, not only of the missing context.

    >>> model = LSTMLM(LSTMConfig(vocab_size=5, embed_dim=4, hidden_size=4, num_layers=1))
    >>> window_nll(model, torch.arange(5).repeat(4), torch.tensor([6, 19]), context=6).shape
    torch.Size([2])
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    targets = torch.as_tensor(targets, dtype=torch.long).flatten()
    check_ids(ids, model.config.vocab_size)
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    if len(targets) and (targets.min() < context or targets.max() >= len(ids)):
        raise ValueError(
            f"every target t needs {context} tokens before it and t < len(ids) = {len(ids)}; "
            f"targets run from {targets.min().item()} to {targets.max().item()}"
        )
    device = model.head.weight.device
    offsets = torch.arange(-context, 0)  # (context,)
    out = []
    with eval_mode(model), torch.no_grad():
        for chunk in targets.split(batch_size):
            x = ids[chunk[:, None] + offsets]  # (b, context)
            logits, _ = model(x.to(device))  # (b, context, V)
            logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (b, V)
            out.append(-logp.gather(-1, ids[chunk, None].to(device))[:, 0].cpu())
    return torch.cat(out) if out else torch.empty(0)


def state_gradient_norms(model: LSTMLM, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||d loss_t / d h_{t-k}||`` for k = 0 .. T-1, per row: a ``(B, T)`` tensor, column k for distance k.

    ``loss_t`` is the cross-entropy of the *last* position's prediction (``t = T - 1``)
    against ``y[:, -1]``; ``h_s`` is the hidden state at step s of every layer
    together (``(L, H)`` per row; for the LSTM, the cell state ``c_s`` is held fixed).
    The model's recurrence is run step by step with its own weights (in eval mode,
    starting from zeros) so that every ``h_s`` is a node of the graph. By the chain
    rule the gradient at distance k is a product of k step Jacobians
    ``dh_{s+1} / dh_s``: it fades (or grows) geometrically unless those are close
    to the identity, which is what the LSTM's additive cell state allows.

    >>> model = LSTMLM(LSTMConfig(vocab_size=5, embed_dim=4, hidden_size=4, num_layers=1, cell="rnn"))
    >>> state_gradient_norms(model, torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long)).shape
    torch.Size([2, 6])
    """
    check_ids(x, model.config.vocab_size, batched=True)
    check_ids(y, model.config.vocab_size, batched=True)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    c = model.config
    device = model.head.weight.device
    step = {"lstm": lstm_cell, "gru": gru_cell, "rnn": rnn_cell}[c.cell]
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    weights = [[getattr(model.rnn, f"{n}_l{layer}") for n in names] for layer in range(c.num_layers)]
    B, T = x.shape
    with eval_mode(model), torch.enable_grad():
        inputs = model.embed(x.to(device))  # (B, T, E)
        state = [tuple(s[layer] for s in model.init_state(B, device)) for layer in range(c.num_layers)]
        hs: list[list[torch.Tensor]] = []  # hs[t][layer]: (B, H)
        for t in range(T):
            inp, row = inputs[:, t], []
            for layer in range(c.num_layers):
                prev = state[layer] if c.cell == "lstm" else state[layer][0]
                new = step(inp, prev, *weights[layer])  # (h, c) for the LSTM, h otherwise
                state[layer] = new if c.cell == "lstm" else (new,)
                inp = state[layer][0]
                row.append(inp)
            hs.append(row)
        loss = F.cross_entropy(model.head(hs[-1][-1]).float(), y[:, -1].to(device), reduction="sum")
        flat = [h for row in hs for h in row]
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
    norms = torch.stack([g.pow(2).sum(-1) if g is not None else torch.zeros(B, device=device) for g in grads])
    norms = norms.view(T, c.num_layers, B).sum(1).sqrt()  # (T, B), time s = 0 .. T-1
    return norms.flip(0).T.cpu()  # (B, T): column k is distance k = T - 1 - s


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
