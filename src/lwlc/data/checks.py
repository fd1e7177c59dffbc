"""Data checked before it is used: every split has samples, every label names a class, every
input is finite.

A label outside the classes ends deep in the loss (``IndexError: Target 10 is out of bounds``) and
a NaN input makes every loss NaN; both are mistakes in the data, so they are refused up front in
one line naming the split, the sample and what to do. Used by lwlc's data modules when they load
(``lwlc fit``, ``lwlc analyze``) and by ``lwlc analyze`` against its model's outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from lwlc.core.errors import LwlcError

CHUNK = 4096


def check_split(
    split: str, inputs: Tensor, labels: Tensor, classes: int, source: str, allow_empty: bool
) -> None:
    """Refuse (one line) an empty split, a label outside ``0..classes-1``, or a NaN/Inf input.

    ``source`` names the data (its module) in the message; ``allow_empty``: an empty split is
    fine here (a val split with ``val_size 0``).
    """
    if len(labels) == 0:
        if allow_empty:
            return
        raise LwlcError(
            f"split {split!r} of {source} has no samples: give data with {split} samples "
            "(or choose other --splits)"
        )
    wrong = (labels < 0) | (labels >= classes)
    if wrong.any():
        flat = int(wrong.flatten().nonzero()[0])
        sample = flat // max(1, wrong[0].numel())
        label = int(labels.flatten()[flat])
        raise LwlcError(
            f"split {split!r} of {source}: sample {sample} has label {label}, outside the "
            f"{classes} classes 0..{classes - 1}: fix the labels, or use a model and data "
            "module with that many classes"
        )
    if inputs.is_floating_point():
        for start in range(0, len(inputs), CHUNK):  # a chunk at a time: no mask of the whole set
            part = inputs[start : start + CHUNK]
            finite = torch.isfinite(part.reshape(len(part), -1))
            if not finite.all():
                row = int((~finite.all(1)).nonzero()[0])
                value = inputs[start + row].flatten()[~finite[row]][0].item()
                raise LwlcError(
                    f"split {split!r} of {source}: sample {start + row} has a {value} input "
                    "value: remove or repair the samples with NaN/Inf inputs"
                )


def check_splits(
    splits: Mapping[str, tuple[Tensor, Tensor]],
    classes: int,
    source: str,
    may_be_empty: Iterable[str] = ("val",),
) -> None:
    """:func:`check_split` on every split of ``splits`` (``may_be_empty`` may have no samples)."""
    allowed = set(may_be_empty)
    for split, (inputs, labels) in splits.items():
        check_split(split, inputs, labels, classes, source, split in allowed)
