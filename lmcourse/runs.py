"""The course's named training runs, the registry of shipped models, and their command line.

    python -m lmcourse train --list                          # every named run
    python -m lmcourse train --config gpt_char               # rebuild a shipped model
    python -m lmcourse train --config small --steps 100      # a quick run into runs/small
    torchrun --nproc_per_node 2 -m lmcourse train --config tiny --steps 50

A named run (:class:`RunSpec`) is a model config, a :class:`lmcourse.train.TrainConfig`
and a tokenizer; the one engine of :mod:`lmcourse.train` trains every one of them
(GPT, LSTM, masked LM). :func:`load_pretrained` loads any shipped model by name,
and :func:`manifest_entry` writes every shipped model's manifest entry.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .data import as_tensor, load_shakespeare
from .device import get_device, rank_and_world
from .lstm import LSTMLM, LSTMConfig
from .lstm import evaluate as evaluate_lstm_stream
from .metrics import bits_per_char, perplexity
from .mlm import evaluate_mlm, mask_tokenizer
from .renaming import renamed_training_text
from .shipped import CHECKPOINT_DIR, load_weights, save_weights, sha256, write_manifest_entry
from .tokenization import shakespeare_char_tokenizer
from .train import History, TrainConfig, evaluate_stream, train
from .transformer import GPT, GPTConfig

TOKENIZERS = {"char": shakespeare_char_tokenizer, "char+mask": mask_tokenizer}


@dataclass(frozen=True)
class RunSpec:
    """A named training run: the model, how to train it, its tokenizer, and where it goes."""

    model: GPTConfig | LSTMConfig  # the architecture (its class picks the model class)
    train: TrainConfig  # how to train it (the objective included)
    about: str = ""  # one line for ``--list``
    tokenizer: str = "char"  # a key of TOKENIZERS
    shipped: bool = False  # writes lmcourse/checkpoints/NAME.pt and its manifest entry by default
    eval_tokens: int | None = None  # validation tokens for the final evaluation; None: all
    renamed_copies: int = 0  # train on the plays plus this many copies with characters renamed (lmcourse.renaming)


def build_model(config: GPTConfig | LSTMConfig) -> nn.Module:
    """The model a config describes: :class:`LSTMLM` for an ``LSTMConfig``, else :class:`GPT`."""
    return LSTMLM(config) if isinstance(config, LSTMConfig) else GPT(config)


def named_runs() -> dict[str, RunSpec]:
    """Every named run: ``tiny`` and ``small`` for tests, the shipped models, in course order."""
    return {
        "tiny": RunSpec(GPTConfig(vocab_size=75, context_length=32, d_model=32, n_layers=1, n_heads=2),
                        TrainConfig(steps=40, batch_size=8, context_length=32, lr=3e-3, min_lr=3e-4, warmup_steps=4,
                                    eval_every=20, eval_batches=2),
                        about="a one-layer GPT for tests (seconds)", eval_tokens=4000),
        "small": RunSpec(GPTConfig(vocab_size=75, context_length=64, d_model=64, n_layers=2, n_heads=4),
                         TrainConfig(steps=300, batch_size=16, context_length=64, lr=3e-3, min_lr=3e-4,
                                     warmup_steps=30, eval_every=100, eval_batches=4),
                         about="a two-layer GPT (about a minute)", eval_tokens=20000),
        "lstm_char": RunSpec(LSTMConfig(vocab_size=75, embed_dim=64, hidden_size=256, num_layers=2, dropout=0.1),
                             TrainConfig(steps=3000, batch_size=32, context_length=128, lr=3e-3, min_lr=3e-4,
                                         warmup_steps=0, weight_decay=0.01, grad_clip=1.0, eval_every=500,
                                         eval_batches=4, objective="tbptt"),
                             about="chapter 3's LSTM, trained with truncated BPTT", shipped=True),
        "gpt_char": RunSpec(GPTConfig(vocab_size=75, context_length=128, d_model=160, n_layers=6, n_heads=5,
                                      dropout=0.0, tie_weights=True, positional="learned"),
                            TrainConfig(steps=6500, batch_size=32, context_length=128, lr=2.5e-3, min_lr=2.5e-4,
                                        warmup_steps=200, weight_decay=0.1, grad_clip=1.0, eval_every=250,
                                        eval_batches=8, seed=0),
                            about="the GPT-2-style GPT of chapters 7-9", shipped=True),
        # gpt_char with its own output matrix: chapter 6 compares the two trained models' rows
        "gpt_char_untied": RunSpec(GPTConfig(vocab_size=75, context_length=128, d_model=160, n_layers=6, n_heads=5,
                                             dropout=0.0, tie_weights=False, positional="learned"),
                                   TrainConfig(steps=6500, batch_size=32, context_length=128, lr=2.5e-3,
                                               min_lr=2.5e-4, warmup_steps=200, weight_decay=0.1, grad_clip=1.0,
                                               eval_every=250, eval_batches=8, seed=0),
                                   about="gpt_char untied (chapter 6): same data, steps and seed", shipped=True),
        # RoPE, not ALiBi: ALiBi's -m|i - j| is symmetric, and without a causal mask an
        # encoder with only that position signal cannot tell "s_y" from "y_s" (chapter 10).
        "mlm_char": RunSpec(GPTConfig(vocab_size=76, context_length=64, d_model=128, n_layers=4, n_heads=4,
                                      positional="rope", causal=False),
                            TrainConfig(steps=1500, batch_size=32, context_length=64, lr=3e-3, min_lr=3e-4,
                                        warmup_steps=100, weight_decay=0.1, grad_clip=1.0, eval_every=250,
                                        eval_batches=4, objective="mlm", mask_token_id=0),
                            about="chapter 10's masked LM (a bidirectional GPT)", tokenizer="char+mask",
                            shipped=True),
        # Chapter 11's modern GPT: today's recipe (RoPE, RMSNorm, ReLU^2, QK-norm, Muon)
        # and a context of 512 characters, long enough to copy a name from earlier in a scene.
        # Its training plays come with 3 more copies whose characters are renamed (lmcourse.renaming),
        # so a name seen earlier in the window is best predicted by copying it, not by memorising it.
        # 5000 steps pass over the plays' text 9.5 times, hence dropout 0.1 on the residual branches.
        # Shipped run: `torchrun --nproc_per_node 2 -m lmcourse train --config gpt_modern` (the same
        # global batches as one process), 5,651 s on 2 cores; validation 1.3367 nats/char.
        "gpt_modern": RunSpec(GPTConfig(vocab_size=75, context_length=512, d_model=160, n_layers=6, n_heads=5,
                                        dropout=0.1, attn_dropout=0.0, tie_weights=False, positional="rope",
                                        bias=False, norm="rms", mlp="relu2", qk_norm=True),
                              TrainConfig(steps=5000, batch_size=16, context_length=512, lr=3e-3, min_lr=3e-4,
                                          warmup_steps=100, weight_decay=0.1, grad_clip=1.0, eval_every=250,
                                          eval_batches=4, seed=0, optimizer="muon", muon_lr=0.02),
                              about="chapter 11's modern GPT: long context, today's recipe", shipped=True,
                              renamed_copies=3),
    }


def _spec(name: str) -> RunSpec:
    runs = named_runs()
    if name not in runs:
        raise ValueError(f"no named run {name!r}; the runs are: {', '.join(runs)}")
    return runs[name]


def shipped_names() -> list[str]:
    """The names of the models the package ships, in course order."""
    return [name for name, spec in named_runs().items() if spec.shipped]


def rebuild_command(name: str) -> str:
    """The one command that reproduces shipped model ``name``."""
    return f"python -m lmcourse train --config {name}"


def load_pretrained(name: str = "gpt_char", device: torch.device | str | None = None) -> nn.Module:
    """A shipped model by name (``gpt_char``, ``lstm_char``, ``mlm_char``, ...), float32, in eval mode.

    Also takes a path to a ``.pt`` file written by a named run (the model class comes
    from its config). Raises ``FileNotFoundError`` (with the command that rebuilds
    it) if the file is missing and ``ValueError`` if its weights do not fit.

    >>> load_pretrained("lstm_char").training
    False
    """
    device = device if device is not None else "cpu"
    if str(name).endswith(".pt"):
        path = Path(name)
        return load_weights(path, _config_to_model, "model", f"the run that wrote {path}", device)
    if name not in shipped_names():
        raise ValueError(f"no shipped model {name!r}; the shipped models are: {', '.join(shipped_names())}")
    config_class = type(_spec(name).model)
    return load_weights(CHECKPOINT_DIR / f"{name}.pt", lambda cfg: build_model(config_class(**cfg)),
                        name, rebuild_command(name), device)


def _config_to_model(cfg: dict) -> nn.Module:
    """The model a saved config dict describes (an LSTM's has ``hidden_size`` and ``embed_dim``)."""
    config_class = LSTMConfig if {"hidden_size", "embed_dim"} <= set(cfg) else GPTConfig
    return build_model(config_class(**cfg))


def final_scores(model: nn.Module, spec: RunSpec, val_ids: torch.Tensor) -> dict:
    """The held-out scores a manifest records, by kind of model (stream NLL, or MLM accuracy)."""
    ids = val_ids if spec.eval_tokens is None else val_ids[:spec.eval_tokens]
    c = spec.model
    if spec.train.objective == "mlm":
        val = evaluate_mlm(model, ids, mask_token_id=spec.train.mask_token_id, num_batches=64)
        # the headline counts only positions shown as [MASK] (their answer is not in the input)
        return {"val_mask_only_accuracy": round(val["mask_only_accuracy"], 4),
                "val_masked_accuracy": round(val["accuracy"], 4),  # every chosen position
                "val_random_accuracy": round(val["random_accuracy"], 4),
                "val_kept_accuracy": round(val["kept_accuracy"], 4),  # the answer is visible
                "val_mlm_loss": round(val["loss"], 4), "val_positions": val["positions"],
                "val_mask_positions": val["mask_positions"],
                "val_eval": f"evaluate_mlm(model, val_ids, mask_token_id={spec.train.mask_token_id}, "
                            f"num_batches=64): 64 batches x 16 windows x {c.context_length} characters, seed 1234"}
    if isinstance(c, LSTMConfig):
        nll = evaluate_lstm_stream(model, ids)
        how = "every validation token in stream order, state carried (lstm.evaluate)"
    else:
        nll = evaluate_stream(model, ids, c.context_length)
        how = f"every validation token, windows of {c.context_length} sliding by {c.context_length // 2}"
    return {"val_nats_per_char": round(nll, 4), "val_perplexity": round(perplexity(nll), 3),
            "val_bits_per_char": round(bits_per_char(nll), 4), "val_tokens": len(ids), "val_eval": how}


def manifest_entry(name: str, spec: RunSpec, weights: Path, model: nn.Module, cfg: TrainConfig,
                   scores: dict, history: History, seconds: float, world: int, device: torch.device,
                   steps_arg: int | None) -> dict:
    """The manifest entry of one trained model: the one function that writes every entry."""
    return {
        "name": name, "file": weights.name,
        "command": rebuild_command(name) + (f" --steps {steps_arg}" if steps_arg else ""),
        "model_class": type(model).__name__, "config": asdict(spec.model), "train_config": asdict(cfg),
        "tokenizer": spec.tokenizer, "renamed_copies": spec.renamed_copies, "steps": cfg.steps, **scores,
        "parameters": sum(p.numel() for p in model.parameters()), "sha256": sha256(weights),
        "dtype": "float16", "train_seconds": round(seconds), "processes": world, "device": device.type,
        "history": {"steps": history.steps, "train_loss": [round(v, 4) for v in history.train_loss],
                    "val_loss": [round(v, 4) for v in history.val_loss]},  # fixed batches, see train()
    }


def list_runs() -> str:
    """The named runs, one line each (``python -m lmcourse train --list``)."""
    lines = []
    for name, spec in named_runs().items():
        model = build_model(spec.model)
        n = sum(p.numel() for p in model.parameters())
        tag = "shipped" if spec.shipped else "       "
        lines.append(f"{name:<11} {tag}  {type(model).__name__:<6} {n:>9,} params  "
                     f"{spec.train.steps:>5} steps  {spec.train.objective:<5}  {spec.about}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse train",
                                     description="Train one of the course's named models (also under torchrun).")
    parser.add_argument("--config", choices=list(named_runs()), help="the named run")
    parser.add_argument("--list", action="store_true", help="list the named runs and exit")
    parser.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for NAME.pt, manifest.json and the resumable NAME.state.pt (default: the "
                             "package's checkpoints for shipped models, with the state in runs/NAME; "
                             "runs/NAME otherwise)")
    parser.add_argument("--resume", action="store_true", help="continue from the saved NAME.state.pt if it exists")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: lmcourse.device.get_device)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (1: fastest on a busy CPU)")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    args = parser.parse_args(argv)
    if args.list:
        print(list_runs())
        return 0
    if args.config is None:
        parser.error("--config NAME is required (see --list)")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)

    spec = _spec(args.config)
    cfg = spec.train if args.steps is None else replace(spec.train, steps=args.steps,
                                                        warmup_steps=min(spec.train.warmup_steps, args.steps - 1))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(args.device) if args.device else get_device()
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, _ = rank_and_world()
    say = (lambda s: print(s, flush=True)) if rank == 0 else (lambda s: None)
    out = args.out if args.out is not None else (CHECKPOINT_DIR if spec.shipped else Path("runs") / args.config)
    # the resumable state (optimizer and all) stays out of the package folder
    state_dir = Path("runs") / args.config if (spec.shipped and args.out is None) else out
    state_path = state_dir / f"{args.config}.state.pt"

    tok = TOKENIZERS[spec.tokenizer]()
    train_text = (renamed_training_text(spec.renamed_copies, seed=cfg.seed) if spec.renamed_copies
                  else load_shakespeare("train"))
    train_ids = as_tensor(tok.encode(train_text))
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))
    torch.manual_seed(cfg.seed)
    model = build_model(spec.model)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"{args.config}: {n_params:,} parameters, {cfg.steps} steps of {cfg.batch_size} x "
        f"{cfg.context_length} tokens ({cfg.objective}) on {device} x {world}")
    t0 = time.perf_counter()
    history = train(model, train_ids, val_ids, cfg, device=device, checkpoint=state_path,
                    checkpoint_every=args.checkpoint_every, resume=args.resume,
                    log=lambda s: say(f"{s}  ({time.perf_counter() - t0:.0f} s)"))
    seconds = time.perf_counter() - t0
    if rank == 0:
        weights = out / f"{args.config}.pt"
        save_weights(model, weights)
        stored = load_pretrained(str(weights))  # the scores of the stored fp16 weights
        scores = final_scores(stored, spec, val_ids)
        entry = manifest_entry(args.config, spec, weights, model, cfg, scores, history, seconds, world, device,
                               args.steps)
        write_manifest_entry(entry, out)
        print(json.dumps(entry, indent=1), flush=True)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
