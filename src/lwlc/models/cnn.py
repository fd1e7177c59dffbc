"""A small convolutional classifier for digits (8x8), MNIST (28x28) and CIFAR (32x32)."""

from torch import nn

from lwlc.models.base import Stage, StagedNet, children_stages


class SmallCNN(StagedNet):
    """Three 3x3 convolutions with one max-pool and global average pooling, then a linear head.

    Global pooling makes it independent of the input resolution (any side >= 2).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(2 * width, num_classes)

    def stages(self) -> list[Stage]:
        """``features.0`` .. ``features.7``, ``flatten``, ``classifier``."""
        return [
            *children_stages(self.features, "features"),
            ("flatten", self.flatten),
            ("classifier", self.classifier),
        ]
