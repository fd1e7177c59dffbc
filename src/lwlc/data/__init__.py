"""lwlc's LightningDataModules: in-memory tensors, deterministic splits, seeded data order.

The classes are imported on first use (``from lwlc.data import DigitsDataModule``, or a config's
``class_path: lwlc.data.DigitsDataModule``): each subclasses Lightning's ``LightningDataModule``,
and importing Lightning takes seconds that ``lwlc.data.shapes`` (read by ``lwlc analyze
--list-layers``) does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "CIFAR10DataModule": "cifar",
    "CIFAR100DataModule": "cifar",
    "CharTextDataModule": "text",
    "DigitsDataModule": "digits",
    "EpochSeededSampler": "base",
    "FashionMNISTDataModule": "mnist",
    "MNISTDataModule": "mnist",
    "TensorDataModule": "base",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    """Import the module of one of the classes above when it is first asked for."""
    if name not in _MODULES:
        raise AttributeError(f"module 'lwlc.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lwlc.data.{_MODULES[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def import_all() -> None:
    """Import every data module, so that Lightning knows them as subclasses of its
    ``LightningDataModule`` (LightningCLI resolves a short ``--data DigitsDataModule`` so)."""
    for module in sorted(set(_MODULES.values())):
        importlib.import_module(f"lwlc.data.{module}")
