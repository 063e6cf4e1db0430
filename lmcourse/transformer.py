"""The transformer language model (GPT), with a choice of positions, norms, MLPs and tying.

The architecture is GPT-2's (Radford et al., 2019) in its pre-norm form: token
embedding (plus a position embedding, if the scheme adds one), ``n_layers``
blocks of

    x = x + Attention(LayerNorm(x))        (causal multi-head self-attention)
    x = x + MLP(LayerNorm(x))              (D -> 4D -> D with GELU)

then a final LayerNorm and the output head ``D -> V`` that gives the logits.

With ``tie_weights`` the output head reuses the embedding matrix
``E in R^{V x D}`` (Press & Wolf, 2017, "Using the Output Embedding to Improve
Language Models"): logits = h E^T, one tensor, ``V x D`` fewer parameters.

``causal=False`` gives the bidirectional encoder of the masked LM (chapter 10);
``norm``, ``mlp``, ``qk_norm`` and ``positional="rope"`` give today's recipe
(chapter 11): RMSNorm, SwiGLU or ReLU^2, QK-norm, rotary positions. ``n_kv_heads``
gives grouped-query or multi-query attention (chapter 8): fewer key/value heads,
a smaller key/value cache.

The forward pass takes a position ``offset`` (the position of the first token)
and, for generation (chapter 8), a key/value ``cache``
(:class:`lmcourse.generation.KVCache`): then ``ids`` are only the *new* tokens,
at positions ``offset = cache.length ..``, and each layer attends to its cached
keys and values as well as the new ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVStore, MultiHeadAttention
from .data import check_ids
from .positions import ALiBi, LearnedPositions, RotaryEmbedding, SinusoidalPositions

POSITIONAL = ("learned", "sinusoidal", "rope", "alibi", "none")
NORMS = ("layer", "rms")
MLPS = ("gelu", "swiglu", "relu2")
NORM_POSITIONS = ("pre", "post")
MIXERS = ("attention", "mean", "none")
INIT_STD = 0.02  # GPT-2's initial standard deviation of every weight


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a :class:`GPT`; the defaults give a 0.8M-parameter character model."""

    vocab_size: int = 65  # V: number of token ids (rows of the embedding)
    context_length: int = 64  # the longest sequence the model accepts (size of position tables)
    d_model: int = 128  # D: width of the residual stream
    n_layers: int = 4  # number of transformer blocks
    n_heads: int = 4  # attention heads per block; head size = d_model / n_heads
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches
    attn_dropout: float | None = None  # on the attention weights only; None: same as dropout
    tie_weights: bool = True  # output head shares the token embedding matrix (chapter 6)
    positional: str = "learned"  # "learned" | "sinusoidal" | "rope" | "alibi" | "none" (chapter 5)
    bias: bool = True  # biases in the linear layers and LayerNorms
    norm: str = "layer"  # "layer" (LayerNorm, GPT-2) | "rms" (RMSNorm, Zhang & Sennrich 2019)
    mlp: str = "gelu"  # "gelu" (GPT-2) | "swiglu" (Shazeer 2020) | "relu2" (So et al. 2021)
    qk_norm: bool = False  # RMSNorm on each head's queries and keys before the scores
    causal: bool = True  # False: every position sees every other (the encoder of chapter 10)
    n_kv_heads: int | None = None  # key/value heads: None = n_heads; fewer = grouped-query (chapter 8)
    norm_position: str = "pre"  # "pre": x + f(norm(x)) (GPT-2) | "post": norm(x + f(x)) (Vaswani et al. 2017)
    # how positions exchange information (chapter 4): "attention" | "mean" (equal weights on every visible
    # position: a bag of words) | "none" (no exchange: each position sees only its own token and position)
    mixer: str = "attention"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ValueError(f"n_kv_heads must be a positive divisor of n_heads ({self.n_heads}), "
                             f"got {self.n_kv_heads}")
        if self.positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {self.positional!r}")
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.positional == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"RoPE needs an even head size, got {self.d_model // self.n_heads}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.mlp not in MLPS:
            raise ValueError(f"mlp must be one of {MLPS}, got {self.mlp!r}")
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        if self.norm_position not in NORM_POSITIONS:
            raise ValueError(f"norm_position must be one of {NORM_POSITIONS}, got {self.norm_position!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn_dropout is not None and not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError(f"attn_dropout must be None or in [0, 1), got {self.attn_dropout}")

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads: ``n_kv_heads``, or ``n_heads`` when it is None."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def attention_dropout(self) -> float:
        """Dropout on the attention weights: ``attn_dropout``, or ``dropout`` when it is None.

        On a CPU, any attention dropout sends ``scaled_dot_product_attention`` to its slow
        math path (about 3x a training step of chapter 11's model on one core, measured);
        ``attn_dropout=0.0`` keeps the fused kernel while ``dropout`` still regularises
        the embeddings and residual branches.
        """
        return self.dropout if self.attn_dropout is None else self.attn_dropout


def make_norm(config: GPTConfig, dim: int | None = None) -> nn.Module:
    """LayerNorm or RMSNorm over the last ``dim`` (default ``d_model``) features."""
    dim = config.d_model if dim is None else dim
    if config.norm == "rms":
        return nn.RMSNorm(dim)  # x / rms(x) * g: no mean subtracted, no bias
    return nn.LayerNorm(dim, bias=config.bias)


class MLP(nn.Module):
    """The position-wise feed-forward network, ``D -> H -> D``.

    * ``gelu``: ``proj(GELU(fc(x)))`` with ``H = 4D`` (GPT-2);
    * ``relu2``: ``proj(ReLU(fc(x))^2)`` with ``H = 4D`` (So et al., 2021, "Primer");
    * ``swiglu``: ``proj(SiLU(x W_gate) * (x W_up))`` with ``H = 8D/3`` rounded, so the
      three matrices hold as many weights as the other two MLPs' two (Shazeer, 2020).
      ``fc`` computes ``[x W_gate, x W_up]`` in one matrix.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        D, self.kind = config.d_model, config.mlp
        hidden = 4 * D if self.kind != "swiglu" else round(8 * D / 3)
        self.fc = nn.Linear(D, 2 * hidden if self.kind == "swiglu" else hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, D, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, H) or (B, T, 2H)
        if self.kind == "gelu":
            h = F.gelu(h)
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        return self.dropout(self.proj(h))  # (B, T, C)


class Block(nn.Module):
    """One transformer block: attention then MLP, each on a residual branch.

    Pre-norm (GPT-2, the default): ``x + f(norm(x))``, so the residual stream is an
    untouched sum from the embedding to the output. Post-norm (the original
    transformer, ``config.norm_position == "post"``): ``norm(x + f(x))``, a norm on the
    stream itself after every add, which Xiong et al. (2020) show gives the last
    layers large gradients at initialisation, hence its need for warmup.
    ``causal=False`` gives the bidirectional block of an encoder (chapter 10).
    """

    def __init__(self, config: GPTConfig, causal: bool = True) -> None:
        super().__init__()
        self.ln1 = make_norm(config)
        self.attn = None if config.mixer == "none" else MultiHeadAttention(
            config.d_model, config.n_heads, causal=causal, dropout=config.dropout,
            attn_dropout=config.attention_dropout, bias=config.bias, qk_norm=config.qk_norm,
            n_kv_heads=config.kv_heads, uniform=config.mixer == "mean")
        self.ln2 = make_norm(config)
        self.mlp = MLP(config)
        self.post_norm = config.norm_position == "post"

    def forward(self, x: torch.Tensor, *, bias: torch.Tensor | None = None, rotary: RotaryEmbedding | None = None,
                offset: int = 0, need_weights: bool = False,
                cache: KVStore | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.attn is None:  # mixer "none": no position reads another
            if need_weights or cache is not None:
                raise ValueError('a model with mixer="none" has no attention weights and no key/value cache')
            x = self.ln1(x) if self.post_norm else x
            return (self.ln2(x + self.mlp(x)) if self.post_norm else x + self.mlp(self.ln2(x))), None
        if self.post_norm:  # x = norm(x + Attn(x)); x = norm(x + MLP(x))
            a = self.attn(x, bias=bias, rotary=rotary, offset=offset, need_weights=need_weights, cache=cache)
            a, w = a if need_weights else (a, None)
            x = self.ln1(x + a)
            return self.ln2(x + self.mlp(x)), w
        a = self.attn(self.ln1(x), bias=bias, rotary=rotary, offset=offset, need_weights=need_weights, cache=cache)
        a, w = a if need_weights else (a, None)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, w  # (B, T, C), (B, H, T, T) or None


def position_modules(c: GPTConfig) -> tuple[LearnedPositions | SinusoidalPositions | None,
                                            RotaryEmbedding | None, ALiBi | None]:
    """The modules of ``c.positional`` as ``(pos_emb, rotary, alibi)``: exactly one is not None.

    ``"none"`` gives none at all: the model sees no position, only what a causal
    mask lets it infer (Haviv et al., 2022).

    Added positions (learned, sinusoidal) go in ``pos_emb``; RoPE rotates queries and
    keys; ALiBi biases the scores. The fixed ones hold non-persistent buffers. The GPT
    and the masked LM of chapter 10 build their positions with this one function.
    """
    if c.positional == "none":
        return None, None, None
    if c.positional == "learned":
        return LearnedPositions(c.context_length, c.d_model), None, None
    if c.positional == "sinusoidal":
        # The table's entries are O(1) while token embeddings start at std 0.02: added
        # unscaled, positions drown the tokens and a briefly trained model learns far
        # slower. We scale the table to the embeddings' size (Vaswani et al. instead
        # multiply the embeddings by sqrt(D), which suits their initialisation).
        return SinusoidalPositions(c.d_model, c.context_length, scale=INIT_STD), None, None
    if c.positional == "rope":
        return None, RotaryEmbedding(c.d_model // c.n_heads, c.context_length), None
    return None, None, ALiBi(c.n_heads)  # -m |i - j|: symmetric: an encoder cannot tell left from right


class GPT(nn.Module):
    """A transformer language model: ``model(ids)`` gives logits ``(B, T, V)``.

    ``config.causal`` (default) makes it a decoder (GPT): position t attends to
    0..t. ``causal=False`` makes every block bidirectional: the encoder of the
    masked LM of chapter 10 (:mod:`lmcourse.mlm`) is this class.

    With ``config.tie_weights`` there is no separate head: the logits are
    ``F.linear(h, E)``, the hidden states times the embedding matrix transposed, so
    the tie is one tensor used twice and survives ``.to()``, ``to_empty`` and
    ``load_state_dict`` without any hook.

    >>> model = GPT(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=1, n_heads=2))
    >>> model(torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 10])
    >>> model.head is None  # tied: the logits use tok_emb.weight
    True
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb, self.rotary, self.alibi = position_modules(c)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c, causal=c.causal) for _ in range(c.n_layers))
        # post-norm: the last block already ends in a norm (Vaswani et al. have no final one)
        self.ln_f = make_norm(c) if c.norm_position == "pre" else nn.Identity()
        # untied: a head of its own, V x D; tied: None, and logits() uses tok_emb.weight
        self.head = None if c.tie_weights else nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layers), one per residual add.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * c.n_layers))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The output layer: final norm, then ``D -> V`` (``h E^T`` when tied)."""
        h = self.ln_f(h)  # (B, T, C)
        return F.linear(h, self.tok_emb.weight) if self.head is None else self.head(h)  # (B, T, V)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def num_params(self) -> int:
        """The number of distinct parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def _run(self, ids: torch.Tensor, offset: int, need_weights: bool,
             cache=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_ids(ids, self.config.vocab_size, batched=True)
        if cache is not None:
            if not self.config.causal:
                raise ValueError("a key/value cache serves left-to-right generation: this model is bidirectional")
            if len(cache.layers) != len(self.blocks):
                raise ValueError(f"the cache has {len(cache.layers)} layers, the model {len(self.blocks)}")
            if offset != cache.length:
                raise ValueError(f"with a cache the new tokens start at offset = cache.length = {cache.length}, "
                                 f"got offset={offset}")
        T = ids.shape[1]
        if offset + T > self.config.context_length:
            raise ValueError(
                f"sequence of length {offset + T} is longer than the model's context_length "
                f"{self.config.context_length}"
            )
        x = self.tok_emb(ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(T, offset)  # (T, C) broadcast over the batch
        x = self.drop(x)
        if self.alibi is None:
            bias = None
        else:  # relative, so no offset; with a cache the T new queries see offset + T keys
            bias = self.alibi(T) if cache is None else self.alibi(T, offset + T)  # (H, T, Tk)
        maps = []
        for i, block in enumerate(self.blocks):
            x, w = block(x, bias=bias, rotary=self.rotary, offset=offset, need_weights=need_weights,
                         cache=None if cache is None else cache.layers[i])
            if w is not None:
                maps.append(w)
        return self.logits(x), maps  # (B, T, V)

    def forward(self, ids: torch.Tensor, offset: int = 0, cache=None) -> torch.Tensor:
        """Logits ``(B, T, V)`` for token ids ``(B, T)`` at positions ``offset .. offset+T-1``.

        With a ``cache`` (:class:`lmcourse.generation.KVCache` holding the keys and
        values of positions ``0 .. offset-1``), ``ids`` are the new tokens only; their
        keys and values are appended to it.
        """
        return self._run(ids, offset, need_weights=False, cache=cache)[0]

    @torch.no_grad()
    def attention_maps(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """The attention weights of every layer, each ``(B, H, T, T)`` (rows sum to 1)."""
        return self._run(ids, 0, need_weights=True)[1]


class ScaledEmbedding(nn.Embedding):
    """Token embeddings multiplied by ``multiplier`` on the way in (Vaswani et al.: sqrt(D)).

    Only the input is scaled: a tied output layer reads ``weight`` itself.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, multiplier: float) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self.multiplier = multiplier

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.multiplier


def scale_input(model: GPT, multiplier: float) -> GPT:
    """``model`` with its token embeddings multiplied by ``multiplier`` on the way in, in place.

    The embedding matrix stays the same :class:`~torch.nn.Parameter` (same values; a tied
    output layer still reads it unscaled), so a model built from a seed and then scaled
    starts from that seed's weights.
    """
    scaled = ScaledEmbedding(model.config.vocab_size, model.config.d_model, multiplier)
    scaled.weight = model.tok_emb.weight
    model.tok_emb = scaled
    return model
