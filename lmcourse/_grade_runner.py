"""Runs one submission's cells in this (separate) process; used by :mod:`lmcourse.grade`.

Reads a JSON program ``{"cells": [{"source", "role", "task", "check"}, ...]}``, runs
each cell with IPython (so magics behave as in Jupyter), and appends one JSON line
per cell to the results file as soon as it finishes. A cell that raises does not
stop the run; a process that dies or is killed leaves the lines written so far.
"""

from __future__ import annotations

import json
import sys


def _describe(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, str(exc)[:500]


def main(program_path: str, results_path: str) -> int:
    with open(program_path, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    results = open(results_path, "a", encoding="utf-8")
    for i, cell in enumerate(cells):
        record = {"cell": i, "status": "ok", "etype": None, "message": None}
        try:
            res = shell.run_cell(cell["source"], store_history=False)
            exc = res.error_before_exec or res.error_in_exec
        except BaseException as err:  # noqa: BLE001 - a submission may raise anything
            exc = err
        if exc is not None:
            etype, message = _describe(exc)
            record.update(status="error", etype=etype, message=message)
        results.write(json.dumps(record) + "\n")
        results.flush()
    results.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
