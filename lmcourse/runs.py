"""The course's named training runs, the shipped GPT, and their command line.

    python -m lmcourse.train --config gpt_char            # the shipped GPT
    python -m lmcourse.train --config small --steps 100   # a quick run into runs/small
    torchrun --nproc_per_node 2 -m lmcourse.train --config tiny --steps 50

``python -m lmcourse.train`` runs :func:`main`; the engine itself is
:mod:`lmcourse.train`. :func:`load_pretrained` loads a shipped model by name.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .metrics import bits_per_char, perplexity
from .shipped import CHECKPOINT_DIR, load_weights, save_weights, sha256, write_manifest_entry


@dataclass(frozen=True)
class RunSpec:
    """A named training run: the model, how to train it, and where it goes."""

    model: object  # a GPTConfig
    train: object  # a TrainConfig
    shipped: bool = False  # writes lmcourse/checkpoints/NAME.pt and its manifest entry by default
    eval_tokens: int | None = None  # validation tokens for the final (streamed) evaluation; None: all


def named_runs() -> dict[str, RunSpec]:
    """The GPT runs by name: ``tiny`` and ``small`` for tests, ``gpt_char`` for the shipped model."""
    from .train import TrainConfig
    from .transformer import GPTConfig

    return {
        "tiny": RunSpec(GPTConfig(vocab_size=75, context_length=32, d_model=32, n_layers=1, n_heads=2),
                        TrainConfig(steps=40, batch_size=8, context_length=32, lr=3e-3, min_lr=3e-4, warmup_steps=4,
                                    eval_every=20, eval_batches=2), eval_tokens=4000),
        "small": RunSpec(GPTConfig(vocab_size=75, context_length=64, d_model=64, n_layers=2, n_heads=4),
                         TrainConfig(steps=300, batch_size=16, context_length=64, lr=3e-3, min_lr=3e-4,
                                     warmup_steps=30, eval_every=100, eval_batches=4), eval_tokens=20000),
        "gpt_char": RunSpec(GPTConfig(vocab_size=75, context_length=128, d_model=160, n_layers=6, n_heads=5,
                                      dropout=0.0, tie_weights=True, positional="learned"),
                            TrainConfig(steps=6500, batch_size=32, context_length=128, lr=2.5e-3, min_lr=2.5e-4,
                                        warmup_steps=200, weight_decay=0.1, grad_clip=1.0, eval_every=250,
                                        eval_batches=8, seed=0), shipped=True),
    }


CONFIGS = ("tiny", "small", "gpt_char", "lstm_char")


def load_pretrained(name: str = "gpt_char", device: torch.device | str | None = None) -> nn.Module:
    """A shipped model by name (``gpt_char``, ``lstm_char``), float32, in eval mode.

    Raises ``FileNotFoundError`` (with the command that rebuilds it) if the file is
    missing and ``ValueError`` if its weights do not fit the architecture.
    """
    device = device if device is not None else "cpu"
    if name == "lstm_char":
        from .lstm import load_pretrained_lstm

        return load_pretrained_lstm(device=device)
    from .transformer import GPT, GPTConfig

    path = Path(name) if str(name).endswith(".pt") else CHECKPOINT_DIR / f"{name}.pt"
    return load_weights(path, lambda cfg: GPT(GPTConfig(**cfg)), "GPT",
                        f"python -m lmcourse.train --config {path.stem}", device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse.train",
                                     description="Train one of the course's named models (also under torchrun).")
    parser.add_argument("--config", required=True, choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for NAME.pt, manifest.json and the resumable NAME.state.pt (default: the "
                             "package's checkpoints for shipped models, with the state in runs/NAME; runs/NAME otherwise)")
    parser.add_argument("--resume", action="store_true", help="continue from the saved NAME.state.pt if it exists")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: lmcourse.device.get_device)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (1: fastest on a busy CPU)")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.config == "lstm_char":  # one command family for every shipped model
        from .lstm import main as lstm_main

        extra = ["--steps", str(args.steps)] if args.steps else []
        extra += ["--out", str(args.out / "lstm_char.pt")] if args.out else []
        return lstm_main(["train", *extra, "--threads", str(args.threads)])

    from dataclasses import replace

    from .data import as_tensor, load_shakespeare
    from .device import get_device
    from .train import _dist, evaluate_stream, train
    from .transformer import GPT
    from .tokenization import shakespeare_char_tokenizer

    spec = named_runs()[args.config]
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
    rank, _ = _dist()
    say = (lambda s: print(s, flush=True)) if rank == 0 else (lambda s: None)
    out = args.out if args.out is not None else (CHECKPOINT_DIR if spec.shipped else Path("runs") / args.config)
    # the resumable state (optimizer and all) stays out of the package folder
    state_dir = Path("runs") / args.config if (spec.shipped and args.out is None) else out
    state_path = state_dir / f"{args.config}.state.pt"

    tok = shakespeare_char_tokenizer()
    train_ids = as_tensor(tok.encode(load_shakespeare("train")))
    val_ids = as_tensor(tok.encode(load_shakespeare("val")))
    torch.manual_seed(cfg.seed)
    model = GPT(spec.model)
    say(f"{args.config}: {model.num_params():,} parameters, {cfg.steps} steps of {cfg.batch_size} x "
        f"{cfg.context_length} tokens on {device} x {world}")
    t0 = time.perf_counter()
    history = train(model, train_ids, val_ids, cfg, device=device, checkpoint=state_path,
                    checkpoint_every=args.checkpoint_every, resume=args.resume,
                    log=lambda s: say(f"{s}  ({time.perf_counter() - t0:.0f} s)"))
    seconds = time.perf_counter() - t0
    if rank == 0:
        weights = out / f"{args.config}.pt"
        save_weights(model, weights)
        stored = load_pretrained(str(weights))  # the number of the stored fp16 weights
        ids = val_ids if spec.eval_tokens is None else val_ids[:spec.eval_tokens]
        val = evaluate_stream(stored, ids, spec.model.context_length)
        entry = {
            "name": args.config, "file": weights.name,
            "command": f"python -m lmcourse.train --config {args.config}" + (f" --steps {args.steps}" if args.steps else ""),
            "config": asdict(spec.model), "train_config": asdict(cfg), "steps": cfg.steps,
            "val_nats_per_char": round(val, 4), "val_perplexity": round(perplexity(val), 3),
            "val_bits_per_char": round(bits_per_char(val), 4), "val_tokens": len(ids),
            "val_eval": f"every validation token, windows of {spec.model.context_length} sliding by "
                        f"{spec.model.context_length // 2}",
            "parameters": model.num_params(), "sha256": sha256(weights),
            "dtype": "float16", "train_seconds": round(seconds), "processes": world, "device": device.type,
            "history": {"steps": history.steps, "train_loss": [round(v, 4) for v in history.train_loss],
                        "val_loss": [round(v, 4) for v in history.val_loss]},  # fixed batches, see train()
        }
        write_manifest_entry(entry, out)
        print(json.dumps(entry, indent=1), flush=True)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0

