"""examples/tutorial.ipynb: stored without outputs, and it runs from top to bottom (its quick variant) with pictures."""

from __future__ import annotations

import nbformat

from tests.conftest import REPO

NOTEBOOK = REPO / "examples" / "tutorial.ipynb"
QUICK = "MNIST_DENSE_QUICK"  # the one switch to the quick variant, read in the first cell


def code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    cells = code_cells(notebook)
    assert len(cells) >= 8
    for cell in cells:
        assert cell.outputs == [] and cell.execution_count is None, cell.source.splitlines()[0]
    assert QUICK in cells[0].source and not any(QUICK in cell.source for cell in cells[1:])
