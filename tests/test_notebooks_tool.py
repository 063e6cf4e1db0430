"""lmcourse.course.notebooks: stable stored outputs, and the runtime appendix."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lmcourse.course.notebooks import coalesce_streams, normalise, run, runtime_table


def test_coalesce_and_normalise():
    outs = [new_output("stream", name="stdout", text="a"), new_output("stream", name="stdout", text="b"),
            new_output("stream", name="stderr", text="c")]
    merged = coalesce_streams(outs)
    assert [(o.name, o.text) for o in merged] == [("stdout", "ab"), ("stderr", "c")]
    nb = new_notebook(cells=[new_code_cell("x", execution_count=7), new_code_cell("y"),
                             new_code_cell("z", execution_count=9)])
    nb.cells[0].metadata["execution"] = {"iopub.execute_input": "2026-11-22T10:00:00"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    normalise(nb)
    assert [c.execution_count for c in nb.cells] == [1, None, 2]
    assert "execution" not in nb.cells[0].metadata and "version" not in nb.metadata["language_info"]
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_run_and_runtime_table(tmp_path):
    book, sols = tmp_path / "book", tmp_path / "solutions"
    book.mkdir()
    sols.mkdir()
    nb = new_notebook(cells=[new_markdown_cell("# 7. A chapter"), new_code_cell("print(6 * 7)")])
    nbformat.write(nb, book / "07_demo.ipynb")
    check = new_code_cell("assert True")
    check.metadata["lmcourse"] = {"role": "check", "task": "answer", "check": "a1", "points": 2}
    check2 = new_code_cell("assert True")
    check2.metadata["lmcourse"] = {"role": "check", "task": "answer", "check": "a2", "points": 1}
    nbformat.write(new_notebook(cells=[check, check2]), sols / "07_demo.ipynb")

    page = runtime_table(book, sols)
    assert "| 07 | 7. A chapter |" in page and "| 07 | `answer` (3) | 3 |" in page
    stored = nbformat.read(book / "07_demo.ipynb", as_version=4)
    assert stored.cells[1].outputs == [], "the stored notebook is untouched"

    seconds = run(book / "07_demo.ipynb")
    stored = nbformat.read(book / "07_demo.ipynb", as_version=4)
    assert seconds > 0 and stored.cells[1].outputs[0]["text"] == "42\n" and stored.cells[1].execution_count == 1


def test_runtime_table_times_only_the_chapters_named(tmp_path):
    book, sols = tmp_path / "book", tmp_path / "solutions"
    book.mkdir()
    sols.mkdir()
    for n in ("07", "08"):
        nbformat.write(new_notebook(cells=[new_markdown_cell(f"# {int(n)}. Chapter {n}"), new_code_cell("1")]),
                       book / f"{n}_demo.ipynb")
    previous = "| 07 | 7. Chapter 07 | 999 s |\n| 08 | 8. Chapter 08 | 888 s |\n"
    page = runtime_table(book, sols, chapters=["08"], previous=previous)
    assert "| 07 | 7. Chapter 07 | 999 s |" in page  # kept
    assert "| 08 | 8. Chapter 08 |" in page and "888 s" not in page  # timed again
    with pytest.raises(ValueError, match=r"\['07'\] have no row to keep"):
        runtime_table(book, sols, chapters=["08"], previous="")
    with pytest.raises(ValueError, match="no chapter notebook"):
        runtime_table(book, sols, chapters=["09"], previous=previous)


def test_runtime_table_keeps_a_row_for_each_notebook_of_a_chapter(tmp_path):
    book, sols = tmp_path / "book", tmp_path / "solutions"
    book.mkdir()
    sols.mkdir()
    for stem, title in (("07_demo", "7. A chapter"), ("07_demo_more", "A companion page"), ("08_demo", "8. B")):
        nbformat.write(new_notebook(cells=[new_markdown_cell(f"# {title}"), new_code_cell("1")]),
                       book / f"{stem}.ipynb")
    previous = "| 07 | 7. A chapter | 999 s |\n| 07 | A companion page | 777 s |\n| 08 | 8. B | 888 s |\n"
    page = runtime_table(book, sols, chapters=["08"], previous=previous)
    assert "| 07 | 7. A chapter | 999 s |\n| 07 | A companion page | 777 s |\n| 08 | 8. B |" in page
    assert "888 s" not in page
    with pytest.raises(ValueError, match=r"\['07'\] have no row to keep"):  # the companion's row is missing
        runtime_table(book, sols, chapters=["08"], previous="| 07 | 7. A chapter | 999 s |\n")
