"""VGG for 32x32 inputs: the CIFAR variant (one linear classifier on a 1x1 feature map), or
torchvision's VGG head at CIFAR size (the paper authors' ``vgg11(num_classes=10)``)."""

from typing import Literal

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
Head = Literal["linear", "torchvision"]
HEADS = ("linear", "torchvision")
Init = Literal["default", "torchvision"]
INITS = ("default", "torchvision")
# torchvision's VGG pools the feature map to 7x7 before its classifier; a 32x32 image leaves a
# 1x1 map, which the adaptive pool repeats 49 times (classifier input 512 * 7 * 7 = 25088).
TORCHVISION_POOL = 7
TORCHVISION_HIDDEN = 4096


def torchvision_init(module: nn.Module) -> None:
    """torchvision's VGG initialisation: convolutions Kaiming-normal (fan-out, ReLU), linear
    layers N(0, 0.01), all biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class VGG(StagedNet):
    """``features`` (conv3x3, [BatchNorm2d], ReLU, ..., max-pool), [``avgpool``], ``flatten``,
    ``classifier``.

    Channel counts are the standard ones scaled by ``width / 64``. Convolutions carry a bias
    only without BatchNorm (which has its own shift). ``head="linear"`` is one linear layer on
    the 1x1 map; ``head="torchvision"`` is torchvision's: adaptive average pool to 7x7, then
    Linear(25088, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, classes)
    (at width 64). ``init="torchvision"`` draws the weights as torchvision's VGG does.
    """

    def __init__(
        self,
        depth: int = 11,
        in_channels: int = 3,
        num_classes: int = 10,
        batch_norm: bool = False,
        width: int = 64,
        head: Head = "linear",
        dropout: float = 0.5,
        init: Init = "default",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise LwlcError(f"unknown VGG head {head!r}; available: {', '.join(HEADS)}")
        if init not in INITS:
            raise LwlcError(f"unknown VGG init {init!r}; available: {', '.join(INITS)}")
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
        self.avgpool: nn.Module | None = None
        self.flatten = nn.Flatten()
        self.classifier: nn.Module
        if head == "linear":
            self.classifier = nn.Linear(channels, num_classes)
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(TORCHVISION_POOL)
            hidden = TORCHVISION_HIDDEN * width // 64
            self.classifier = nn.Sequential(
                nn.Linear(channels * TORCHVISION_POOL**2, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        self.init = init
        self.custom_init()

    def custom_init(self) -> None:
        """Apply ``init="torchvision"`` (``reinitialize`` calls this after PyTorch's default
        resets, so a re-drawn pair member keeps it); nothing for the default init."""
        if self.init == "torchvision":
            torchvision_init(self)

    def stages(self) -> list[Stage]:
        """``features.0`` .. ``features.N``, [``avgpool``], ``flatten``, ``classifier`` (or
        ``classifier.0`` .. ``classifier.6`` with torchvision's head)."""
        pool: list[Stage] = [] if self.avgpool is None else [("avgpool", self.avgpool)]
        head: list[Stage] = (
            list(children_stages(self.classifier, "classifier"))
            if isinstance(self.classifier, nn.Sequential)
            else [("classifier", self.classifier)]
        )
        features = list(children_stages(self.features, "features"))
        return [*features, *pool, ("flatten", self.flatten), *head]
