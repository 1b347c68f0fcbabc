"""examples/tutorial.ipynb runs from top to bottom (its quick variant) and shows its pictures."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from tests.conftest import REPO
from tests.unit.test_notebook import QUICK, code_cells


def test_the_quick_notebook_runs_without_error_and_shows_its_pictures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "examples"  # a copy, so its run folder (../runs/notebook) is under tmp_path
    folder.mkdir()
    for name in ("tutorial.ipynb", "seven.png"):
        shutil.copy(REPO / "examples" / name, folder)
    monkeypatch.setenv(QUICK, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch: on a busy CPU, two spinning threads cost 10x
    notebook = nbformat.read(folder / "tutorial.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    client.execute()  # raises CellExecutionError at the first cell that fails

    outputs = [output for cell in code_cells(notebook) for output in cell.outputs]
    assert all(cell.execution_count for cell in code_cells(notebook))
    pictures = [output["data"]["image/png"] for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) >= 3
    for picture in pictures:
        assert min(Image.open(io.BytesIO(base64.b64decode(picture))).size) > 100

    printed = "".join(output.get("text", "") for output in outputs if output["output_type"] == "stream")
    assert "x_train (60000, 28, 28) torch.uint8" in printed and "x_test  (10000, 28, 28)" in printed
    assert "Trainable parameters: 101,770" in printed
    assert [int(n) for n in re.findall(r"Epoch (\d)/5 - loss: [\d.]+ - accuracy: [\d.]+", printed)] == [1, 2, 3, 4, 5]
    assert re.search(r"Test accuracy: \d+\.\d\d%", printed)
    shifted = re.search(r"a (\d): predicted (\d) where MNIST put it, (\d) moved", printed)
    label, before, after = map(int, shifted.groups())
    assert before == label != after  # right where MNIST centres it, wrong moved
    assert re.search(r"seven\.png: predicted \d with probability", printed)
    assert (tmp_path / "runs" / "notebook" / "training_curves.png").is_file()
