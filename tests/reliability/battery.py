"""The inputs of the reliability battery: real checkpoints of short ``lwlc fit`` runs and every
kind of broken or hostile file made from them, built once per test session.

Besides damaged files this holds what a stranger could hand lwlc: checkpoints whose saved
hyper-parameters name the module ``evilmod`` in every encoding jsonargparse understands (a
``class_path``, a string holding YAML or JSON, a string naming a YAML file, Lightning's
``_instantiator``, the data side), where ``evilmod`` is a real module on the path whose import
writes the file ``IMPORTED`` beside it; data files with labels outside the classes, NaN/Inf
inputs or an empty split (read by :class:`FileData`); Hugging Face folders with an empty or
damaged ``model.safetensors``; and :class:`FlatMLP`, an ``nn.Sequential`` whose own ``forward``
flattens first, so its children are not its stages.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lwlc.data.base import TensorDataModule
from lwlc.models import MLP
from lwlc_runs import fit_pair, fit_single, members

EVIL = "evilmod"
EVIL_SOURCE = """
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("evilmod was imported")
import torch


class EvilNet(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()


def inst(*args, **kwargs):
    return None
"""


class FileData(TensorDataModule):
    """Digits-shaped data (1x8x8 inputs, ten classes) read from a file of tensors
    ``{train_x, train_y, test_x, test_y}``, split as every lwlc data module is."""

    name = "file"
    num_classes = 10
    input_shape = (1, 8, 8)
    mean = (0.0,)
    std = (1.0,)

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def source(self) -> str:
        return self.path

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        data = torch.load(self.path, weights_only=True)
        return data["train_x"], data["train_y"], data["test_x"], data["test_y"]


class FlatMLP(nn.Sequential):
    """An MLP as ``nn.Sequential`` children whose ``forward`` flattens the input first (as
    torchvision's own subclasses do their own steps): running its children alone fails."""

    def __init__(self, batchnorm: bool = False) -> None:
        norm = [nn.BatchNorm1d(32)] if batchnorm else []
        super().__init__(nn.Linear(64, 32), *norm, nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.flatten(1))


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _data(path: Path, change: Callable[[dict[str, Tensor]], None]) -> Path:
    """Valid digits-shaped data with one thing changed, saved at ``path``."""
    g = torch.Generator().manual_seed(0)
    data = {
        "train_x": torch.rand(60, 1, 8, 8, generator=g),
        "train_y": torch.randint(0, 10, (60,), generator=g),
        "test_x": torch.rand(40, 1, 8, 8, generator=g),
        "test_y": torch.randint(0, 10, (40,), generator=g),
    }
    change(data)
    torch.save(data, path)
    return path


def _set(key: str, index: tuple[int, ...], value: float) -> Callable[[dict[str, Tensor]], None]:
    def change(data: dict[str, Tensor]) -> None:
        data[key][index] = value

    return change


def _empty_test(data: dict[str, Tensor]) -> None:
    data["test_x"], data["test_y"] = data["test_x"][:0], data["test_y"][:0]


def _crafted(source: Path, out: Path, key: str, change: Callable[[dict], None]) -> Path:
    """``source`` with its saved ``key`` (hyper-parameters) changed, saved at ``out``."""
    obj = copy.deepcopy(torch.load(source, weights_only=True))
    change(obj[key])
    torch.save(obj, out)
    return out


def _model(init_args: dict[str, Any]) -> Callable[[dict], None]:
    def change(hp: dict) -> None:
        hp["model"] = {"class_path": "torch.nn.ModuleList", "init_args": init_args}

    return change


def _hostile(root: Path, pair: Path, single: Path) -> dict[str, Path]:
    """Checkpoints naming ``evilmod`` in every encoding, and the module itself in ``site/``."""
    (root / "site").mkdir()
    (root / "site" / f"{EVIL}.py").write_text(EVIL_SOURCE)
    (root / "evil.yaml").write_text(f"- class_path: {EVIL}.EvilNet\n")
    (root / "loop.yaml").write_text(f"- {root / 'loop.yaml'}\n")
    cls = f"{EVIL}.EvilNet"
    model_side = {
        "yaml_string": _model({"modules": f"[{{class_path: {cls}, init_args: {{cmd: y}}}}]"}),
        "json_string": _model({"modules": json.dumps([{"class_path": cls}])}),
        "yaml_file": _model({"modules": str(root / "evil.yaml")}),
        "instantiator": lambda hp: hp.update(_instantiator=f"{EVIL}.inst"),
        "quoted_name": _model({"modules": [f" '{cls}' "]}),
        "yaml_file_naming_itself": _model({"modules": str(root / "loop.yaml")}),
    }
    made = {
        f"evil_{name}": _crafted(pair, root / f"evil_{name}.ckpt", "hyper_parameters", change)
        for name, change in model_side.items()
    }
    made["evil_data"] = _crafted(
        single, root / "evil_data.ckpt", "datamodule_hyper_parameters",
        lambda hp: hp.update(order_seeds=f"{{class_path: {cls}}}"),
    )  # fmt: skip
    return made


def _hf_folders(root: Path) -> dict[str, Path]:
    """A GPT-2 folder whose model.safetensors is empty, and one whose header is damaged."""
    import transformers

    made = {}
    for name, content in (("hf_empty", b""), ("hf_bad_header", b"\x10" + b"\0" * 7 + b"{no")):
        folder = root / name
        config = transformers.GPT2Config(
            n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=16
        )
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        (folder / "model.safetensors").write_bytes(content)
        made[name] = folder
    return made


def make_inputs(root: Path) -> dict[str, Path]:
    """Every input of the battery under ``root`` (keys: the names the cases format in)."""
    pair = fit_pair(root / "pair")
    single = fit_single(root / "single", seed=1)
    made: dict[str, Path] = {"root": root, "pair": pair, "single": single}

    def save(name: str, obj: object) -> None:  # key: the file name without its suffix
        made[name.partition(".")[0]] = root / name
        torch.save(obj, root / name)

    torch.manual_seed(0)
    save("narrow.pt", MLP(width=16).state_dict())
    save("deeper.pt", MLP(width=32, depth=3).state_dict())
    save("list.pt", [1, 2, 3])
    save("no_tensors.pt", {"epoch": 3, "note": "no weights"})
    broken = torch.load(single, weights_only=True)
    broken["state_dict"]["net.fc1.weight"][0, 0] = float("nan")
    broken["state_dict"]["net.head.bias"][3] = float("inf")
    save("nan.ckpt", broken)
    foreign = torch.load(pair, weights_only=True)
    foreign["hyper_parameters"]["model"]["class_path"] = "evil_package.Net"
    save("foreign.ckpt", foreign)
    single_state = members(single)["model"]
    save("double.pt", {k: v.double() if k == "fc2.weight" else v for k, v in single_state.items()})
    save("nan_state.pt", {k: v.clone() for k, v in single_state.items()} | {
        "fc1.weight": torch.full_like(single_state["fc1.weight"], float("nan"))
    })  # fmt: skip
    save("wide_input.pt", MLP(in_features=784, width=32).state_dict())
    save("single_copy.pt", single_state)
    no_hparams = torch.load(pair, weights_only=True)
    del no_hparams["hyper_parameters"]
    save("no_hparams.ckpt", no_hparams)
    made["empty"] = root / "empty.ckpt"
    made["empty"].touch()
    made["truncated"] = root / "truncated.ckpt"
    made["truncated"].write_bytes(pair.read_bytes()[: pair.stat().st_size // 2])
    made["text"] = root / "text.ckpt"
    made["text"].write_text("this is not a checkpoint\n")
    made["a_file"] = root / "a_file"
    made["a_file"].write_text("a file, not a directory\n")
    made["results"] = root / "results"
    made["results"].mkdir()
    (made["results"] / "curves.csv").write_text("earlier results\n")
    made["yaml"] = root / "broken.yaml"
    made["yaml"].write_text("trainer:\n  max_epochs: [1\n")
    made["unknown_key"] = root / "unknown_key.yaml"
    made["unknown_key"].write_text("trainer:\n  max_epoch: 1\n")
    made |= _hostile(root, pair, single)
    made |= {
        "label_10": _data(root / "label_10.pt", _set("test_y", (7,), 10)),
        "label_minus_3": _data(root / "label_minus_3.pt", _set("train_y", (3,), -3)),
        "nan_input": _data(root / "nan_input.pt", _set("train_x", (5, 0, 1, 1), float("nan"))),
        "inf_input": _data(root / "inf_input.pt", _set("test_x", (9, 0, 2, 2), float("-inf"))),
        "empty_test": _data(root / "empty_test.pt", _empty_test),
    }
    made |= _hf_folders(root)
    return made
