"""`export` and `serve` read their options from `--config FILE.yaml` too, as LightningCLI's commands do."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_dense.commands import main
from mnist_dense.deploy import export, serve


def write(tmp_path: Path, text: str) -> str:
    config = tmp_path / "options.yaml"
    config.write_text(text)
    return str(config)


def test_a_serve_config_sets_the_options_and_a_flag_after_it_wins(tmp_path: Path) -> None:
    config = write(tmp_path, "ckpt_path: [a.ckpt, b.ckpt]\nnames: [dense, conv]\nport: 9000\npublic: 0.0.0.0:8080\n")
    options = serve.parse_args(["--config", config, "--port", "9100"])
    assert (options.ckpt_path, options.names, options.port, options.public) == (
        ["a.ckpt", "b.ckpt"], ["dense", "conv"], 9100, "0.0.0.0:8080",
    )  # fmt: skip
    assert options.host == "127.0.0.1" and options.max_batch_size == serve.DEFAULT_BATCH  # the defaults stay
    assert serve.parse_args(["--port", "9100", "--config", config]).port == 9000  # the config, after it, wins


def test_an_export_config_sets_the_format_output_and_data_folder(tmp_path: Path) -> None:
    config = write(tmp_path, "ckpt_path: [last]\nformat: pt2\noutput: net.pt2\ndata.data_dir: /srv/mnist\n")
    options = export.parse_args(["--config", config, "--format", "onnx"])
    assert (options.ckpt_path, options.format, options.output, options.data_dir) == (
        ["last"], "onnx", Path("net.pt2"), "/srv/mnist",
    )  # fmt: skip


def test_a_value_from_the_config_is_checked_as_the_flag_is(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write(tmp_path, "ckpt_path: [last]\nport: 80\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--config", config])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: --port 80: use a port from 1024 to 65535")


@pytest.mark.parametrize(
    ("text", "message"),
    [(None, "File does not exist"), ("prot: 9000\n", "prot"), ("port: eighty\n", 'Parser key "port"')],
)
def test_a_config_that_is_missing_or_wrong_is_one_error_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str | None, message: str
) -> None:
    config = write(tmp_path, text) if text else str(tmp_path / "missing.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--ckpt_path", "last", "--config", config])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
