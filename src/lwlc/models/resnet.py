"""ResNet-18 for 32x32 inputs (CIFAR variant: 3x3 stem with stride 1, no max-pool)."""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lwlc.core.errors import LwlcError
from lwlc.models.base import Stage, StagedNet, children_stages

Norm = Literal["batch", "none"]
NORMS = ("batch", "none")
Init = Literal["default", "torchvision"]
INITS = ("default", "torchvision")


def _norm_layer(norm: Norm, channels: int) -> nn.BatchNorm2d | None:
    """A BatchNorm2d for ``norm="batch"``, else nothing (the module is then not registered)."""
    return nn.BatchNorm2d(channels) if norm == "batch" else None


def _apply(module: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, or ``x`` when the optional module is absent."""
    return x if module is None else module(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (a 1x1 projection when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: Norm, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = _norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=bias)
        self.bn2 = _norm_layer(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut.append(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=bias))
            if norm == "batch":
                self.shortcut.append(nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = F.relu(_apply(self.bn1, self.conv1(x)))
        out = _apply(self.bn2, self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(StagedNet):
    """Stem ``conv1``/``bn1``/``relu``, ``layer1``..``layer4``, ``avgpool``, ``flatten``, ``fc``.

    Each layer holds two BasicBlocks; widths are 64/128/256/512 scaled by ``width / 64``. With
    ``norm="none"`` there is no BatchNorm anywhere (as in the paper's ResNet-18) and the
    convolutions carry biases instead, unless ``conv_bias`` says otherwise (``conv_bias=False``
    with ``norm="none"`` is the paper authors' ``resnet18(norm_layer=nn.Identity)``).
    ``init="torchvision"`` draws every convolution but the stem Kaiming-normal (fan-out, ReLU) as
    torchvision's ResNet does; the stem keeps nn.Conv2d's default, as in the authors' code, which
    replaces torchvision's stem after construction.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        norm: Norm = "batch",
        width: int = 64,
        conv_bias: bool | None = None,
        init: Init = "default",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise LwlcError(f"unknown ResNet18 norm {norm!r}; available: {', '.join(NORMS)}")
        if init not in INITS:
            raise LwlcError(f"unknown ResNet18 init {init!r}; available: {', '.join(INITS)}")
        bias = norm == "none" if conv_bias is None else conv_bias
        planes = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, padding=1, bias=bias)
        self.bn1 = _norm_layer(norm, planes[0])
        self.relu = nn.ReLU()
        in_planes = planes[0]
        for i, out_planes in enumerate(planes, start=1):
            stride = 1 if i == 1 else 2
            blocks = nn.Sequential(
                BasicBlock(in_planes, out_planes, stride, norm, bias),
                BasicBlock(out_planes, out_planes, 1, norm, bias),
            )
            self.add_module(f"layer{i}", blocks)
            in_planes = out_planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        self.init = init
        self.custom_init()

    def custom_init(self) -> None:
        """Apply ``init="torchvision"`` (``reinitialize`` calls this after PyTorch's default
        resets, so a re-drawn pair member keeps it); nothing for the default init."""
        if self.init == "torchvision":
            for name, m in self.named_modules():
                if isinstance(m, nn.Conv2d) and name != "conv1":
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def stages(self) -> list[Stage]:
        """conv1, [bn1], relu, layer1.0, layer1.1, ..., layer4.1, avgpool, flatten, fc."""
        stem: list[Stage] = [("conv1", self.conv1)]
        if self.bn1 is not None:
            stem.append(("bn1", self.bn1))
        stem.append(("relu", self.relu))
        blocks = [
            stage
            for i in range(1, 5)
            for stage in children_stages(self.get_submodule(f"layer{i}"), f"layer{i}")
        ]
        return [
            *stem,
            *blocks,
            ("avgpool", self.avgpool),
            ("flatten", self.flatten),
            ("fc", self.fc),
        ]
