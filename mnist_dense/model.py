"""The tutorial's network as a plain `nn.Module`: Flatten -> Dense(128, ReLU) -> Dense(10)."""

from torch import Tensor, nn

from mnist_dense.constants import IMAGE_SIZE, NUM_CLASSES


class DenseNet(nn.Module):
    """Returns logits; the tutorial's softmax lives in the loss (cross-entropy) and in `predict_step`.

    Weights start as Keras' `Dense` starts them (glorot-uniform, zero bias) rather than PyTorch's
    default: it is the tutorial's starting point, and it reached its accuracy more reliably here.
    `hidden=128` gives the tutorial's 101,770 parameters.
    """

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(IMAGE_SIZE * IMAGE_SIZE, hidden),
            nn.ReLU(),
            nn.Linear(hidden, NUM_CLASSES),
        )
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
