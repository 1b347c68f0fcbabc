"""`python -m mnist_dense export`: one ONNX file holding the whole inference, checked on the test set before kept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from mnist_dense.commands import main
from mnist_dense.data import load_split
from mnist_dense.deploy import export
from mnist_dense.module import MNISTClassifier
from mnist_dense.scaling import to_model_input
from tests.conftest import BUNDLED_DATA, REPO
from tests.tiny_runs import fit_tiny


def pytorch_right(ckpt: Path, images: torch.Tensor, labels: torch.Tensor) -> int:
    """Test digits the checkpoint gets right, as `test` counts them (its network, inputs scaled as in training)."""
    net = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu").net.eval()
    with torch.inference_mode():
        return int((net(to_model_input(images)).argmax(dim=1) == labels).sum())


@pytest.fixture(scope="module")
def exported(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("export")
    ckpt = folder / "model.ckpt"
    shutil.copy(trained_checkpoint, ckpt)
    capture = subprocess.run(
        [sys.executable, "-m", "mnist_dense", "export", "--ckpt_path", str(ckpt), "--data.data_dir", str(BUNDLED_DATA)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return folder / "model.onnx", capture.stdout


def test_export_writes_one_onnx_file_beside_the_checkpoint_and_reports_its_check(exported) -> None:
    path, output = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.ckpt", "model.onnx"]  # no .onnx.data, no partial
    assert f"Wrote {path}" in output
    assert "every predicted digit agrees with PyTorch" in output
    difference = float(re.search(r"largest probability difference ([0-9.e+-]+)", output).group(1))
    accuracy, torch_accuracy = re.search(r"accuracy ([0-9.]+)% \(PyTorch ([0-9.]+)%\)", output).groups()
    assert difference < 1e-4 and accuracy == torch_accuracy and float(accuracy) > 85


def test_onnxruntime_matches_pytorch_on_every_test_digit_for_batches_of_1_and_7(
    exported, trained_checkpoint: Path, mnist_test
) -> None:
    images, labels = mnist_test
    session = onnxruntime.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "not_a_digit_score"]
    pixels = images[:, None].float().numpy()  # pixels 0-255 as MNIST stores them: the graph normalizes
    everything, scores = session.run(["probabilities", "not_a_digit_score"], {"images": pixels})
    net = MNISTClassifier.load_from_checkpoint(trained_checkpoint, map_location="cpu").net.eval()
    with torch.inference_mode():
        logits = net(to_model_input(images))
        expected = torch.softmax(logits, dim=1).numpy()
    assert scores.shape == (len(labels),) and np.abs(scores - (-torch.logsumexp(logits, dim=1)).numpy()).max() < 1e-4
    assert (everything.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(everything - expected).max() < 1e-4
    np.testing.assert_allclose(everything.sum(axis=1), 1.0, atol=1e-5)
    for size in (1, 7):
        for start in range(0, 70, size):
            batch = session.run(["probabilities"], {"images": pixels[start : start + size]})[0]
            assert batch.shape == (size, 10)
            np.testing.assert_allclose(batch, everything[start : start + size], atol=1e-6)
    assert int((everything.argmax(axis=1) == labels.numpy()).sum()) == pytorch_right(trained_checkpoint, images, labels)


def test_a_program_with_onnxruntime_alone_gets_the_checkpoints_accuracy(
    exported, trained_checkpoint: Path, mnist_test
) -> None:
    """examples/onnxruntime_digits.py: numpy and onnxruntime, no torch and nothing of this package."""
    script = REPO / "examples" / "onnxruntime_digits.py"
    check = (
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__');"
        " print('imported:', sorted(m for m in ('torch', 'mnist_dense', 'lightning') if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", check, str(script), str(exported[0]), str(BUNDLED_DATA / "MNIST" / "raw")],
        cwd=exported[0].parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "imported: []" in run.stdout
    accuracy = float(re.search(r"accuracy ([0-9.]+)%", run.stdout).group(1))
    assert accuracy == round(100 * pytorch_right(trained_checkpoint, *mnist_test) / len(mnist_test[1]), 2)


def test_pt2_format_writes_a_torch_export_program(trained_checkpoint: Path, tmp_path: Path, mnist_test) -> None:
    target = tmp_path / "out" / "digits.pt2"
    main(["export", "--ckpt_path", str(trained_checkpoint), "--format", "pt2", "--output", str(target)])
    program = torch.export.load(target).module()
    images, _ = mnist_test
    net = MNISTClassifier.load_from_checkpoint(trained_checkpoint, map_location="cpu").net.eval()
    with torch.inference_mode():
        for size in (1, 7):
            pixels = images[:size, None].float()
            logits = net(to_model_input(pixels))
            probabilities, scores = program(pixels)  # the probabilities and the "not a digit" score, as ONNX
            torch.testing.assert_close(probabilities, torch.softmax(logits, dim=1))
            torch.testing.assert_close(scores, -torch.logsumexp(logits, dim=1))
    assert sorted(p.name for p in target.parent.iterdir()) == ["digits.pt2"]


def test_without_the_deploy_extra_export_says_which_extra_to_install(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(trained_checkpoint), "--output", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: export --format onnx needs onnxruntime") and 'pip install -e ".[deploy]"' in error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content", [b"", b"not a checkpoint"])
@pytest.mark.parametrize("subcommand", ["export", "serve"])
def test_a_bad_checkpoint_gets_the_same_error_as_predict(
    subcommand: str, content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Export and serve refuse it before writing or starting anything, with `predict`'s own one-line error."""
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    errors = []
    for command in ([subcommand, "--ckpt_path", str(bad)], ["predict", "--ckpt_path", str(bad)]):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert exit_info.value.code == 1
        errors.append(capsys.readouterr().err)
    assert errors[0] == errors[1] and errors[0].startswith(f"error: Checkpoint {bad}") and errors[0].count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]


def test_an_output_that_cannot_be_written_is_a_one_line_error(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "a_file").write_text("in the way")
    for output, message in ((tmp_path, "is a folder; give a file name such as"),
                            (tmp_path / "a_file" / "digits.onnx", "cannot write")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["export", "--ckpt_path", str(trained_checkpoint), "--output", str(output)])
        assert exit_info.value.code == 1
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("wrong", [1, 10_000])
def test_an_export_that_disagrees_with_pytorch_is_not_kept(
    wrong: int,
    trained_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """One digit of the 10,000 is enough: an export is kept only when every predicted digit agrees."""
    real_load = export.load_onnx

    def broken_runtime(path: Path):
        runtime, run = real_load(path)

        def run_wrong(images: torch.Tensor) -> torch.Tensor:
            probabilities = run(images)
            probabilities[:wrong] = probabilities[:wrong].roll(1, dims=1)  # these digits off by one
            return probabilities

        return runtime, run_wrong

    monkeypatch.setattr(export, "load_onnx", broken_runtime)
    target = tmp_path / "digits.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(trained_checkpoint), "--output", str(target)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"predicts another digit than PyTorch for {wrong} of the 10,000 test images" in err
    assert not list(tmp_path.iterdir())  # neither the target nor the hidden partial file


def test_a_checkpoint_trained_on_standardized_inputs_carries_that_normalization_in_the_graph(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    """The graph still takes pixels 0-255: standardizing them is inside it, as the checkpoint was trained."""
    log_dir = fit_tiny(tiny_mnist, tmp_path / "fit", "--data.normalization", "standard", "--test_after_fit", "false")
    target = tmp_path / "standard.onnx"
    main(["export", "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"), "--output", str(target),
          "--data.data_dir", str(tiny_mnist)])  # fmt: skip
    images, _ = load_split(tiny_mnist, "test")
    pixels = images[:, None].float()
    net = MNISTClassifier.load_from_checkpoint(log_dir / "checkpoints" / "last.ckpt", map_location="cpu").net.eval()
    with torch.inference_mode():
        standardized = torch.softmax(net(to_model_input(pixels, "standard")), dim=1).numpy()
        unit = torch.softmax(net(to_model_input(pixels, "unit")), dim=1).numpy()
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    exported = session.run(["probabilities"], {"images": pixels.numpy()})[0]
    assert np.abs(exported - standardized).max() < 1e-5
    assert np.abs(exported - unit).max() > 0.1  # so the check above tells the two normalizations apart
