"""CIFAR-10 and CIFAR-100 through torchvision's own readers of the python pickles."""

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.datasets import CIFAR10, CIFAR100

from lwlc.core.errors import LwlcError
from lwlc.data.augment import CropFlip
from lwlc.data.base import Augment, TensorDataModule, download_failed


class CifarDataModule(TensorDataModule):
    """Base of the CIFAR data modules: 50000 + 10000 colour 32x32 images.

    ``augment`` switches the standard training augmentation (random crop 32 with padding 4 and
    horizontal flip), applied to training batches only. ``mean`` and ``std`` replace the data
    set's normalisation constants (the paper authors' CIFAR-10 std is (0.2023, 0.1994, 0.2010)).
    """

    torchvision_class: type[CIFAR10]
    input_shape = (3, 32, 32)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        augment: bool = True,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mean is not None:
            self.mean = tuple(mean)
        if std is not None:
            if not all(s > 0 for s in std):
                raise LwlcError(f"{self.name}: std={tuple(std)} must be positive")
            self.std = tuple(std)
        self.root = root
        self.download = download
        self.augment = augment

    @property
    def folder(self) -> Path:
        """Where torchvision keeps the extracted pickles."""
        return Path(self.root) / self.torchvision_class.base_folder

    def _prepare(self) -> None:
        if self.download:
            try:
                self.torchvision_class(self.root, train=True, download=True)
            except (OSError, RuntimeError) as err:
                raise download_failed(self.name, self.root, err) from err
        self._require_folder()

    def _require_folder(self) -> None:
        if not self.folder.is_dir():
            raise LwlcError(
                f"{self.name} not found under {self.root}/ (offline?): put {self.folder.name} "
                "there or run once online with --data.init_args.download true"
            )

    def _read(self, train: bool) -> tuple[Tensor, Tensor]:
        try:
            data = self.torchvision_class(self.root, train=train, download=False)
        except RuntimeError as err:
            raise LwlcError(
                f"{self.name} under {self.folder}/ is incomplete or corrupted ({err}): delete it "
                "and run once online with --data.init_args.download true"
            ) from err
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return images, torch.as_tensor(data.targets, dtype=torch.long)

    def source(self) -> str:
        return f"{self.folder}/"

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        self._require_folder()
        return (*self._read(train=True), *self._read(train=False))

    def train_augment(self) -> Augment | None:
        if not self.augment:
            return None
        black = self.normalise(torch.zeros(len(self.mean), 1, 1)).flatten()
        return CropFlip(padding=4, fill=black)


class CIFAR10DataModule(CifarDataModule):
    """CIFAR-10: 10 classes."""

    name = "CIFAR-10"
    torchvision_class = CIFAR10
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(CifarDataModule):
    """CIFAR-100: 100 (fine) classes."""

    name = "CIFAR-100"
    torchvision_class = CIFAR100
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
