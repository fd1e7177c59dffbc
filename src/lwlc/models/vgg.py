"""VGG for 32x32 inputs (the CIFAR variant: one linear classifier on a 1x1 feature map)."""

from torch import nn

from lwlc.core.errors import LwlcError
from lwlc.models.base import Stage, StagedNet, children_stages

# Number of 3x3 convolutions in each of the five stages (each stage ends in a 2x2 max-pool),
# and the stages' channel counts at width 64.
CONV_COUNTS: dict[int, tuple[int, ...]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
STAGE_CHANNELS = (64, 128, 256, 512, 512)


class VGG(StagedNet):
    """``features`` (conv3x3, [BatchNorm2d], ReLU, ..., max-pool), ``flatten``, ``classifier``.

    Channel counts are the standard ones scaled by ``width / 64``. Convolutions carry a bias
    only without BatchNorm (which has its own shift).
    """

    def __init__(
        self,
        depth: int = 11,
        in_channels: int = 3,
        num_classes: int = 10,
        batch_norm: bool = False,
        width: int = 64,
    ) -> None:
        super().__init__()
        if depth not in CONV_COUNTS:
            available = ", ".join(map(str, CONV_COUNTS))
            raise LwlcError(f"unknown VGG depth {depth}; available: {available}")
        layers: list[nn.Module] = []
        channels = in_channels
        for count, stage_channels in zip(CONV_COUNTS[depth], STAGE_CHANNELS, strict=True):
            out = stage_channels * width // 64
            for _ in range(count):
                layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU())
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def stages(self) -> list[Stage]:
        """``features.0`` .. ``features.N``, ``flatten``, ``classifier``."""
        return [
            *children_stages(self.features, "features"),
            ("flatten", self.flatten),
            ("classifier", self.classifier),
        ]
