"""Classes named inside a checkpoint are vouched for before anything is imported.

Each crafted checkpoint names a module, at some depth of its saved config or as a bare string,
that records its own import in a marker file. Every command that reads a checkpoint must refuse
it with one line and exit code 2, with the marker never written: an import runs code.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from lwlc.commands.cli import main
from lwlc_runs import DIGITS, QUIET, fit_pair, fit_single, single_config

EVIL_SOURCE = """
from pathlib import Path
Path({marker!r}).write_text("imported")
import torch


class Thing(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(x.flatten(1))
"""


@pytest.fixture(scope="module")
def pair_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_pair(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def single_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_single(tmp_path_factory.mktemp("single"), seed=1)


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An importable module (fresh name per test) whose import writes ``marker``."""
    name = f"evil_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    package = tmp_path / "site"
    package.mkdir()
    (package / f"{name}.py").write_text(EVIL_SOURCE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(package))
    yield name, marker
    sys.modules.pop(name, None)


# Where a checkpoint can name the module: (which hyper-parameters, how they are changed).
def _nested_list(hp: dict, cls: str) -> None:
    hp["model"] = {
        "class_path": "torch.nn.ModuleList",
        "init_args": {"modules": [{"class_path": cls}]},
    }


def _nested_dict(hp: dict, cls: str) -> None:
    hp["model"] = {
        "class_path": "torch.nn.ModuleDict",
        "init_args": {"modules": {"x": {"class_path": cls, "init_args": {}}}},
    }


def _bare_string(hp: dict, cls: str) -> None:
    hp["model"] = {"class_path": "torch.nn.ModuleList", "init_args": {"modules": [cls]}}


def _top_level(hp: dict, cls: str) -> None:
    hp["model"] = {"class_path": cls}


def _instantiator(hp: dict, cls: str) -> None:
    hp["_instantiator"] = f"{cls}.Thing"


MODEL_PLACES: dict[str, Callable[[dict, str], None]] = {
    "nested ModuleList class_path": _nested_list,
    "nested ModuleDict class_path": _nested_dict,
    "bare string": _bare_string,
    "top level": _top_level,
}


def craft(source: Path, out: Path, change: Callable[[dict], None], key: str) -> Path:
    obj = torch.load(source, weights_only=True)
    obj = copy.deepcopy(obj)
    change(obj[key])
    torch.save(obj, out)
    return out


def refused(capsys: pytest.CaptureFixture[str], marker: Path, argv: list[str]) -> str:
    """Run ``lwlc`` and return its error line, asserting exit 2, one line, nothing imported."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert not marker.exists(), "the checkpoint's module was imported"
    last = err.splitlines()[-1]
    assert last.startswith("lwlc: error: ") and "Traceback" not in err
    return last


@pytest.mark.parametrize("place", MODEL_PLACES, ids=list(MODEL_PLACES))
@pytest.mark.parametrize("command", ["analyze", "merge", "validate", "fit"])
def test_a_class_named_anywhere_in_the_model_config_is_never_imported(
    place: str,
    command: str,
    pair_ckpt: Path,
    evil: tuple[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, marker = evil
    cls = f"{name}.Thing"
    bad = craft(
        pair_ckpt,
        tmp_path / "bad.ckpt",
        lambda hp: MODEL_PLACES[place](hp, cls),
        "hyper_parameters",
    )
    out = tmp_path / "out"
    argv = {
        "analyze": ["analyze", "--ckpt", str(bad), "--out", str(out), "--no-plots"],
        "merge": ["merge", "--ckpt", str(bad), "--out", str(out / "m.ckpt")],
        "validate": ["validate", "--config", DIGITS, "--ckpt_path", str(bad)],
        "fit": ["fit", "--config", DIGITS, "--ckpt_path", str(bad), "--trainer.max_epochs", "2"],
    }[command]
    if command in ("validate", "fit"):
        argv += ["--trainer.default_root_dir", str(out), *QUIET]
    line = refused(capsys, marker, argv)
    assert cls in line and ("--trust-class-paths" in line or "your own config" in line)
    assert not out.exists() or not any(out.rglob("*.csv")), "results written for a refused file"


def test_lightnings_instantiator_named_by_a_checkpoint_is_vouched_for_too(
    pair_ckpt: Path, evil: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, marker = evil
    bad = craft(
        pair_ckpt, tmp_path / "bad.ckpt", lambda hp: _instantiator(hp, name), "hyper_parameters"
    )
    argv = ["validate", "--config", DIGITS, "--ckpt_path", str(bad)]
    line = refused(capsys, marker, [*argv, "--trainer.default_root_dir", str(tmp_path), *QUIET])
    assert f"{name}.Thing" in line and "_instantiator" in line


@pytest.mark.parametrize("how", ["nested", "bare string"])
def test_a_class_named_in_the_data_config_is_never_imported(
    how: str,
    single_ckpt: Path,
    evil: tuple[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, marker = evil
    value: Any = {"class_path": f"{name}.Thing"} if how == "nested" else f"{name}.Thing"

    def change(hp: dict) -> None:
        hp["transform"] = value

    bad = craft(single_ckpt, tmp_path / "bad.ckpt", change, "datamodule_hyper_parameters")
    line = refused(
        capsys,
        marker,
        [
            "analyze",
            "--ckpt-a",
            str(bad),
            "--ckpt-b",
            str(single_ckpt),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "data config" in line and f"{name}.Thing" in line


def test_the_users_own_model_makes_the_checkpoints_config_irrelevant(
    pair_ckpt: Path, evil: tuple[str, Path], tmp_path: Path
) -> None:
    """--model names the class: the checkpoint's foreign config is not read, nothing imported."""
    name, marker = evil
    bad = craft(
        pair_ckpt,
        tmp_path / "bad.ckpt",
        lambda hp: _nested_list(hp, f"{name}.Thing"),
        "hyper_parameters",
    )
    out = tmp_path / "out"
    main(
        ["analyze", "--ckpt", str(bad), "--model", "lwlc.models.MLP", "--out", str(out)]
        + ["--plans", "full", "--alphas", "0,0.5,1", "--no-plots"]
    )
    assert not marker.exists()
    assert (out / "barriers.csv").read_text().count("\n") > 1


def test_a_reference_checkpoint_of_the_callback_imports_nothing(
    single_ckpt: Path, evil: tuple[str, Path], tmp_path: Path
) -> None:
    """The Callback reads only the reference's tensors; its foreign config is never imported."""
    name, marker = evil
    bad = craft(
        single_ckpt,
        tmp_path / "ref.ckpt",
        lambda hp: _bare_string(hp, f"{name}.Thing"),
        "hyper_parameters",
    )
    config = tmp_path / "ref.yaml"
    config.write_text(
        json.dumps(
            {
                "trainer": {
                    "callbacks": [
                        {
                            "class_path": "lwlc.callbacks.LayerwiseBarrierCallback",
                            "init_args": {
                                "reference_ckpt": str(bad),
                                "spec": {"plans": ["full"]},
                            },
                        }
                    ]
                }
            }
        )
    )
    main(
        [
            "fit",
            "--config",
            str(single_config(tmp_path / "run", 2)),
            "--config",
            str(config),
            *QUIET,
        ]
    )
    assert not marker.exists()
    assert (tmp_path / "run" / "barriers" / "barriers.csv").is_file()


def test_a_hugging_face_folder_that_names_its_own_code_is_refused(
    tmp_path: Path, evil: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    name, marker = evil
    folder = tmp_path / "hf"
    config = transformers.GPT2Config(vocab_size=256, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    (folder / f"{name}_config.py").write_text(EVIL_SOURCE.format(marker=str(marker)))
    meta = json.loads((folder / "config.json").read_text())
    meta["auto_map"] = {
        "AutoConfig": f"{name}_config.Thing",
        "AutoModelForCausalLM": f"{name}_config.Thing",
    }
    (folder / "config.json").write_text(json.dumps(meta))
    line = refused(
        capsys,
        marker,
        ["analyze", "--ckpt-a", str(folder), "--ckpt-b", str(folder), "--out", str(tmp_path / "o")],
    )
    assert "auto_map" in line and "config.json" in line
