"""The sample shape of each of lwlc's image data modules, declared without importing them.

The modules subclass Lightning's ``LightningDataModule``, so importing one imports Lightning (and
torchmetrics, torchvision: seconds). ``lwlc analyze --list-layers`` only needs an example batch of
the right shape to trace a model's forward order, so it reads the shape here. Each class's own
``input_shape`` is the same (tests/commands/test_startup_fast.py checks); a class not listed (a
subclass, text windows whose length is an init argument) is loaded as before.
"""

from __future__ import annotations

from typing import Any

INPUT_SHAPES = {
    "lwlc.data.digits.DigitsDataModule": (1, 8, 8),
    "lwlc.data.mnist.MNISTDataModule": (1, 28, 28),
    "lwlc.data.mnist.FashionMNISTDataModule": (1, 28, 28),
    "lwlc.data.cifar.CIFAR10DataModule": (3, 32, 32),
    "lwlc.data.cifar.CIFAR100DataModule": (3, 32, 32),
}


def declared_input_shape(config: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of one sample (float32) of the data module ``config`` names
    (``{class_path, init_args}``), when it is one of lwlc's fixed-shape modules, else None."""
    path = str(config.get("class_path", ""))
    module, _, name = path.rpartition(".")
    if module == "lwlc.data":  # the package's re-export of lwlc.data.<module>.<name>
        path = next((p for p in INPUT_SHAPES if p.endswith(f".{name}")), path)
    return INPUT_SHAPES.get(path)
