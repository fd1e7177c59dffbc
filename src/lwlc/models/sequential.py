"""``lwlc.models.Sequential``: torch's ``nn.Sequential`` as a config can build it."""

from __future__ import annotations

from torch import nn


class Sequential(nn.Sequential):
    """``torch.nn.Sequential`` built from a config: its ``layers`` are a list of
    ``class_path``/``init_args`` (a config cannot name torch's positional children). State-dict
    keys are torch's (``0.weight``, ``1.bias``, ...), so a saved ``nn.Sequential`` loads.

    ``--model lwlc.models.Sequential --model.init_args.layers '[{"class_path":
    "torch.nn.Flatten"}, {"class_path": "torch.nn.Linear", "init_args": {"in_features": 64,
    "out_features": 10}}]'``, or the same under ``init_args.layers`` in a YAML file.
    """

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__(*layers)
