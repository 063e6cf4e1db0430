"""Chapter 11's copying measurement on every validation play, with the copying head zeroed.

    python -m lmcourse copying          # about 8 minutes on one CPU core

Every character of each validation play (each play scored on its own) is scored
by the static 7-gram, the cache 7-gram (:func:`lmcourse.copying.cache_ngram_log_probs`),
chapter 7's GPT (context 128), the modern GPT (context 512), the modern GPT with
the copying head zeroed, with each other head of its layer zeroed (one at a time), and the
modern GPT mixed with the same cache. The losses of the new words' characters
(words no training play contains, that occur at least twice in the play) are
grouped by kind (a speaker heading or not, :func:`lmcourse.copying.occurrence_kind`)
and by the distance back to the previous occurrence
(:func:`lmcourse.copying.gap_bin`). The table goes to ``checkpoints/copying.json``
with the command that reproduces it; chapter 11 reads it.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from ..copying import (
    ablate_heads,
    cache_ngram_log_probs,
    gap_bin,
    grouped_losses,
    known_words,
    new_word_occurrences,
    occurrence_kind,
)
from ..data import load_play, load_shakespeare, split_plays
from ..ngram import NGramLM
from ..runs import load_pretrained
from ..shipped import CHECKPOINT_DIR
from ..tokenization import shakespeare_char_tokenizer
from ..train import stream_token_nll


def score_play(play: str, models: dict, seven: NGramLM, tok, known: set[str], cache_weight: float) -> dict:
    """Each model's per-group losses on one play (a dict ready for JSON)."""
    ids = torch.tensor(tok.encode(play))
    base = seven.token_log_probs(ids)
    nll = {"7-gram": -base, "cache 7-gram": -cache_ngram_log_probs(ids.tolist(), base, weight=cache_weight)}
    for name, (model, context) in models.items():
        nll[name] = stream_token_nll(model, ids, context)
    modern = nll["modern"]
    nll["modern + cache"] = -cache_ngram_log_probs(ids.tolist(), -modern, weight=cache_weight)
    occ = new_word_occurrences([play], known)
    twice = Counter(o.word for o in occ)
    repeated = [o for o in occ if twice[o.word] >= 2]
    new_chars = torch.zeros(len(ids) - 1, dtype=torch.bool)
    for o in occ:  # the losses of every new word's characters (nll[i] scores character i + 1)
        new_chars[max(o.start - 1, 0):o.end - 1] = True
    out = {}
    for name, losses in nll.items():
        groups = grouped_losses(losses, repeated, lambda o: f"{occurrence_kind(play, o)} {gap_bin(o)}")
        out[name] = {"all": {"nats": round(losses.double().mean().item(), 5), "chars": len(losses)},
                     "rest": {"nats": round(losses[~new_chars].double().mean().item(), 5),
                              "chars": int((~new_chars).sum())},
                     "groups": {k: {**v, "nats": round(v["nats"], 5)} for k, v in sorted(groups.items())}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse copying", description=__doc__.split("\n\n")[0])
    parser.add_argument("--head", type=int, nargs=2, default=(5, 4), metavar=("LAYER", "HEAD"),
                        help="the copying head found by chapter 11's attention probe")
    parser.add_argument("--control", type=int, nargs=2, action="append", metavar=("LAYER", "HEAD"),
                        help="a control head, zeroed on its own (repeatable; default: every other head of "
                             "the copying head's layer)")
    parser.add_argument("--cache-weight", type=float, default=0.2,
                        help="the cache's weight (chapter 11 picks it on the-tempest)")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "copying.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tok = shakespeare_char_tokenizer()
    train_text = load_shakespeare("train")
    seven = NGramLM(7, "modified_kneser_ney", vocab_size=tok.vocab_size).fit(tok.encode(train_text))
    known = known_words(train_text)
    old, new = load_pretrained("gpt_char"), load_pretrained("gpt_modern")
    head = tuple(args.head)
    controls = ([tuple(c) for c in args.control] if args.control
                else [(head[0], h) for h in range(new.config.n_heads) if h != head[1]])
    models = {"GPT-2-style": (old, 128), "modern": (new, 512)}
    for layer, h in [head, *controls]:
        models[f"modern, L{layer}H{h} zeroed"] = (ablate_heads(new, [(layer, h)]), 512)
    plays = {}
    for name in split_plays("val"):
        plays[name] = score_play(load_play(name), models, seven, tok, known, args.cache_weight)
        print(name, {m: round(v["all"]["nats"], 3) for m, v in plays[name].items()}, flush=True)
    command = (f"python -m lmcourse copying --head {head[0]} {head[1]} "
               + "".join(f"--control {a} {b} " for a, b in controls) + f"--cache-weight {args.cache_weight}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "head": list(head), "controls": [list(c) for c in controls],
                                    "cache_weight": args.cache_weight, "plays": plays}, indent=1) + "\n")
    return 0
