"""Fast answers that skip Lightning: ``analyze --list-layers`` of lwlc's data reads the declared
sample shape (``lwlc.data.shapes``) instead of loading the data module; checked in a fresh
interpreter via sys.modules, with the listing read against the checkpoint itself."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import torch

from lwlc.data.shapes import INPUT_SHAPES, declared_input_shape
from lwlc.models import MLP

HEAVY = ("lightning", "torchvision", "torchmetrics", "matplotlib", "sklearn")
PROBE = """
import json, sys
from lwlc.commands.cli import main
main(json.loads(sys.argv[1]))
print(json.dumps(sorted(set(sys.argv[2].split(",")) & set(sys.modules))))
"""


def fresh(argv: list[str], cwd: Path) -> tuple[list[str], list[str]]:
    """``lwlc argv`` in a fresh interpreter: its output lines and the heavy packages it imported."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), ",".join(HEAVY)],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    *lines, heavy = result.stdout.splitlines()
    return lines, json.loads(heavy)


def pair_checkpoint(folder: Path, **init_args: int) -> tuple[Path, dict[str, torch.Tensor]]:
    """A pair checkpoint as ``lwlc fit`` writes it (untrained digits MLPs), and member A."""
    nets = [MLP(**init_args) for _ in "ab"]
    members = zip("ab", nets, strict=True)
    state = {f"net_{m}.{k}": v for m, n in members for k, v in n.state_dict().items()}
    model = {"class_path": "lwlc.models.MLP", "init_args": init_args}
    saved = {
        "state_dict": state,
        "hyper_parameters": {"_class_path": "lwlc.training.PairedModule", "model": model},
        "datamodule_hyper_parameters": {"_class_path": "lwlc.data.DigitsDataModule"},
    }
    torch.save(saved, folder / "pair.ckpt")
    return folder / "pair.ckpt", nets[0].state_dict()


def test_list_layers_of_lwlc_data_imports_no_lightning(tmp_path: Path) -> None:
    ckpt, a = pair_checkpoint(tmp_path, width=32, depth=3)
    lines, heavy = fresh(["analyze", "--ckpt", str(ckpt), "--list-layers"], tmp_path)
    assert heavy == []
    names = list(dict.fromkeys(k.rpartition(".")[0] for k in a))  # forward order of lwlc's MLP
    rows = [line.split() for line in lines[1 : 1 + len(names)]]
    assert [r[1] for r in rows] == names == ["fc1", "fc2", "fc3", "head"]
    sizes = [a[f"{n}.weight"].numel() + a[f"{n}.bias"].numel() for n in names]
    assert [int(r[3]) for r in rows] == sizes
    shapes = [a[f"{n}.weight"].shape for n in names]
    assert [r[4:] for r in rows] == [["Linear", f"{i}->{o}"] for o, i in shapes]
    assert lines[-1] == "stages: 8 (stages())"  # flatten, 3 x (fc, act), head


def test_declared_shapes_are_the_data_modules_own() -> None:
    for path, shape in INPUT_SHAPES.items():
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name).input_shape == shape, path
        assert declared_input_shape({"class_path": f"lwlc.data.{name}"}) == shape
    assert declared_input_shape({"class_path": "lwlc.data.CharTextDataModule"}) is None
    assert declared_input_shape({"class_path": "mine.DigitsDataModule"}) is None
