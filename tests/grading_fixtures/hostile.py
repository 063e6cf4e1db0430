"""Hostile submissions: each tries to reach beyond its own process in one way.

tests/test_sandbox.py builds them at test time, because each names what the test
watches (a port, a file, a marker), and grades them in one batch with honest
submissions. Each function returns a notebook (nbformat) and the points it
earns by its own work when the sandbox holds.
"""

import copy
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell

ROOT = Path(__file__).resolve().parent.parent.parent


def _read(folder: str, name: str):
    return nbformat.read(ROOT / folder / name, as_version=4)


def _role(cell) -> dict:
    return cell.metadata.get("lmcourse", {})


def _append(nb, source: str):
    nb = copy.deepcopy(nb)
    nb.cells.append(new_code_cell(source))
    return nb


STEAL = '''\
import glob, json, os, pathlib

def _steal(task):
    """Find the solutions notebook anywhere this process can see, and return the task's answer."""
    import lmcourse
    here = pathlib.Path(lmcourse.__file__).resolve().parents[1]
    places = [here, pathlib.Path.cwd(), *pathlib.Path.cwd().parents, pathlib.Path.home()]
    found = [p / "solutions" / NAME for p in places]
    for depth in range(1, 5):
        found += [pathlib.Path(p) for p in glob.glob("/" + "*/" * depth + "solutions/" + NAME)]
    for path in found:
        try:
            nb = json.loads(path.read_text())
        except OSError:
            continue
        for cell in nb["cells"]:
            info = cell.get("metadata", {}).get("lmcourse", {})
            if info.get("role") == "solution" and info.get("task") == task:
                return "".join(cell["source"])
    raise FileNotFoundError("no solutions notebook in sight")

'''


def reads_solutions(chapter_file: str = "05_positions.ipynb"):
    """The exercise, each answer cell replaced by one that reads solutions/ from disk and runs its answer.

    Without a sandbox this scores full marks; in it, the solutions are not there (0).
    """
    nb = _read("exercises", chapter_file)
    first = True
    for cell in nb.cells:
        info = _role(cell)
        if cell.cell_type == "code" and info.get("role") == "solution":
            prelude = STEAL.replace("NAME", repr(chapter_file)) if first else ""
            cell.source = f"{prelude}exec(_steal({info['task']!r}), globals())"
            first = False
    return nb, 0


def writes_everywhere(targets: list[str], sibling: str):
    """Chapter 1's solution, then a cell that writes a file at each of ``targets`` (and in the
    repository and the package, found from ``lmcourse.__file__``) and overwrites ``sibling``
    (another student's notebook) with broken JSON. Every write that fails is ignored."""
    code = f'''\
import os, pathlib, lmcourse
repo = pathlib.Path(lmcourse.__file__).resolve().parents[1]
targets = [pathlib.Path(t) for t in {targets!r}]
targets += [repo / {Path(targets[0]).name!r}, repo / "lmcourse" / {Path(targets[0]).name!r},
            pathlib.Path.home() / "written-by-a-submission"]
for target in targets:
    try:
        target.write_text("written by a submission")
    except OSError as err:
        print("could not write", target, type(err).__name__)
try:
    pathlib.Path({sibling!r}).write_text("{{ this is not a notebook any more")
except OSError as err:
    print("could not overwrite the sibling", type(err).__name__)
'''
    return _append(_read("solutions", "01_chain_rule.ipynb"), code), 10


def connects(port: int, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")):
    """Chapter 1's solution, then a cell that connects to ``port`` on the loopback and sends a message."""
    code = f'''\
import socket
for host in {hosts!r}:
    try:
        with socket.create_connection((host, {port}), timeout=3) as s:
            s.sendall(b"a submission was here")
        print("connected to", host)
    except OSError as err:
        print("no connection to", host, type(err).__name__)
'''
    return _append(_read("solutions", "01_chain_rule.ipynb"), code), 10


def detached_child(path: str, marker: str, delay: float = 4.0):
    """Chapter 1's solution, then a cell that starts two detached children (a new session each)
    that write ``path`` after ``delay`` seconds; both carry ``marker`` on their command line."""
    code = f'''\
import subprocess, sys
later = "import time; time.sleep({delay}); open({path!r}, 'w').write('escaped')"
subprocess.Popen([sys.executable, "-c", later, {marker!r}], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen(["/bin/sh", "-c", "sleep {delay}; echo escaped > {path}.sh", {marker!r}],
                 start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
'''
    return _append(_read("solutions", "01_chain_rule.ipynb"), code), 10


def fork_bomb(cap: int = 1000, hold: float = 5.0):
    """Chapter 1's solution, then a cell that forks until fork fails (at most ``cap`` children,
    so that a machine without any process limit survives the test) and holds them ``hold`` s."""
    code = f'''\
import os, time
children = 0
try:
    while children < {cap}:
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        children += 1
except OSError as err:
    print("fork failed after", children, "children:", err)
time.sleep({hold})
'''
    return _append(_read("solutions", "01_chain_rule.ipynb"), code), 10
