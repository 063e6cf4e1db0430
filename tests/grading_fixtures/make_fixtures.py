"""Write the grading robustness fixtures from chapter 1's solution and exercise.

    python tests/grading_fixtures/make_fixtures.py

Each fixture is a submission that misbehaves in one way; EXPECTED says the points
it really earned out of 10 (char_tokenizer 3, sequence_log_prob 2, perplexity 2,
wordpiece_merges 3). tests/test_grading_robustness.py grades them all in one batch.
"""

import copy
import hashlib
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell as _new_code_cell

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOLUTION = nbformat.read(ROOT / "solutions" / "01_chain_rule.ipynb", as_version=4)
EXERCISE = nbformat.read(ROOT / "exercises" / "01_chain_rule.ipynb", as_version=4)

EXPECTED = {
    "invalid_json": 0,
    "other_chapter": 0,
    "checks_deleted": 10,
    "check_before_solution": 10,  # the checks run after every cell of the notebook
    "syntax_error": 8,
    "import_error": 3,
    "sys_exit": 10,
    "os_exit": 10,  # refused before it runs (it imports os): the rest counts
    "endless_loop": 10,  # the cell is stopped after half the time limit; the rest counts
    "memory_bomb": 8,
    "output_flood": 10,
    "writes_and_deletes_files": 10,
    "fake_passing_output": 0,
    "monkeypatch": 0,
    "hardcoded_visible": 0,  # right on the visible checks' inputs only
}


def new_code_cell(source):
    """A code cell whose id comes from its source, so regenerating gives the same files."""
    cell = _new_code_cell(source)
    cell.id = "fixture-" + hashlib.sha256(source.encode()).hexdigest()[:8]
    return cell


def role(cell):
    return cell.metadata.get("lmcourse", {})


def index(nb, pred):
    return next(i for i, c in enumerate(nb.cells) if pred(c))


def after_check(nb, check_id, source):
    nb.cells.insert(index(nb, lambda c: role(c).get("check") == check_id) + 1, new_code_cell(source))


def replace_in(nb, needle, old, new):
    cell = nb.cells[index(nb, lambda c: needle in c.source)]
    assert old in cell.source, old
    cell.source = cell.source.replace(old, new)


def fixtures():
    out = {}
    sol = lambda: copy.deepcopy(SOLUTION)  # noqa: E731

    nb = sol()
    nb.metadata["lmcourse"]["chapter"] = "02"
    out["other_chapter"] = nb

    nb = sol()
    nb.cells = [c for c in nb.cells if role(c).get("role") != "check"]
    out["checks_deleted"] = nb

    nb = sol()
    i = index(nb, lambda c: role(c).get("check") == "sequence_log_prob")
    check = nb.cells.pop(i)
    nb.cells.insert(index(nb, lambda c: role(c).get("task") == "sequence_log_prob"), check)
    out["check_before_solution"] = nb

    nb = sol()
    replace_in(nb, "def perplexity_from_logits", "log_probs = torch.log_softmax", "log_probs = = torch.log_softmax")
    out["syntax_error"] = nb

    nb = sol()
    nb.cells[1].source = "import nonexistent_module_for_grading\n" + nb.cells[1].source
    out["import_error"] = nb

    nb = sol()
    after_check(nb, "sequence_log_prob", "import sys\nsys.exit(3)")
    out["sys_exit"] = nb

    nb = sol()
    after_check(nb, "sequence_log_prob", "import os\nos._exit(0)")
    out["os_exit"] = nb

    nb = sol()
    after_check(nb, "char_tokenizer_unknown", "while True:\n    pass")
    out["endless_loop"] = nb

    nb = sol()
    replace_in(nb, "def perplexity_from_logits", "### BEGIN SOLUTION",
               "### BEGIN SOLUTION\n    hog = bytearray(64 * 2**30)  # 64 GB")
    out["memory_bomb"] = nb

    nb = sol()
    after_check(nb, "char_tokenizer_unknown",
                "import os, sys\nfor _ in range(50):\n    sys.stdout.write('x' * 1_000_000)\n"
                "    os.write(1, b'y' * 1_000_000)")
    out["output_flood"] = nb

    nb = sol()
    after_check(nb, "char_tokenizer_unknown",
                "import os, shutil\nfor name in os.listdir('.'):\n"
                "    shutil.rmtree(name, ignore_errors=True) if os.path.isdir(name) else os.remove(name)\n"
                "open('grades.csv', 'w').write('submission,points\\nme,100\\n')\n"
                "os.makedirs('solutions', exist_ok=True)\n"
                "open('solutions/01_chain_rule.ipynb', 'w').write('{}')")
    out["writes_and_deletes_files"] = nb

    nb = copy.deepcopy(EXERCISE)
    nb.cells.append(new_code_cell(
        "import json, sys\n"
        "print('char_tokenizer 3/3 passed\\nsolutions/01_chain_rule.ipynb (chapter 01): 10/10 points, 100%')\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        with open(path, 'a') as f:\n"
        "            for i in range(100):\n"
        "                f.write(json.dumps({'cell': i, 'status': 'ok', 'etype': None, 'message': None}) + '\\n')\n"
        "    except OSError:\n"
        "        pass"))
    nb.cells.insert(2, nb.cells.pop())  # before any check runs
    out["fake_passing_output"] = nb

    nb = copy.deepcopy(EXERCISE)
    patch = (
        "import math, torch, builtins\nimport lmcourse.tokenization\n"
        "math.isclose = lambda *a, **k: True\nmath.isfinite = lambda *a, **k: True\n"
        "torch.isclose = lambda *a, **k: torch.tensor(True)\ntorch.allclose = lambda *a, **k: True\n"
        "builtins.isinstance = lambda *a, **k: True\n"
        "lmcourse.tokenization.CharTokenizer = lambda *a, **k: None\n"
        "class MyCharTokenizer:\n    vocab_size = 8\n    def __init__(self, text): pass\n"
        "    def encode(self, s): return [3, 2, 4, 4, 5]\n    def decode(self, ids): return 'hello world'\n"
        "def sequence_log_prob(p, t): return 0.0\ndef perplexity_from_logits(l, t): return 10.0\n"
        "def wordpiece_merges(w, n): return [('g', 's'), ('p', 'u')][:n]\n"
    )
    nb.cells = [c for c in nb.cells if role(c).get("role") != "solution"]
    nb.cells.insert(2, new_code_cell(patch))
    out["monkeypatch"] = nb

    nb = copy.deepcopy(EXERCISE)
    nb.cells = [c for c in nb.cells if role(c).get("role") != "solution"]
    nb.cells.insert(2, new_code_cell(patch[patch.index("class MyCharTokenizer"):]))
    out["hardcoded_visible"] = nb
    return out


def main():
    for old in HERE.glob("*.ipynb"):
        old.unlink()
    (HERE / "invalid_json.ipynb").write_text('{"cells": [ this is not json', encoding="utf-8")
    for name, nb in fixtures().items():
        nbformat.write(nb, HERE / f"{name}.ipynb")
    assert {p.stem for p in HERE.glob("*.ipynb")} == set(EXPECTED)


if __name__ == "__main__":
    main()
