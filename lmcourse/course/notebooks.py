"""Execute the book's notebooks and store their outputs in a reviewable, stable form.

    python -m lmcourse notebooks run book/01_chain_rule.ipynb [...]

runs each notebook top to bottom on the CPU (``LMCOURSE_DEVICE=cpu``) in its own
folder, then normalises it so diffs show only real changes: execution counts
1, 2, 3, ...; no timing metadata; a fixed kernelspec. Strict nbval then compares
the stored outputs with a fresh run. It also reports each notebook's run time,
which is how the runtime table of the book is measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from .exercises import exercise_table

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def normalise(nb) -> None:
    """Strip volatile metadata and renumber executions, in place."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.get("outputs", []))
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type == "code":
            if cell.get("execution_count") is not None or cell.get("outputs"):
                count += 1
                cell.execution_count = count
                for out in cell.get("outputs", []):
                    if "execution_count" in out:
                        out["execution_count"] = count
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.pop("widgets", None)
    lang = nb.metadata.get("language_info", {})
    for key in ("version",):
        lang.pop(key, None)


def coalesce_streams(outputs: list) -> list:
    """Merge consecutive stdout (or stderr) chunks: how they were split depends on timing."""
    merged: list = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None
                and prev.get("output_type") == "stream" and prev.get("name") == out.get("name")):
            prev["text"] = prev["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def run(path: Path, timeout: int = 1200, cwd: Path | None = None) -> float:
    """Execute one notebook in place; returns the seconds it took.

    The kernel starts in ``cwd``, by default the notebook's folder (a notebook may run
    another of its folder, as a chapter's companion page runs the chapter)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["LMCOURSE_DEVICE"] = os.environ.get("LMCOURSE_DEVICE_FOR_NOTEBOOKS", "cpu")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(cwd or path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    normalise(nb)
    nbformat.write(nb, path)
    return seconds


def title_of(nb) -> str:
    """The text of a notebook's first level-1 heading."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "(untitled)"


def runtime_table(book: Path, solutions: Path, repeats: int = 1, chapters: list[str] | None = None,
                  previous: str | None = None) -> str:
    """The appendix page: each chapter's run time on this machine, and its exercises.

    With ``chapters`` (``["12"]``) only those are executed; every other chapter keeps its row
    from ``previous`` (the page as it stands), which must have one.

    Each notebook is executed in a temporary copy (stored outputs are untouched);
    with ``repeats > 1`` the fastest run counts.
    """
    kept = {}  # "| NN | title" -> its row: a chapter may have several notebooks (a companion page)
    for line in (previous or "").splitlines():
        if line.startswith("| ") and line.endswith(" s |"):
            kept[line.rsplit(" | ", 1)[0]] = line
    paths = sorted(Path(book).glob("[0-9][0-9]_*.ipynb"))
    key = {path: f"| {path.name[:2]} | {title_of(nbformat.read(path, as_version=4))}" for path in paths}
    if chapters is not None:
        unknown = sorted(set(chapters) - {p.name[:2] for p in paths})
        missing = sorted({p.name[:2] for p in paths if p.name[:2] not in chapters and key[p] not in kept})
        if unknown or missing:
            raise ValueError(f"no chapter notebook {unknown} in {book}" if unknown else
                             f"chapters {missing} have no row to keep: time them too (or every chapter)")
    rows = []
    for path in paths:
        if chapters is not None and path.name[:2] not in chapters:
            rows.append(kept[key[path]])
            continue
        best = None
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / path.name
                shutil.copy(path, copy)
                seconds = run(copy, cwd=path.parent)  # where the notebook's neighbours are
            best = seconds if best is None else min(best, seconds)
        rows.append(f"{key[path]} | {best:.0f} s |")
        print(f"{path}: {best:.1f} s", file=sys.stderr)
    cores = os.cpu_count()
    lines = [
        "# Appendix: run times and exercises",
        "",
        "This page is written by `python -m lmcourse notebooks runtimes`, which executes",
        "every chapter notebook (or, with `--chapters`, the ones it names) from top to bottom",
        "on the CPU and times it; do not edit it by hand. Measured on a machine with "
        f"{cores} CPU core{'s' if cores != 1 else ''} ({platform.machine()}), torch {_torch_version()}.",
        "",
        "| chapter | title | run time |",
        "|---|---|---|",
        *rows,
        "",
        *exercise_table(solutions),
        "",
    ]
    return "\n".join(lines)


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse notebooks")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute notebooks in place and normalise them")
    p_run.add_argument("paths", nargs="+", type=Path)
    p_times = sub.add_parser("runtimes", help="time every chapter and write the appendix page")
    p_times.add_argument("--book", type=Path, default=Path("book"))
    p_times.add_argument("--solutions", type=Path, default=Path("solutions"))
    p_times.add_argument("--out", type=Path, default=Path("book/runtimes.md"))
    p_times.add_argument("--repeats", type=int, default=1)
    p_times.add_argument("--chapters", nargs="+", metavar="NN",
                         help="time only these chapters (01 12 ...); the others keep their rows")
    args = parser.parse_args(argv)
    if args.command == "runtimes":
        previous = args.out.read_text(encoding="utf-8") if args.chapters and args.out.is_file() else None
        try:
            page = runtime_table(args.book, args.solutions, args.repeats, args.chapters, previous)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        args.out.write_text(page, encoding="utf-8")
        print(f"wrote {args.out}")
        return 0
    for path in args.paths:
        if not path.is_file():
            print(f"error: no notebook at {path}", file=sys.stderr)
            return 2
        seconds = run(path)
        print(f"{path}: executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
