"""The networks `MNISTClassifier` trains, each a plain `nn.Module`: (B, 1, 28, 28) images in, (B, 10) logits out.

- `DenseNet`, the tutorial's: Flatten -> Dense(128, ReLU) -> Dense(10). Every pixel has its own weights.
- `ClassicConvNet`: conv-pool-conv-pool, then flatten and one linear layer. The convolutions find strokes
  wherever they are, but the flattened head still has one weight per feature and per place, so it learns
  where the strokes of a centred digit lie.
- `GlobalPoolConvNet`: the same convolutions and a third, then a global max pool: the head sees only how strongly
  each feature appeared somewhere in the picture, not where.

Each convolution is followed by batch normalization (before its ReLU): without it, every width of the global-pool
network tried while designing it stayed between 98.1% and 98.7% after the tutorial's 5 epochs (seed 0; 16-32-64
channels: 98.45%), and it passed 99% with it (README, "Why convolutions").

A checkpoint names its network by class path; only the classes of `NETWORKS` are ever built from one.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from mnist_dense.constants import IMAGE_SIZE, NUM_CLASSES, TUTORIAL_HIDDEN


def keras_init(net: nn.Module) -> None:
    """Weights as Keras' `Dense` and `Conv2D` start them (glorot-uniform, zero bias) rather than PyTorch's default.

    It is the tutorial's starting point, and it reached its accuracy more reliably here.
    """
    for layer in net.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class DenseNet(nn.Module):
    """The tutorial's network; `hidden=128` gives its 101,770 parameters.

    Returns logits; the tutorial's softmax lives in the loss (cross-entropy) and in `predict_step`.
    """

    def __init__(self, hidden: int = TUTORIAL_HIDDEN) -> None:
        super().__init__()
        self.hidden = hidden
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(IMAGE_SIZE * IMAGE_SIZE, hidden),
            nn.ReLU(),
            nn.Linear(hidden, NUM_CLASSES),
        )
        keras_init(self)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


def conv_layers(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 convolution keeping the size (zero padding, as the empty border of a digit is), batch norm, ReLU.

    No bias in the convolution: batch normalization's own shift takes its place. The ReLU works in place on batch
    norm's output, which nothing else reads: the same values and gradients, one feature map less to allocate.
    """
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """`conv_layers`, then a 2x2 max pool: half the size each way."""
    return [*conv_layers(in_channels, out_channels), nn.MaxPool2d(2)]


class ConvNetBase(nn.Module):
    """Convolutions run in channels-last memory order: oneDNN's fast layout on the CPU (benchmarks/step_costs.py)."""

    def channels_last(self) -> None:
        self.to(memory_format=torch.channels_last)

    def features_of(self, images: Tensor) -> Tensor:
        return self.features(images.contiguous(memory_format=torch.channels_last))


class ClassicConvNet(ConvNetBase):
    """Conv(channels) -> pool -> Conv(2 x channels) -> pool -> flatten (7x7 places) -> Linear(10).

    `channels=16`: 20,538 parameters.
    """

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.features = nn.Sequential(*conv_block(1, channels), *conv_block(channels, 2 * channels))
        self.head = nn.Linear(2 * channels * (IMAGE_SIZE // 4) ** 2, NUM_CLASSES)
        keras_init(self)
        self.channels_last()

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features_of(images).flatten(1))


class GlobalPoolConvNet(ConvNetBase):
    """Conv(channels) -> pool -> Conv(2 x channels) -> pool -> Conv(4 x channels) -> global max pool -> Linear(10).

    The third convolution sees 18x18 pixels of the digit, enough for its features to say which digit it is
    wherever they fire. `channels=16`: 24,058 parameters.
    """

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.features = nn.Sequential(
            *conv_block(1, channels), *conv_block(channels, 2 * channels), *conv_layers(2 * channels, 4 * channels)
        )
        self.head = nn.Linear(4 * channels, NUM_CLASSES)
        keras_init(self)
        self.channels_last()

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features_of(images).amax(dim=(2, 3)))


NETWORKS: dict[str, type[nn.Module]] = {net.__name__: net for net in (DenseNet, ClassicConvNet, GlobalPoolConvNet)}


def class_path(kind: type[nn.Module]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def network_class(path: str) -> type[nn.Module] | None:
    """The network class a class path names, if it is one of `NETWORKS`; None otherwise. Imports nothing."""
    module, _, name = str(path).rpartition(".")
    kind = NETWORKS.get(name)
    return kind if kind is not None and module == __name__ else None


def network_spec(net: Any, hidden: int = TUTORIAL_HIDDEN) -> dict[str, Any]:
    """`{"class_path", "init_args"}` with every init arg, as plain values, for a network given any way.

    `net` is an instance, a config (dict or jsonargparse Namespace, as LightningCLI and checkpoints hold it) or
    None (the tutorial's DenseNet of `hidden` units). A class outside `NETWORKS` keeps its path and its own args.
    """
    if net is None:
        return {"class_path": class_path(DenseNet), "init_args": {"hidden": int(hidden)}}
    if isinstance(net, nn.Module):
        kind, given = type(net), {name: getattr(net, name, None) for name in _init_arg_names(type(net))}
    else:
        config = _as_dict(net)
        path, given = str(config.get("class_path", repr(net))), _as_dict(config.get("init_args"))
        kind = network_class(path)
        if kind is None:
            return {"class_path": path, "init_args": given}
    defaults = {name: p.default for name, p in inspect.signature(kind).parameters.items()}
    init_args = {name: _plain(given.get(name, default)) for name, default in defaults.items()}
    return {"class_path": class_path(kind), "init_args": init_args}


def build_network(spec: dict[str, Any]) -> nn.Module:
    """The network of a spec from `network_spec`; only `NETWORKS` are built (ValueError naming the others)."""
    kind = network_class(spec["class_path"])
    if kind is None:
        raise ValueError(f"{spec['class_path']!r} is not one of this package's networks ({known_networks()}).")
    return kind(**spec["init_args"])


def describe(spec: dict[str, Any]) -> str:
    """`GlobalPoolConvNet(channels=16)`: a network spec as a person reads it."""
    name = spec["class_path"].rpartition(".")[2]
    return f"{name}({', '.join(f'{k}={v}' for k, v in spec['init_args'].items())})"


def known_networks() -> str:
    return ", ".join(class_path(kind) for kind in NETWORKS.values())


def _init_arg_names(kind: type) -> list[str]:
    return [name for name in inspect.signature(kind).parameters if name not in ("self", "args", "kwargs")]


def _as_dict(config: Any) -> dict[str, Any]:
    """A jsonargparse Namespace or a mapping as a dict (anything else as an empty one)."""
    if hasattr(config, "as_dict"):
        return config.as_dict()
    return dict(config) if isinstance(config, dict) else {}


def _plain(value: Any) -> Any:
    """jsonargparse's PositiveInt and friends as int/float: torch's `weights_only` load refuses other classes."""
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain(value)
    return value
