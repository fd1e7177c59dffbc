"""A fully connected classifier with ReLU hidden layers."""

from torch import nn

from lwlc.models.base import Stage, StagedNet


class MLP(StagedNet):
    """``flatten``, ``depth`` hidden layers ``fc{i}`` + ``act{i}``, then the linear ``head``."""

    def __init__(
        self, in_features: int = 64, num_classes: int = 10, width: int = 128, depth: int = 2
    ) -> None:
        super().__init__()
        self.depth = depth
        self.flatten = nn.Flatten()
        for i in range(1, depth + 1):
            self.add_module(f"fc{i}", nn.Linear(in_features if i == 1 else width, width))
            self.add_module(f"act{i}", nn.ReLU())
        self.head = nn.Linear(width if depth > 0 else in_features, num_classes)

    def stages(self) -> list[Stage]:
        """Every child in registration order, which is the forward order."""
        return list(self.named_children())
