"""Conventions every chapter notebook keeps, so strict nbval passes on any runner."""

from pathlib import Path

import nbformat
import pytest

CHAPTERS = sorted((Path(__file__).parent.parent / "book").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_chapter_that_plots_shows_its_figures_under_any_backend(path):
    # the GPU runner exports MPLBACKEND=Agg: without the magic, plt.show() prints nothing there
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    if any("plt." in src for src in code):
        assert code[0].startswith("%matplotlib inline\n"), f"{path.name}: first cell must start with %matplotlib inline"


def test_there_are_chapters():
    assert len(CHAPTERS) >= 11
