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
in front and a linear layer to logits behind. :func:`train_lstm` trains it on a
contiguous token stream (Zaremba et al., 2014): the hidden state is carried from
batch to batch and *detached*, so gradients flow back at most ``bptt`` steps.

    python -m lmcourse.lstm train [--steps N] [--out PATH]

reproduces the checkpoint the package ships (seeded, on the CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .shipped import CHECKPOINT_DIR, load_weights, sha256, write_manifest_entry
from .shipped import save_weights as save_checkpoint  # config + float16 weights, written atomically
from .data import as_tensor, stream_batches

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (L, B, H)
PRETRAINED = "lstm_char"


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
        if idx.dim() != 2:
            raise ValueError(f"expected token ids of shape (B, T), got {tuple(idx.shape)}")
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
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    state, total, count = None, 0.0, 0
    for x, y in stream_batches(ids, batch_size, bptt):
        logits, state = model(x.to(device), state)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train_lstm` trains: batching, optimizer, clipping, evaluation."""

    steps: int = 2000  # optimizer steps (one bptt chunk of every row each)
    batch_size: int = 32  # B: rows of the contiguous stream, trained in parallel
    bptt: int = 128  # T: steps the gradient flows back before the state is detached
    lr: float = 3e-3  # AdamW peak learning rate, cosine-decayed to lr/10
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    clip: float = 1.0  # max global gradient norm
    eval_every: int = 500  # evaluate on the validation ids every this many steps
    seed: int = 0  # torch.manual_seed when training starts: the dropout masks (seed before building the model too)


def _stream(ids: torch.Tensor, batch_size: int, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
    """Endless epochs of :func:`stream_batches`; the flag marks the first chunk of an epoch."""
    while True:
        for k, (x, y) in enumerate(stream_batches(ids, batch_size, bptt)):
            yield x, y, k == 0


def train_lstm(
    model: LSTMLM, train_ids, val_ids=None, config: TrainConfig = TrainConfig(),
    log: Callable[[str], None] | None = None,
) -> dict[str, list]:
    """Train ``model`` in place with TBPTT, AdamW and gradient clipping.

    Returns a history: ``step``, ``train_loss`` (every step, nats/token) and
    ``val_step``, ``val_loss`` (every ``eval_every`` steps and at the end, if
    ``val_ids`` is given).
    """
    torch.manual_seed(config.seed)
    device = model.head.weight.device
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(  # cosine from lr to lr/10
        opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps)))
    hist: dict[str, list] = {"step": [], "train_loss": [], "val_step": [], "val_loss": []}
    batches = _stream(as_tensor(train_ids), config.batch_size, config.bptt)
    model.train()
    state = None
    for step in range(1, config.steps + 1):
        x, y, new_epoch = next(batches)
        x, y = x.to(device), y.to(device)
        if new_epoch:
            state = None  # row b restarts at the top of its slice: forget the old text
        else:
            state = detach_state(state)  # keep the values, drop the graph (truncation)
        logits, state = model(x, state)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)  # rescale if ||g|| > clip
        opt.step()
        sched.step()
        hist["step"].append(step)
        hist["train_loss"].append(loss.item())
        if val_ids is not None and (step % config.eval_every == 0 or step == config.steps):
            hist["val_step"].append(step)
            hist["val_loss"].append(evaluate(model, val_ids))
            if log:
                log(f"step {step}: train {loss.item():.3f}  val {hist['val_loss'][-1]:.3f} nats/token")
    model.eval()
    return hist


@torch.no_grad()
def generate(
    model: LSTMLM, prompt: list[int], n: int, temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Sample ``n`` tokens after ``prompt`` one at a time, carrying the state.

    Sampling draws from ``generator`` on the CPU, so a seed gives the same text on
    every device (as far as the logits agree).
    """
    if not prompt:
        raise ValueError("the prompt needs at least one token")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    logits, state = model(torch.tensor([prompt], device=device))  # read the whole prompt
    out: list[int] = []
    for _ in range(n):
        probs = torch.softmax(logits[0, -1].double().cpu() / temperature, dim=-1)  # (V,)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------
# The shipped checkpoint

PRETRAINED_CONFIG = LSTMConfig(vocab_size=75, embed_dim=64, hidden_size=256, num_layers=2, dropout=0.1)
PRETRAINED_TRAIN = TrainConfig(steps=3000)
REPRODUCE = "python -m lmcourse.lstm train"


def load_pretrained_lstm(path: str | Path | None = None, device: torch.device | str = "cpu") -> LSTMLM:
    """The shipped character-level LSTM (float32, eval mode).

    Raises ``FileNotFoundError`` if the file is missing and ``ValueError`` if its
    weights do not fit the architecture its config describes.
    """
    path = Path(path) if path is not None else CHECKPOINT_DIR / f"{PRETRAINED}.pt"
    return load_weights(path, lambda cfg: LSTMLM(LSTMConfig(**cfg)), "LSTMLM", REPRODUCE, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse.lstm")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the shipped character LSTM (seeded, CPU)")
    p.add_argument("--steps", type=int, default=PRETRAINED_TRAIN.steps)
    p.add_argument("--out", type=Path, default=CHECKPOINT_DIR / f"{PRETRAINED}.pt")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: bit-reproducible, and fastest on a busy CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from .data import load_shakespeare
    from .metrics import bits_per_char, perplexity
    from .tokenization import shakespeare_char_tokenizer

    tok = shakespeare_char_tokenizer()
    train_ids = as_tensor(tok.encode(load_shakespeare("train")))
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))
    cfg = PRETRAINED_TRAIN.__class__(**{**asdict(PRETRAINED_TRAIN), "steps": args.steps})
    torch.manual_seed(cfg.seed)
    model = LSTMLM(PRETRAINED_CONFIG)
    start = time.perf_counter()
    train_lstm(model, train_ids, val_ids, cfg,
               log=lambda s: print(f"{s}  ({time.perf_counter() - start:.0f} s)", flush=True))
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out)
    val = evaluate(load_pretrained_lstm(args.out), val_ids)  # the number of the stored fp16 weights
    entry = {
        "name": args.out.stem, "file": args.out.name, "command": f"{REPRODUCE} --steps {args.steps}",
        "config": asdict(PRETRAINED_CONFIG), "train_config": asdict(cfg), "steps": cfg.steps,
        "val_nats_per_char": round(val, 4), "val_perplexity": round(perplexity(val), 3),
        "val_bits_per_char": round(bits_per_char(val), 4), "parameters": num_params(model),
        "sha256": sha256(args.out), "dtype": "float16", "train_seconds": round(seconds),
    }
    write_manifest_entry(entry, args.out.parent)
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
