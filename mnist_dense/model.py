"""The tutorial's network as a plain `nn.Module`: Flatten -> Dense(128, ReLU) -> Dense(10)."""

from torch import Tensor, nn

from mnist_dense.data import IMAGE_SIZE, NUM_CLASSES


class DenseNet(nn.Module):
    """Returns logits; the tutorial's softmax lives in the loss (cross-entropy) and in `predict_step`.

    PyTorch's default initialization is kept (Keras uses glorot-uniform); both reach the tutorial's
    accuracy. `hidden=128` gives the tutorial's 101,770 parameters.
    """

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(IMAGE_SIZE * IMAGE_SIZE, hidden),
            nn.ReLU(),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
