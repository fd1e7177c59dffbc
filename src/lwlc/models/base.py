"""The base class of lwlc's models: a network that is a fixed sequence of named stages."""

from collections.abc import Iterator

import torch
from torch import nn

Stage = tuple[str, nn.Module]


class StagedNet(nn.Module):
    """A network whose forward pass is the sequential application of ``stages()``.

    The connectivity engine evaluates networks stage by stage (sharing computation up to the
    first stage whose parameters change), so ``forward`` is defined as that very loop and the two
    can never disagree.
    """

    def stages(self) -> list[Stage]:
        """The ordered (qualified module name, module) pairs whose composition is ``forward``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of inputs."""
        for _, stage in self.stages():
            x = stage(x)
        return x


def children_stages(module: nn.Module, prefix: str) -> Iterator[Stage]:
    """Each direct child of ``module`` (e.g. a Sequential) as a stage named ``prefix.child``."""
    for name, child in module.named_children():
        yield f"{prefix}.{name}", child
