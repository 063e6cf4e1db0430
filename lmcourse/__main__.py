"""The course's one command line: ``python -m lmcourse COMMAND [ARGS]`` (or ``lmcourse COMMAND``).

Each command hands its arguments to the ``main`` of the module that does the
work; ``python -m lmcourse COMMAND --help`` shows that command's options. Only the
module of the command that runs is imported (the grader does not load the
notebook runner's dependencies, nor training the grader's).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {  # name: (module whose main(argv) runs it, one line of help)
    "train": ("lmcourse.runs", "train one of the course's named models (--config NAME, --list; also under torchrun)"),
    "ablation": ("lmcourse.experiments.ablation",
                 "train chapter 11's ablation of today's recipe (seeds x rows) into a table"),
    "copying": ("lmcourse.experiments.copying",
                "score chapter 11's copying table on every validation play, the copying head zeroed"),
    "extrapolation": ("lmcourse.experiments.extrapolation",
                      "train chapter 5's position schemes (seeds) and score longer windows"),
    "experiments": ("lmcourse.experiments.comparisons",
                    "train chapters 4, 6, 7 and 8's stored comparisons (attention, tying, norms, training, kv_heads)"),
    "heldout": ("lmcourse.experiments.heldout",
                "train chapter 7's same-play control: a GPT on 90% of every play, scored on the tails (3 seeds)"),
    "scaling": ("lmcourse.experiments.scaling",
                "train chapter 12's sweep (sizes x compute budgets; data-constrained runs) run by run"),
    "data": ("lmcourse.experiments.data",
             "train chapter 13's canary and data-quality runs (3 seeds); gpt_char's extraction test"),
    "adaptation": ("lmcourse.experiments.adaptation",
                   "train chapter 14's adaptation runs (continued pretraining, SFT, DPO; --part) run by run"),
    "export": ("lmcourse.hf_export", "write a shipped GPT as a Hugging Face GPT-2 folder (transformers loads it)"),
    "check": ("lmcourse.course.check", "run an exercise notebook and its visible checks: your self-check"),
    "grade": ("lmcourse.course.grade", "grade submitted exercise notebooks into a CSV (instructors)"),
    "exercises": ("lmcourse.course.exercises", "write exercises/ from solutions/ (--check: fail if out of date)"),
    "release": ("lmcourse.course.release", "write the student release: book, exercises, package; no solutions"),
    "notebooks": ("lmcourse.course.notebooks", "execute the book's notebooks and store stable outputs; time them"),
    "pdf": ("lmcourse.course.pdf", "print the built HTML book (make book) as one PDF with Chromium, offline"),
    "bench": ("lmcourse.bench.__main__", "run a benchmark (no name: list them)"),
}


def usage() -> str:
    """The list of commands, one line each."""
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m lmcourse COMMAND [ARGS]   (COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (2 for an unknown command)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)}\n"
              f"(python -m lmcourse --help describes them)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
