"""``lwlc merge`` on real ``lwlc fit`` checkpoints and on plain state-dict files."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine_reference import naive_state
from lwlc.commands.cli import main
from lwlc.commands.merge import run
from lwlc.core.alignment import weight_matching
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import InterpolationPath, coefficients
from lwlc.data import DigitsDataModule
from lwlc.models import ResNet18
from lwlc_runs import DIGITS, QUIET, fit_pair, members, mlp_of


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A pair of independently initialised MLPs from a short ``lwlc fit`` of the demo config."""
    root = tmp_path_factory.mktemp("runs") / "pair"
    yield fit_pair(root, "--model.init_args.init_seed_b", "1", batches=20)


def merge(*args: str) -> None:
    """``lwlc merge`` as a user runs it."""
    main(["merge", *args])


def hidden_keys(state: dict, *modules: str) -> set[str]:
    return {k for k in state if k.rpartition(".")[0] in modules}


def logits(net: torch.nn.Module, state: dict, x: torch.Tensor) -> torch.Tensor:
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("rest", ["a", "b"])
def test_merged_checkpoint_is_the_formula_on_the_chosen_layers(
    pair: Path, tmp_path: Path, rest: str
) -> None:
    out = tmp_path / "merged.ckpt"
    merge(
        "--ckpt",
        str(pair),
        "--groups",
        "fc1,head",
        "--alpha",
        "0.3",
        "--rest-from",
        rest,
        "--out",
        str(out),
    )
    ckpt = torch.load(out, weights_only=True)
    m = members(pair)
    expected = naive_state(m["a"], m["b"], hidden_keys(m["a"], "fc1", "head"), 0.3, rest)
    merged = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()}
    assert merged.keys() == expected.keys()
    assert all(torch.allclose(merged[k], expected[k], atol=1e-7, rtol=0) for k in expected)
    source = torch.load(pair, weights_only=True)
    assert ckpt["hyper_parameters"] == {
        "_class_path": "lwlc.training.ClassifierModule",
        "model": source["hyper_parameters"]["model"],
        "_instantiator": source["hyper_parameters"]["_instantiator"],
    }
    assert ckpt["datamodule_hyper_parameters"] == source["datamodule_hyper_parameters"]
    assert ckpt["lwlc_merge"]["groups"] == ["fc1", "head"]


def test_merged_model_equals_the_engines_interpolated_model(pair: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.ckpt"
    merge("--ckpt", str(pair), "--groups", "fc*", "--alpha", "0.5", "--out", str(out))
    state = {
        k.removeprefix("net."): v
        for k, v in torch.load(out, weights_only=True)["state_dict"].items()
    }
    m = members(pair)
    x, y = DigitsDataModule().tensors("test")
    loss = F.cross_entropy(logits(mlp_of(pair), state, x), y).item()
    keys = list(m["a"])
    path = InterpolationPath("custom", "fc*", "a", frozenset(hidden_keys(m["a"], "fc1", "fc2")))
    engine = Evaluator(mlp_of(pair), m["a"], m["b"])
    (metrics,) = engine.evaluate([coefficients(path, 0.5, keys, frozenset(keys))], x, y)
    assert metrics.loss == pytest.approx(loss, abs=1e-5)


def test_safetensors_output_holds_the_same_bare_state_dict(pair: Path, tmp_path: Path) -> None:
    as_ckpt, as_st = tmp_path / "m.ckpt", tmp_path / "m.safetensors"
    for out in (as_ckpt, as_st):
        merge("--ckpt", str(pair), "--groups", "fc2", "--alpha", "0.25", "--out", str(out))
    ckpt = torch.load(as_ckpt, weights_only=True)["state_dict"]
    bare = load_file(str(as_st))
    assert {f"net.{k}" for k in bare} == set(ckpt)
    assert all(torch.equal(bare[k], ckpt[f"net.{k}"]) for k in bare)
    with safe_open(str(as_st), "pt") as f:
        assert '"alpha": 0.25' in f.metadata()["lwlc_merge"]


def test_alignment_merges_the_permuted_b_which_computes_what_b_computes(
    pair: Path, tmp_path: Path
) -> None:
    m = members(pair)
    x = DigitsDataModule().tensors("test")[0]
    whole_b = tmp_path / "b.ckpt"
    merge("--ckpt", str(pair), "--alpha", "1", "--align", "weight-matching", "--out", str(whole_b))
    state = {
        k.removeprefix("net."): v
        for k, v in torch.load(whole_b, weights_only=True)["state_dict"].items()
    }
    assert torch.allclose(
        logits(mlp_of(pair), state, x), logits(mlp_of(pair), m["b"], x), atol=1e-5
    )
    assert not torch.equal(state["fc1.weight"], m["b"]["fc1.weight"])

    mid = tmp_path / "mid.ckpt"
    merge("--ckpt", str(pair), "--alpha", "0.5", "--align", "weight-matching", "--out", str(mid))
    permuted, _ = weight_matching(mlp_of(pair), m["a"], m["b"])
    expected = naive_state(m["a"], permuted, set(m["a"]), 0.5, "a")
    got = torch.load(mid, weights_only=True)["state_dict"]
    assert all(torch.allclose(got[f"net.{k}"], v, atol=1e-7, rtol=0) for k, v in expected.items())


def test_lwlc_validate_reads_the_merged_checkpoint(pair: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.ckpt"
    merge("--ckpt", str(pair), "--groups", "fc1", "--out", str(out))
    logs = tmp_path / "logs"
    main(
        ["validate", "--config", DIGITS, "--ckpt_path", str(out), *QUIET[2:]]
        + [
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            str(logs),
        ]
    )
    (metrics_file,) = logs.rglob("metrics.csv")
    logged = next(csv.DictReader(metrics_file.open()))
    state = {
        k.removeprefix("net."): v
        for k, v in torch.load(out, weights_only=True)["state_dict"].items()
    }
    x, y = DigitsDataModule().tensors("val")
    accuracy = (logits(mlp_of(pair), state, x).argmax(1) == y).float().mean().item()
    assert float(logged["val/acc"]) == pytest.approx(accuracy, abs=1e-6)


def test_plain_state_dicts_with_model_merge_and_bn_reset_recomputes_statistics(
    tmp_path: Path,
) -> None:
    def make() -> ResNet18:
        return ResNet18(num_classes=10, in_channels=1, norm="batch", width=4)

    torch.manual_seed(0)
    a, b = make().state_dict(), make().state_dict()
    torch.save(a, tmp_path / "a.pt")
    save_file(b, str(tmp_path / "b.safetensors"))
    out = tmp_path / "merged.safetensors"
    merge(
        "--ckpt-a", str(tmp_path / "a.pt"), "--ckpt-b", str(tmp_path / "b.safetensors"),
        "--model", "lwlc.models.ResNet18", "--model.init_args.in_channels", "1",
        "--model.init_args.width", "4", "--data", "lwlc.data.DigitsDataModule",
        "--bn", "reset", "--bn-samples", "256", "--batch-size", "128",
        "--out", str(out),
    )  # fmt: skip
    merged = load_file(str(out))
    expected = naive_state(a, b, set(a), 0.5, "a")
    weights = [k for k in a if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(merged[k], expected[k], atol=1e-7, rtol=0) for k in weights)
    calibration = DigitsDataModule().tensors("train", 256)[0]
    conv1 = torch.nn.functional.conv2d(calibration, expected["conv1.weight"], padding=1)
    assert torch.allclose(merged["bn1.running_mean"], conv1.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not torch.allclose(merged["bn1.running_mean"], expected["bn1.running_mean"], atol=1e-3)


def test_an_existing_output_is_never_overwritten(pair: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.ckpt"
    out.write_bytes(b"earlier work")
    with pytest.raises(LwlcError, match="already exists"):
        run(["--ckpt", str(pair), "--out", str(out)])
    assert out.read_bytes() == b"earlier work"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--alpha", "1.5"], "--alpha must lie in [0, 1]"),
        (["--groups", "fc9"], "unknown layer or group 'fc9'; available: fc1, fc2, head"),
        (
            ["--align", "git-rebasin"],
            "--align: 'git-rebasin' is not one of none, weight-matching",
        ),
        (["--rest-from", "c"], "--rest-from: 'c' is not one of a, b"),
    ],
)
def test_bad_options_are_one_line_errors(
    pair: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    with pytest.raises(LwlcError) as err:
        run(["--ckpt", str(pair), *args, "--out", str(tmp_path / "m.ckpt")])
    assert fragment in str(err.value)
    assert not (tmp_path / "m.ckpt").exists()
