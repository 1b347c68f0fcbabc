"""The network is a choice: each one's shape and size, reloading any of them, and refusing what does not fit."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from mnist_dense import MNISTClassifier, MNISTDataModule
from mnist_dense.checkpoints import CheckpointError, read_checkpoint
from mnist_dense.commands import main
from mnist_dense.model import ClassicConvNet, DenseNet, GlobalPoolConvNet
from tests.tiny_runs import fit_tiny
from tests.unit.test_failures import fails, one_paragraph, snapshot

CONV = ["--model.net", "GlobalPoolConvNet", "--model.net.channels", "4"]  # jsonargparse's short forms, a small net
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("net", "parameters"),
    [(DenseNet(), 101_770), (ClassicConvNet(), 20_538), (GlobalPoolConvNet(), 24_058)],
    ids=["dense", "classic", "global-pool"],
)
def test_each_network_gives_10_logits_and_has_its_parameter_count(net: torch.nn.Module, parameters: int) -> None:
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == parameters
    images = torch.rand(5, 1, 28, 28)
    net.eval()  # batch norm with its running statistics, as evaluation, predict, export and serve use it
    logits = net(images)
    assert logits.shape == (5, 10) and logits.dtype == torch.float32
    torch.testing.assert_close(net(images.contiguous(memory_format=torch.channels_last)), logits)  # any layout in


@pytest.mark.parametrize("kind", [ClassicConvNet, GlobalPoolConvNet])
def test_conv_weights_start_as_keras_conv2d_starts_them(kind: type) -> None:
    torch.manual_seed(0)
    for layer in (m for m in kind().modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)):
        receptive = layer.weight[0, 0].numel()
        fan_in, fan_out = layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert 0.95 * bound < layer.weight.abs().max() <= bound
        assert layer.bias is None or torch.equal(layer.bias, torch.zeros_like(layer.bias))  # batch norm shifts


def test_the_global_pool_forgets_where_the_digit_was_and_the_flatten_head_does_not() -> None:
    """Moved by 4 pixels (one cell after the two 2x2 pools), a digit's features only move: the global max is the
    same, while the flattened head weighs every place with its own weights."""
    torch.manual_seed(0)
    digit = torch.zeros(1, 1, 28, 28)
    digit[0, 0, 8:10, 8:16] = 1.0  # a small "7": what each feature sees stays inside the picture after the move
    for row in range(10, 16):
        digit[0, 0, row, 14 - (row - 10) : 16 - (row - 10)] = 1.0
    moved = torch.roll(digit, (4, 4), dims=(2, 3))
    assert moved.sum() == digit.sum()  # no ink wrapped around or lost
    pooled, classic = GlobalPoolConvNet().eval(), ClassicConvNet().eval()
    with torch.no_grad():
        torch.testing.assert_close(pooled(moved), pooled(digit))
        assert (classic(moved) - classic(digit)).abs().max() > 1e-3


def test_a_network_of_this_package_is_stored_as_its_config_in_plain_values(tmp_path: Path) -> None:
    model = MNISTClassifier(net=ClassicConvNet(channels=4))
    config = {"class_path": "mnist_dense.model.ClassicConvNet", "init_args": {"channels": 4}}
    assert model.hparams.net == config
    torch.save(dict(model.hparams), tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True)["net"] == config  # no module instance pickled
    rebuilt = MNISTClassifier(**torch.load(tmp_path / "hparams.pt", weights_only=True))  # as Lightning reloads it
    assert isinstance(rebuilt.net, ClassicConvNet) and rebuilt.net.channels == 4
    assert MNISTClassifier().hparams.net is None and isinstance(MNISTClassifier().net, DenseNet)  # the tutorial


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"net": torch.nn.Linear(784, 10)}, "net torch.nn.modules.linear.Linear: only this package's networks"),
        ({"net": GlobalPoolConvNet(), "hidden": 64}, "hidden 64 sizes the default DenseNet"),
        ({"net": {"class_path": "os.system", "init_args": {}}}, "net os.system: only this package's networks"),
    ],
    ids=["foreign-instance", "hidden-with-net", "foreign-config"],
)
def test_a_network_from_elsewhere_or_hidden_beside_a_net_is_refused_in_python(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MNISTClassifier(**kwargs)


def test_short_and_full_forms_choose_the_same_network(capsys: pytest.CaptureFixture) -> None:
    configs = []
    for flags in (CONV, ["--model.net", "mnist_dense.model.GlobalPoolConvNet", "--model.net.init_args.channels", "4"]):
        with pytest.raises(SystemExit):
            main(["fit", *flags, "--print_config"])
        configs.append(yaml.safe_load(capsys.readouterr().out)["model"])
    assert configs[0] == configs[1]
    assert configs[0]["net"] == {"class_path": "mnist_dense.model.GlobalPoolConvNet", "init_args": {"channels": 4}}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.net", "torch.nn.Identity"], "--model.net torch.nn.Identity: only this package's networks"),
        ([*CONV, "--model.hidden", "64"], "--model.hidden 64 sizes the default DenseNet"),
    ],
    ids=["foreign-class", "hidden-with-net"],
)
def test_a_network_from_elsewhere_is_refused_at_parse_time(flags: list[str], message: str, tmp_path: Path, capsys):
    err = fails(["fit", *flags, "--trainer.default_root_dir", str(tmp_path / "run")], capsys, code=2)
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", [ClassicConvNet, GlobalPoolConvNet])
def test_a_conv_checkpoint_reloads_in_python_and_on_the_command_line(
    kind: type, tiny_mnist: Path, tmp_path: Path, capsys
) -> None:
    flags = ["--model.net", kind.__name__, "--model.net.channels", "4"]
    log_dir = fit_tiny(tiny_mnist, tmp_path / "fit", *flags)  # a conv fit of a few steps through the CLI
    ckpt = log_dir / "checkpoints" / "last.ckpt"
    assert read_checkpoint(ckpt)["hyper_parameters"]["net"]["class_path"] == f"mnist_dense.model.{kind.__name__}"
    model = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert type(model.net) is kind and model.net.channels == 4
    saved = read_checkpoint(ckpt)["state_dict"]
    assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items())
    capsys.readouterr()
    test = ["test", "--ckpt_path", str(ckpt), "--data.data_dir", str(tiny_mnist), *QUIET]  # no --model.net
    main([*test, "--trainer.default_root_dir", str(tmp_path / "test")])
    tested = float(re.search(r"test_acc\W+([0-9.]+)", capsys.readouterr().out).group(1))
    dm = MNISTDataModule(str(tiny_mnist), val_size=100)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert tested == pytest.approx(trainer.test(model, datamodule=dm, verbose=False)[0]["test_acc"], abs=1e-6)
    if kind is ClassicConvNet:
        assert tested > 0.5  # 32 steps learned the tiny digits (chance is 0.1), which differ only in where a bar is
    else:
        assert tested < 0.5  # ... which is just what a global max pool forgets


def test_a_command_line_naming_another_network_than_the_checkpoints_is_refused(
    tiny_mnist: Path, tmp_path: Path, capsys
) -> None:
    conv = fit_tiny(tiny_mnist, tmp_path / "conv", *CONV) / "checkpoints" / "last.ckpt"
    dense = fit_tiny(tiny_mnist, tmp_path / "dense", "--model.hidden", "16") / "checkpoints" / "last.ckpt"
    before = snapshot(tmp_path)
    cases = [
        (conv, ["--model.hidden", "64"], ["GlobalPoolConvNet(channels=4)", "--model.hidden 64"]),
        (conv, ["--model.net", "ClassicConvNet", "--model.net.channels", "4"], ["ClassicConvNet(channels=4)"]),
        (conv, ["--model.net", "GlobalPoolConvNet"], ["GlobalPoolConvNet(channels=16) was asked"]),
        (dense, CONV, ["DenseNet(hidden=16) network", "--model.net GlobalPoolConvNet(channels=4)"]),
    ]
    for ckpt, flags, expected in cases:
        capsys.readouterr()
        args = ["test", "--ckpt_path", str(ckpt), *flags, "--data.data_dir", str(tiny_mnist), *QUIET]
        message = one_paragraph(fails([*args, "--trainer.default_root_dir", str(tmp_path / "refused")], capsys))
        assert str(ckpt) in message and all(part in message for part in expected), message
    assert snapshot(tmp_path) == before and not (tmp_path / "refused").exists()


def test_weights_of_another_network_in_python_name_both_networks(tiny_mnist: Path, tmp_path: Path) -> None:
    ckpt = fit_tiny(tiny_mnist, tmp_path / "conv", *CONV) / "checkpoints" / "last.ckpt"
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    pattern = r"holds a GlobalPoolConvNet\(channels=4\) network, but the model built here is a DenseNet\(hidden=128\)"
    with pytest.raises(CheckpointError, match=pattern):
        trainer.validate(MNISTClassifier(), MNISTDataModule(str(tiny_mnist), val_size=100), ckpt_path=ckpt)


@pytest.mark.parametrize("name", ["Tripwire", "DenseNet", "ClassicConvNet", "GlobalPoolConvNet"])
def test_a_checkpoint_naming_a_class_from_elsewhere_is_refused_without_importing_it(
    name: str, tiny_mnist: Path, tmp_path: Path, capsys
) -> None:
    """Also a class that has the name of one of this package's networks: the whole class path must be this package's."""
    ckpt = fit_tiny(tiny_mnist, tmp_path / "conv", *CONV) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["net"] = {"class_path": f"tests.foreign_network.{name}", "init_args": {}}
    foreign = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, foreign)
    expected = f"Checkpoint {foreign} names the network 'tests.foreign_network.{name}', which is not one of"
    with pytest.raises(CheckpointError, match=expected):
        MNISTClassifier.load_from_checkpoint(foreign)
    with open(foreign, "rb") as f, pytest.raises(CheckpointError, match=f"tests.foreign_network.{name}"):
        MNISTClassifier.load_from_checkpoint(f)
    capsys.readouterr()
    for subcommand in ("test", "predict"):
        args = [subcommand, "--ckpt_path", str(foreign), "--data.data_dir", str(tiny_mnist), *QUIET]
        message = one_paragraph(fails([*args, "--trainer.default_root_dir", str(tmp_path / "refused")], capsys))
        assert expected in message and "it was not imported" in message
    assert "tests.foreign_network" not in sys.modules
