"""MNIST and Fashion-MNIST from their IDX files (gzipped or not), read by torchvision."""

import gzip
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.datasets import MNIST, FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from lwlc.core.errors import LwlcError
from lwlc.data.base import TensorDataModule, download_failed

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path, reader: Callable[[str], Tensor]) -> Tensor:
    """Read an IDX file with torchvision's ``reader``, decompressing a ``.gz`` file first."""
    try:
        if path.suffix != ".gz":
            return reader(str(path))
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / path.stem
            with gzip.open(path, "rb") as src, plain.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            return reader(str(plain))
    except (OSError, AssertionError, TypeError, ValueError, RuntimeError) as err:
        raise LwlcError(
            f"cannot read IDX file {path}: {err}; replace it with the original"
        ) from err


class IdxDataModule(TensorDataModule):
    """Base of the MNIST-format data sets: four IDX files, searched in several folders.

    A folder qualifies when it holds all four files (each plain or ``.gz``): ``root`` itself,
    torchvision's ``root/<Name>/raw``, then the class's system folders.
    """

    torchvision_class: type[MNIST]
    system_dirs: tuple[str, ...] = ()

    def __init__(self, root: str = "data", download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download

    def search_dirs(self) -> list[Path]:
        """The folders searched for the IDX files, in order."""
        root = Path(self.root)
        raw = root / self.torchvision_class.__name__ / "raw"
        return [root, raw, *map(Path, self.system_dirs)]

    def _find(self) -> dict[str, Path] | None:
        """The four files of the first folder that holds them all, or None."""
        for folder in self.search_dirs():
            found = {}
            for key, name in FILES.items():
                candidates = [folder / name, folder / f"{name}.gz"]
                found[key] = next((path for path in candidates if path.is_file()), None)
            if all(found.values()):
                return found  # type: ignore[return-value]
        return None

    def _prepare(self) -> None:
        if self.download and self._find() is None:
            try:
                self.torchvision_class(self.root, train=True, download=True)
            except (OSError, RuntimeError) as err:
                raise download_failed(self.name, self.root, err) from err
        self._located()

    def _located(self) -> dict[str, Path]:
        files = self._find()
        if files is None:
            searched = ", ".join(f"{folder}/" for folder in self.search_dirs())
            raise LwlcError(
                f"{self.name} not found under {self.root}/ (searched {searched} for "
                f"{FILES['train_images']}[.gz] and the other IDX files; offline?): put the IDX "
                "files there or run once online with --data.init_args.download true"
            )
        return files

    def source(self) -> str:
        """The folder and the four files found there."""
        files = self._located()
        folder = next(iter(files.values())).parent
        return f"{folder}/ ({', '.join(path.name for path in files.values())})"

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        files = self._located()
        images = {k: read_idx(files[k], read_image_file) for k in ("train_images", "test_images")}
        labels = {k: read_idx(files[k], read_label_file) for k in ("train_labels", "test_labels")}
        return (
            images["train_images"].unsqueeze(1).to(torch.float32) / 255.0,
            labels["train_labels"],
            images["test_images"].unsqueeze(1).to(torch.float32) / 255.0,
            labels["test_labels"],
        )


class MNISTDataModule(IdxDataModule):
    """MNIST: 60000 + 10000 grey 28x28 handwritten digits, 10 classes."""

    name = "MNIST"
    torchvision_class = MNIST
    num_classes = 10
    input_shape = (1, 28, 28)
    mean = (0.1307,)
    std = (0.3081,)


class FashionMNISTDataModule(IdxDataModule):
    """Fashion-MNIST: 60000 + 10000 grey 28x28 clothing images, 10 classes.

    Also found where Debian's ``dataset-fashion-mnist`` package installs it.
    """

    name = "FashionMNIST"
    torchvision_class = FashionMNIST
    system_dirs = ("/usr/share/datasets/fashion-mnist",)
    num_classes = 10
    input_shape = (1, 28, 28)
    mean = (0.2860,)
    std = (0.3530,)
