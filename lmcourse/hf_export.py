"""The course's GPT as a Hugging Face GPT-2: weights, config and tokenizer in one folder.

    python -m lmcourse export gpt_char gpt_char_hf/

writes a folder that ``transformers`` loads with no lmcourse installed
(``GPT2LMHeadModel.from_pretrained``, ``AutoTokenizer.from_pretrained``, ``pipeline``).
Exporting needs ``safetensors`` and ``tokenizers``, not ``transformers``.

With its GPT-2 options (learned positions, LayerNorm, GELU, biases, pre-norm,
causal) :class:`lmcourse.transformer.GPT` *is* GPT-2 (Radford et al., 2019), so the
export renames tensors and writes a config; nothing is approximated:

* HF's ``Conv1D`` stores its weight as ``(in, out)``, the transpose of
  ``nn.Linear``'s ``(out, in)``. Both fused Q/K/V layers put ``[q | k | v]`` along
  the output with each head's coordinates contiguous inside each third (ours:
  einops ``"b t (three h d) -> three b h t d"``; HF: ``split``, then an ``(h, d)``
  view), so ``c_attn`` is our ``qkv`` transposed, with no reordering.
* the MLP's GELU is exact (``F.gelu``): ``activation_function="gelu"``, not GPT-2's
  tanh approximation ``"gelu_new"``; ``layer_norm_epsilon`` is torch's 1e-5.
* a tied model (``tie_weights``) is ``tie_word_embeddings=True`` and the file holds
  no ``lm_head.weight``; an untied one stores its head.

The weights are written in float32: the shipped checkpoints (``lmcourse/checkpoints/``) are
float16, widened exactly, so the export adds no rounding.

The tokenizer is the course's :class:`~lmcourse.tokenization.CharTokenizer` rebuilt
with ``tokenizers``: a ``WordLevel`` model whose vocabulary is the characters (same
ids), a pre-tokenizer that cuts text into single characters (spaces and newlines
included) and a ``Fuse`` decoder that joins tokens with nothing between them. Like
the course's, it refuses a character outside its vocabulary (the library raises
``WordLevel error: Missing [UNK] token``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from .lstm import LSTMConfig
from .runs import TOKENIZERS, load_pretrained, named_runs, shipped_names
from .tokenization import CharTokenizer
from .transformer import GPT, GPTConfig

try:  # the one package the export needs beyond the course's own
    from safetensors.torch import save_file
except ImportError:
    save_file = None

# ours -> HF's name inside transformer.h.{i}, and whether it is a Conv1D (stored transposed)
BLOCK_NAMES = (("ln1", "ln_1", False), ("attn.qkv", "attn.c_attn", True), ("attn.proj", "attn.c_proj", True),
               ("ln2", "ln_2", False), ("mlp.fc", "mlp.c_fc", True), ("mlp.proj", "mlp.c_proj", True))


def gpt2_incompatibilities(config: GPTConfig) -> list[str]:
    """What in ``config`` GPT-2 has no equivalent of; an empty list means the model exports.

    >>> gpt2_incompatibilities(GPTConfig())
    []
    >>> gpt2_incompatibilities(GPTConfig(positional="rope", norm="rms", bias=False))
    ['rotary positions (RoPE)', 'RMSNorm', 'bias-free layers']
    """
    c = config
    positions = {"rope": "rotary positions (RoPE)", "alibi": "ALiBi attention biases",
                 "sinusoidal": "fixed sinusoidal positions", "none": "no position signal", "learned": ""}
    checks = [(not c.causal, "bidirectional attention (a masked-LM encoder, not a left-to-right GPT)"),
              (c.positional != "learned", positions[c.positional]), (c.norm != "layer", "RMSNorm"),
              (c.mlp != "gelu", {"relu2": "a ReLU^2 MLP", "swiglu": "a SwiGLU MLP"}.get(c.mlp, "")),
              (c.qk_norm, "QK-norm"), (not c.bias, "bias-free layers"),
              (c.kv_heads != c.n_heads, "grouped-query attention"), (c.norm_position != "pre", "post-norm blocks")]
    return [why for bad, why in checks if bad]


def _listing(items: list[str]) -> str:  # "a, b and c"
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def gpt2_config(config: GPTConfig) -> dict:
    """The ``config.json`` of the GPT-2 that equals a model of this config.

    >>> cfg = gpt2_config(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=1, n_heads=2))
    >>> cfg["model_type"], cfg["activation_function"], cfg["n_positions"]
    ('gpt2', 'gelu', 8)
    """
    problems = gpt2_incompatibilities(config)
    if problems:
        raise ValueError(f"the model uses {_listing(problems)}, which GPT-2 does not have")
    c = config
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab_size, "n_positions": c.context_length, "n_embd": c.d_model,
        "n_layer": c.n_layers, "n_head": c.n_heads, "n_inner": None,  # None: 4 * n_embd, as ours
        "activation_function": "gelu",  # exact GELU (F.gelu), not GPT-2's tanh "gelu_new"
        "layer_norm_epsilon": 1e-5,  # torch's LayerNorm default, which the course uses
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attention_dropout,
        "initializer_range": 0.02, "scale_attn_weights": True,  # scores / sqrt(head size)
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": c.tie_weights, "use_cache": True,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,  # GPT-2's 50256 is not in this vocabulary
        "dtype": "float32",
    }


def gpt2_state_dict(model: GPT, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``model``'s weights under ``GPT2LMHeadModel``'s names, as contiguous ``dtype`` tensors on the CPU.

    Conv1D weights are transposed; a tied model has no ``lm_head.weight`` (HF ties it
    to ``transformer.wte.weight`` on loading). Raises ``ValueError`` if a weight of
    ``model`` has no place in GPT-2, so nothing is silently left out.

    >>> model = GPT(GPTConfig(vocab_size=10, context_length=8, d_model=16, n_layers=1, n_heads=2))
    >>> sd = gpt2_state_dict(model)
    >>> sd["transformer.h.0.attn.c_attn.weight"].shape  # (in, out): nn.Linear's (48, 16) transposed
    torch.Size([16, 48])
    """
    gpt2_config(model.config)  # raises if the architecture is not GPT-2's
    names = {"tok_emb.weight": ("transformer.wte.weight", False),
             "pos_emb.table.weight": ("transformer.wpe.weight", False),
             "ln_f.weight": ("transformer.ln_f.weight", False), "ln_f.bias": ("transformer.ln_f.bias", False)}
    for i in range(model.config.n_layers):
        for ours, theirs, conv1d in BLOCK_NAMES:
            for kind in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{kind}"] = (f"transformer.h.{i}.{theirs}.{kind}", conv1d and kind == "weight")
    if not model.config.tie_weights:
        names["head.weight"] = ("lm_head.weight", False)
    ours = model.state_dict()
    if set(ours) != set(names):
        raise ValueError(f"weights without a GPT-2 place: {sorted(set(ours) - set(names))}; "
                         f"GPT-2 weights missing: {sorted(set(names) - set(ours))}")
    out = {}
    for name, (theirs, transpose) in names.items():
        w = ours[name].detach().to("cpu", dtype)
        out[theirs] = (w.T if transpose else w).contiguous()
    return out


def hf_char_tokenizer(tokenizer: CharTokenizer) -> Tokenizer:
    """The course's character tokenizer as a ``tokenizers.Tokenizer``: same ids, same text back.

    >>> tok = CharTokenizer("hello world")
    >>> hf = hf_char_tokenizer(tok)
    >>> hf.encode("hello world").ids == tok.encode("hello world")
    True
    >>> hf.decode(tok.encode("hello world"))  # Fuse: no space put between characters
    'hello world'
    """
    # the course's ids (specials first, then the characters); "[UNK]" is not among them, so an unknown one raises
    hf = Tokenizer(models.WordLevel(vocab=dict(tokenizer.stoi), unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    hf.decoder = decoders.Fuse()  # join the tokens as they are (the default decoder puts spaces between)
    if tokenizer.special_tokens:  # e.g. "[MASK]": kept whole, never cut into characters
        hf.add_special_tokens(list(tokenizer.special_tokens))
    return hf


def check_writable(out: Path) -> None:
    """Raise unless an export can go to ``out``: ``ImportError`` without ``safetensors``, and
    ``FileExistsError`` unless ``out`` is absent or an empty folder (the learner's files stay theirs)."""
    if save_file is None:
        raise ImportError("writing model.safetensors needs the safetensors package: pip install safetensors")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; the export never overwrites "
                              f"files: give a new folder")


def export_gpt2(model: GPT, tokenizer: CharTokenizer, out: str | Path, source: str = "lmcourse") -> list[Path]:
    """Write ``model`` and ``tokenizer`` to the new folder ``out`` as a Hugging Face GPT-2; returns the files.

    ``out`` must not exist or be an empty folder: an export never overwrites
    (``FileExistsError``). The files go to a temporary folder beside ``out`` that is
    then renamed, so a failed export leaves nothing behind. ``source`` is recorded in
    the safetensors metadata (with ``"format": "pt"``, which ``transformers`` checks).
    """
    out = Path(out)
    check_writable(out)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}")
    config = gpt2_config(model.config)
    tensors = gpt2_state_dict(model)
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.config.context_length,
                        "clean_up_tokenization_spaces": False}  # no " ." -> "." rewriting: decode is exact
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": source})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
        hf_char_tokenizer(tokenizer).save(str(tmp / "tokenizer.json"))
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():  # safetensors writes its file private (0600), as mkdtemp its folder: give
            os.chmod(f, 0o666 & ~umask)  # them the modes of any file the learner writes
        os.chmod(tmp, 0o777 & ~umask)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out.iterdir())


def exportable_names() -> list[str]:
    """The shipped models that have a GPT-2 form."""
    runs = named_runs()
    return [n for n in shipped_names()
            if isinstance(runs[n].model, GPTConfig) and not gpt2_incompatibilities(runs[n].model)]


def check_exportable(name: str) -> None:
    """Raise ``ValueError`` (one line, saying why) unless shipped model ``name`` exports to GPT-2."""
    ok = ", ".join(exportable_names())
    if name not in shipped_names():
        raise ValueError(f"no shipped model {name!r}; the shipped models are: {', '.join(shipped_names())} "
                         f"(these export: {ok})")
    spec = named_runs()[name]
    lstm = isinstance(spec.model, LSTMConfig)
    problems = [] if lstm else gpt2_incompatibilities(spec.model)
    if lstm or problems:
        why = "it is an LSTM, not a transformer" if lstm else f"it uses {_listing(problems)}, which GPT-2 does not have"
        raise ValueError(f"cannot export {name} ({spec.about}): {why}; only GPT-2-style models export "
                         f"(learned positions, LayerNorm, GELU, biases, pre-norm, causal): {ok}")


def main(argv: list[str] | None = None) -> int:
    """``python -m lmcourse export MODEL OUT``: 0 when written, 2 with a one-line error on stderr."""
    parser = argparse.ArgumentParser(prog="python -m lmcourse export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="MODEL", help=f"a shipped GPT-2-style model: {', '.join(exportable_names())}")
    parser.add_argument("out", metavar="OUT", type=Path, help="a new (or empty) folder to write")
    args = parser.parse_args(argv)
    try:
        check_exportable(args.model)
        check_writable(args.out)  # before loading anything
        model = load_pretrained(args.model)
        tokenizer = TOKENIZERS[named_runs()[args.model].tokenizer]()
        files = export_gpt2(model, tokenizer, args.out,
                            source=f"lmcourse {args.model} (shipped in float16, widened to float32)")
    except (ValueError, ImportError, OSError) as err:
        print(f"error: {str(err).replace(chr(10), ' ')}", file=sys.stderr)  # one line
        return 2
    print(f"wrote {args.out}: {', '.join(f.name for f in files)} ({model.num_params():,} parameters, float32)")
    return 0
