"""A data module reading its splits from a real file, so that a test can hand lwlc any data: labels
outside the classes, NaN/Inf inputs, an empty split.

``FileData(path)`` loads ``torch.save({"train_x", "train_y", "test_x", "test_y"})`` (inputs shaped
like the digits, 1x8x8, ten classes) and splits it as every lwlc data module does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lwlc.data.base import TensorDataModule


class FileData(TensorDataModule):
    """Digits-shaped data (1x8x8 inputs, ten classes) from a file of tensors."""

    name = "file"
    num_classes = 10
    input_shape = (1, 8, 8)
    mean = (0.0,)
    std = (1.0,)

    def __init__(self, path: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.path = path

    def source(self) -> str:
        return self.path

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        data = torch.load(self.path, weights_only=True)
        return data["train_x"], data["train_y"], data["test_x"], data["test_y"]


def write_data(path: str, n_train: int = 60, n_test: int = 40, seed: int = 0) -> dict[str, Tensor]:
    """Valid digits-shaped data saved at ``path`` (a test then breaks one thing in it)."""
    g = torch.Generator().manual_seed(seed)
    data = {
        "train_x": torch.rand(n_train, 1, 8, 8, generator=g),
        "train_y": torch.randint(0, 10, (n_train,), generator=g),
        "test_x": torch.rand(n_test, 1, 8, 8, generator=g),
        "test_y": torch.randint(0, 10, (n_test,), generator=g),
    }
    torch.save(data, path)
    return data
