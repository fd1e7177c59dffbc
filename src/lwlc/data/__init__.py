"""lwlc's LightningDataModules: in-memory tensors, deterministic splits, seeded data order."""

from lwlc.data.base import EpochSeededSampler, TensorDataModule
from lwlc.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lwlc.data.digits import DigitsDataModule
from lwlc.data.mnist import FashionMNISTDataModule, MNISTDataModule
from lwlc.data.text import CharTextDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CharTextDataModule",
    "DigitsDataModule",
    "EpochSeededSampler",
    "FashionMNISTDataModule",
    "MNISTDataModule",
    "TensorDataModule",
]
