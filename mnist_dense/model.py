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


def class_path(net: object) -> str:
    """The class path of a network given as an instance, or as a config (`{"class_path", "init_args"}`: a dict or a
    jsonargparse Namespace, as LightningCLI and checkpoints hold it)."""
    if isinstance(net, type):
        return f"{net.__module__}.{net.__qualname__}"
    if isinstance(net, nn.Module):
        return class_path(type(net))
    return str(net.get("class_path") if hasattr(net, "get") else net)


def network_class(net: object) -> type[nn.Module] | None:
    """The class of `NETWORKS` a network (an instance or a config) is, judged on its whole class path alone; None
    for any other. Imports nothing."""
    module, _, name = class_path(net).rpartition(".")
    kind = NETWORKS.get(name) if module == __name__ else None
    return kind if kind is not None and (not isinstance(net, nn.Module) or type(net) is kind) else None


def build_network(config: Any) -> nn.Module:
    """The network a config names, built with its init args. Only `NETWORKS` are built, and nothing is imported:
    a class path outside this module is a ValueError that names this package's networks."""
    kind = network_class(config)
    if kind is None:
        raise ValueError(f"{class_path(config)!r} is not one of this package's networks ({known_networks()}).")
    return kind(**network_config(config)["init_args"])


def network_config(net: object = None, hidden: int = TUTORIAL_HIDDEN) -> dict[str, Any]:
    """`{"class_path", "init_args"}` as a checkpoint keeps it, for a network given as an instance, a config, or None
    (the tutorial's DenseNet of `hidden` units): what is compared to tell whether two networks are the same."""
    if net is None:
        return {"class_path": class_path(DenseNet), "init_args": {"hidden": hidden}}
    if isinstance(net, nn.Module):
        names = [name for name in inspect.signature(type(net)).parameters if name not in ("args", "kwargs")]
        return {"class_path": class_path(net), "init_args": {name: getattr(net, name) for name in names}}
    init_args = net.get("init_args") or {}
    return {
        "class_path": class_path(net),
        "init_args": init_args.as_dict() if hasattr(init_args, "as_dict") else dict(init_args),
    }


def describe(config: dict[str, Any]) -> str:
    """`GlobalPoolConvNet(channels=16)`: a `network_config` as a person reads it."""
    name = config["class_path"].rpartition(".")[2]
    return f"{name}({', '.join(f'{k}={v}' for k, v in config['init_args'].items())})"


def known_networks() -> str:
    return ", ".join(f"{__name__}.{name}" for name in NETWORKS)
