"""Execute the book's notebooks and store their outputs in a reviewable, stable form.

    python -m lmcourse.notebooks run book/01_chain_rule.ipynb [...]

runs each notebook top to bottom on the CPU (``LMCOURSE_DEVICE=cpu``) in its own
folder, then normalises it so diffs show only real changes: execution counts
1, 2, 3, ...; no timing metadata; a fixed kernelspec. Strict nbval then compares
the stored outputs with a fresh run. It also reports each notebook's run time,
which is how the runtime table of the book is measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

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


def run(path: Path, timeout: int = 1200) -> float:
    """Execute one notebook in place; returns the seconds it took."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["LMCOURSE_DEVICE"] = os.environ.get("LMCOURSE_DEVICE_FOR_NOTEBOOKS", "cpu")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    normalise(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse.notebooks")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute notebooks in place and normalise them")
    p_run.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.paths:
        if not path.is_file():
            print(f"error: no notebook at {path}", file=sys.stderr)
            return 2
        seconds = run(path)
        print(f"{path}: executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
