"""``lwlc analyze`` end to end on real ``lwlc fit`` checkpoints, against a naive loop."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine_reference import naive_eval, naive_state
from lwlc.commands.cli import main
from lwlc.data import DigitsDataModule
from lwlc_runs import SINGLE_WIDTH, fit_pair, fit_single, members, mlp_of

CURVE_HEADER = "plan,group,rest_from,split,alpha,loss,accuracy"
BARRIER_HEADER = "plan,group,rest_from,split,reference,loss_barrier,error_barrier"
SAMPLES = 120


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A paired checkpoint and two single-network checkpoints, each from a short ``lwlc fit``."""
    root = tmp_path_factory.mktemp("runs")
    yield {
        "pair": fit_pair(root / "pair"),
        "single_a": fit_single(root / "single_a", seed=1),
        "single_b": fit_single(root / "single_b", seed=2),
    }


def analyze(out: Path, *args: str) -> Path:
    """``lwlc analyze`` as a user runs it, on a few test and val samples, without figures."""
    main(["analyze", *args, "--out", str(out), "--max-samples", str(SAMPLES), "--no-plots"])
    return out


def read_rows(path: Path) -> tuple[str, list[dict[str, str]]]:
    """(header line, rows) of a CSV, read with the standard library only."""
    text = path.read_text()
    with path.open(newline="") as f:
        return text.splitlines()[0], list(csv.DictReader(f))


def layer_names(state: dict[str, torch.Tensor]) -> list[str]:
    """Module paths owning state, in state-dict order (the forward order of lwlc's MLP)."""
    return list(dict.fromkeys(k.rpartition(".")[0] for k in state))


def split_data(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return DigitsDataModule().tensors(split, SAMPLES)


def expected_keys(plan: str, group: str, names: list[str], state: dict) -> set[str]:
    """The keys a path interpolates, by science.md section 2."""
    i = names.index(group) if group in names else None
    chosen = {
        "full": names,
        "single": [group],
        "cumulative_front": names[: (i or 0) + 1],
        "cumulative_back": names[(i or 0) :],
    }[plan]
    return {k for k in state if k.rpartition(".")[0] in chosen}


def check_against_naive(out: Path, model: torch.nn.Module, a: dict, b: dict) -> None:
    """Every curve point equals the naive loop; every barrier equals its formula on the curve."""
    header, curves = read_rows(out / "curves.csv")
    assert header == CURVE_HEADER
    header, barriers = read_rows(out / "barriers.csv")
    assert header == BARRIER_HEADER
    names = layer_names(a)
    data = {s: split_data(s) for s in {r["split"] for r in curves}}
    points: dict[tuple, list[tuple[float, float, float]]] = {}
    for r in curves:
        keys = expected_keys(r["plan"], r["group"], names, a)
        state = naive_state(a, b, keys, float(r["alpha"]), r["rest_from"])
        loss, acc = naive_eval(model, state, *data[r["split"]])
        assert float(r["loss"]) == pytest.approx(loss, abs=1e-5), r
        assert float(r["accuracy"]) == pytest.approx(acc, abs=1e-6), r
        key = (r["plan"], r["group"], r["rest_from"], r["split"])
        points.setdefault(key, []).append((float(r["alpha"]), loss, 1 - acc))
    ends = {s: (naive_eval(model, a, *data[s]), naive_eval(model, b, *data[s])) for s in data}
    for r in barriers:
        curve = points[(r["plan"], r["group"], r["rest_from"], r["split"])]
        (loss_a, acc_a), (loss_b, acc_b) = ends[r["split"]]
        for col, i, end_a, end_b in (
            ("loss", 1, loss_a, loss_b),
            ("error", 2, 1 - acc_a, 1 - acc_b),
        ):
            start, stop = (
                (curve[0][i], curve[-1][i]) if r["reference"] == "path" else (end_a, end_b)
            )
            excess = [p[i] - ((1 - p[0]) * start + p[0] * stop) for p in curve]
            expected = {"path": max(excess), "models": max(excess)}.get(r["reference"])
            if r["reference"] == "midpoint":
                expected = next(p[i] for p in curve if p[0] == 0.5) - (end_a + end_b) / 2
            assert float(r[f"{col}_barrier"]) == pytest.approx(expected, abs=1e-5), (r, col)


def test_paired_checkpoint_results_match_the_naive_loop(runs, tmp_path):
    plans = "full,single,cumulative_front,cumulative_back"
    pair = str(runs["pair"])
    out = analyze(tmp_path / "out", "--ckpt", pair, "--splits", "test,val", "--plans", plans)
    m = members(runs["pair"])
    check_against_naive(out, mlp_of(runs["pair"]), m["a"], m["b"])
    _, curves = read_rows(out / "curves.csv")
    names = layer_names(m["a"])
    paths = {(r["plan"], r["group"], r["rest_from"]) for r in curves}
    layerwise = {
        (p, g, r)
        for p in ("single", "cumulative_front", "cumulative_back")
        for g in names
        for r in "ab"
    }
    assert paths == {("full", "all", "a")} | layerwise
    assert len(curves) == len(paths) * 2 * 11  # two splits, the default 11 alphas


def test_summary_names_the_checkpoint_by_its_sha256_and_records_the_setup(runs, tmp_path):
    out = analyze(tmp_path / "out", "--ckpt", str(runs["pair"]), "--plans", "full")
    summary = json.loads((out / "summary.json").read_text())
    digest = hashlib.sha256(runs["pair"].read_bytes()).hexdigest()
    assert summary["checkpoints"][0]["sha256"] == digest
    assert summary["checkpoints"][0]["path"] == str(runs["pair"])
    assert summary["status"] == "complete"
    assert summary["alphas"] == [i / 10 for i in range(11)]
    assert summary["samples"] == {"test": SAMPLES}
    a = members(runs["pair"])["a"]
    assert [g["name"] for g in summary["layers"]] == layer_names(a)
    assert sorted(k for g in summary["layers"] for k in g["keys"]) == sorted(a)
    assert summary["model"]["class_path"] == "lwlc.models.MLP"
    assert summary["data"]["class_path"] == "lwlc.data.DigitsDataModule"
    assert summary["versions"]["torch"] == torch.__version__
    assert summary["checkpoints"][0]["pairing"]["init"] == "shared"
    assert summary["wall_time_s"] > 0
    assert summary["stages"]["how"] == "stages()" and summary["stages"]["count"] > 1


def test_list_layers_prints_each_layer_with_its_size(runs, tmp_path, capsys):
    capsys.readouterr()
    main(["analyze", "--ckpt", str(runs["pair"]), "--list-layers"])
    *lines, blank, stages_line = capsys.readouterr().out.strip().splitlines()[1:]
    a = members(runs["pair"])["a"]
    names = layer_names(a)
    assert [line.split()[1] for line in lines] == names
    sizes = [sum(v.numel() for k, v in a.items() if k.startswith(n + ".")) for n in names]
    assert [int(line.split()[3]) for line in lines] == sizes
    # each layer's type and shape, read off its weight (out, in)
    shapes = [a[f"{n}.weight"].shape for n in names]
    assert [line.split()[4:] for line in lines] == [["Linear", f"{i}->{o}"] for o, i in shapes]
    assert blank == "" and stages_line.startswith("stages: ") and "(stages())" in stages_line
    assert not (tmp_path / "out").exists()


def test_two_single_network_checkpoints_compare_with_ckpt_a_and_ckpt_b(runs, tmp_path):
    out = analyze(
        tmp_path / "out",
        "--ckpt-a",
        str(runs["single_a"]),
        "--ckpt-b",
        str(runs["single_b"]),
        "--plans",
        "full,single",
        "--alphas",
        "0,0.25,0.5,1",
    )
    a, b = members(runs["single_a"])["model"], members(runs["single_b"])["model"]
    check_against_naive(out, mlp_of(runs["single_a"]), a, b)
    summary = json.loads((out / "summary.json").read_text())
    assert [c["sha256"] for c in summary["checkpoints"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (runs["single_a"], runs["single_b"])
    ]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_plain_state_dicts_with_model_and_data_give_the_checkpoint_results(runs, tmp_path, suffix):
    files = []
    for name in ("single_a", "single_b"):
        state = {k: v.contiguous() for k, v in members(runs[name])["model"].items()}
        path = tmp_path / f"{name}{suffix}"
        save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
        files.append(str(path))
    common = ["--plans", "full,single", "--alphas", "0,0.5,1"]
    plain = analyze(
        tmp_path / "plain",
        "--ckpt-a",
        files[0],
        "--ckpt-b",
        files[1],
        *common,
        "--model",
        "lwlc.models.MLP",
        "--model.init_args.width",
        str(SINGLE_WIDTH),
        "--data",
        "lwlc.data.DigitsDataModule",
    )
    ckpts = analyze(
        tmp_path / "ckpt",
        "--ckpt-a",
        str(runs["single_a"]),
        "--ckpt-b",
        str(runs["single_b"]),
        *common,
    )
    for name in ("curves.csv", "barriers.csv"):
        assert read_rows(plain / name) == read_rows(ckpts / name)
    summary = json.loads((plain / "summary.json").read_text())
    assert [c["sha256"] for c in summary["checkpoints"]] == [
        hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files
    ]


def test_a_plain_state_dict_without_model_says_to_pass_one(runs, tmp_path, capsys):
    path = tmp_path / "a.pt"
    torch.save(members(runs["single_a"])["model"], path)
    with pytest.raises(SystemExit):
        main(
            ["analyze", "--ckpt-a", str(path), "--ckpt-b", str(path), "--out", str(tmp_path / "o")]
        )
    assert "pass --model CLASS" in capsys.readouterr().err


def test_the_console_table_shows_every_reference_side_by_side_and_noise_as_zero(capsys) -> None:
    """The default reference (midpoint, the paper's value against the whole A and B) comes first
    and gives the error column; path, ~0 for a single layer by construction, comes last."""
    from lwlc.results.console import print_table

    base = {"plan": "single", "group": "fc1", "rest_from": "a", "split": "test"}
    rows = [
        {**base, "reference": "path", "loss_barrier": -2e-9, "error_barrier": 0.0},
        {**base, "reference": "models", "loss_barrier": 2.61234, "error_barrier": 0.4},
        {**base, "reference": "midpoint", "loss_barrier": 2.5, "error_barrier": 0.375},
    ]
    print_table(rows, "test")
    out = capsys.readouterr().out.splitlines()
    assert out[-2].split() == ["plan", "group", "rest", "loss", "midpoint", "loss", "models",
                               "loss", "path", "error", "midpoint"]  # fmt: skip
    assert any("paper's heatmap value" in line for line in out)
    fields = out[-1].split()
    assert fields == ["single", "fc1", "a", "2.5000", "2.6123", "0.0000", "0.3750"]


def test_switches_are_spelled_with_dashes_and_the_older_underscore_form_still_works(
    runs, tmp_path, capsys
):
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    shown = capsys.readouterr().out
    assert "--no-plots" in shown and "--no_" not in shown and "--max-samples" in shown
    for spelling in ("--no-plots", "--no_plots"):
        out = tmp_path / spelling.strip("-")
        main(["analyze", "--ckpt", str(runs["pair"]), "--out", str(out), "--plans", "full",
              "--max-samples", "40", spelling])  # fmt: skip
        assert (out / "barriers.csv").exists() and not list(out.glob("*.png"))
