"""Foreign models as a user meets them on the command line: a Sequential built from a YAML file,
``--list-layers`` naming each layer's type and shape, and a model that does not fit the data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from lwlc.commands.cli import main

SEQUENTIAL_YAML = """\
class_path: lwlc.models.Sequential
init_args:
  layers:
    - class_path: torch.nn.Conv2d
      init_args: {in_channels: 1, out_channels: 8, kernel_size: 3}
    - class_path: torch.nn.ReLU
    - class_path: torch.nn.Flatten
    - class_path: torch.nn.Linear
      init_args: {in_features: 288, out_features: 10}
"""


def _save_pair(make, folder: Path) -> list[str]:
    """--ckpt-a/--ckpt-b of two independently initialised plain state dicts."""
    argv = []
    for member, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        torch.save(make().state_dict(), folder / f"{member}.pt")
        argv += [f"--ckpt-{member}", str(folder / f"{member}.pt")]
    return argv


def _sequential() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 10))


def test_a_sequential_from_yaml_lists_its_layers_with_type_and_shape(tmp_path, capsys):
    (tmp_path / "model.yaml").write_text(SEQUENTIAL_YAML)
    argv = _save_pair(_sequential, tmp_path)  # saved from torch.nn.Sequential itself
    main(
        ["analyze", *argv, "--model", str(tmp_path / "model.yaml")]
        + ["--data", "lwlc.data.DigitsDataModule", "--list-layers"]
    )
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["0", "0", "2", "80", "Conv2d", "1->8", "3x3"] in rows  # 8*1*3*3 + 8
    assert ["1", "3", "2", "2890", "Linear", "288->10"] in rows  # 288*10 + 10
    assert ["stages:", "4", "(sequential", "children)"] in rows


def test_plain_torch_sequential_says_how_to_give_its_layers(tmp_path, capsys):
    argv = _save_pair(_sequential, tmp_path)
    with pytest.raises(SystemExit):
        main(["analyze", *argv, "--model", "torch.nn.Sequential", "--list-layers"])
    err = capsys.readouterr().err.strip()
    assert err == (
        "lwlc: error: torch.nn.Sequential takes its layers positionally, which a config cannot "
        "name: use --model lwlc.models.Sequential with --model.init_args.layers, a list "
        "of class_path/init_args (same state-dict keys)"
    )


def test_a_torchvision_model_that_does_not_fit_the_data_is_one_line(tmp_path, capsys):
    argv = _save_pair(lambda: torchvision.models.squeezenet1_1(num_classes=10), tmp_path)
    with pytest.raises(SystemExit):
        main(
            ["analyze", *argv, "--model", "torchvision.models.SqueezeNet"]
            + ["--model.init_args.version", "1_1", "--model.init_args.num_classes", "10"]
            + ["--data", "lwlc.data.DigitsDataModule", "--list-layers"]
        )
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(
        "lwlc: error: the model does not fit the data: its first layer is features.0 Conv2d "
        "(takes 3 channels), but DigitsDataModule gives samples of shape (1, 8, 8) "
        "(torch.float32); choose the matching --model or --data ("
    )
