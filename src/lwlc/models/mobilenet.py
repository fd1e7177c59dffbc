"""MobileNet (v1) for 32x32 inputs, as the paper authors define it for CIFAR-10/100.

Depthwise-separable blocks after a 3x3 stem with stride 1; every convolution is bias-free and
followed by BatchNorm, by default without running statistics (``track_running_stats=False``, as
the authors' code): such a BatchNorm normalises with the batch's own statistics also in eval
mode.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lwlc.models.base import Stage, StagedNet, children_stages

# Output channels of the 13 blocks; (channels, 2) halves the map (stride 2), else stride 1.
CONFIG: tuple[int | tuple[int, int], ...] = (
    64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024,
)  # fmt: skip


class DepthwiseBlock(nn.Module):
    """Depthwise 3x3 conv, BatchNorm, ReLU, then pointwise 1x1 conv, BatchNorm, ReLU."""

    def __init__(
        self, in_planes: int, out_planes: int, stride: int, track_running_stats: bool
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_planes, in_planes, 3, stride=stride, padding=1, groups=in_planes, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_planes, track_running_stats=track_running_stats)
        self.conv2 = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))))."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class MobileNet(StagedNet):
    """Stem ``conv1``/``bn1``/``relu``, ``layers.0`` .. ``layers.12``, ``avgpool`` (2x2 on the
    final 2x2 map), ``flatten``, ``linear``.

    Channel counts are the authors' scaled by ``width / 32`` (the stem's width).

    Args:
        num_classes: Output classes (the paper's CIFAR-100 net: 100).
        in_channels: Input channels.
        width: Stem channels (32 in the paper); the blocks scale with it.
        track_running_stats: Whether BatchNorm keeps running statistics for eval mode
            (False, as the authors: batch statistics always).
    """

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        width: int = 32,
        track_running_stats: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, track_running_stats=track_running_stats)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        in_planes = width
        for entry in CONFIG:
            planes, stride = entry if isinstance(entry, tuple) else (entry, 1)
            out_planes = planes * width // 32
            blocks.append(DepthwiseBlock(in_planes, out_planes, stride, track_running_stats))
            in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_planes, num_classes)

    def stages(self) -> list[Stage]:
        """conv1, bn1, relu, layers.0 .. layers.12, avgpool, flatten, linear."""
        return [
            ("conv1", self.conv1),
            ("bn1", self.bn1),
            ("relu", self.relu),
            *children_stages(self.layers, "layers"),
            ("avgpool", self.avgpool),
            ("flatten", self.flatten),
            ("linear", self.linear),
        ]
