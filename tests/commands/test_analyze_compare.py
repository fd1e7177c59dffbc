"""lwlc analyze --align (barriers before and after alignment) and --ckpt m1 m2 m3 (all pairs)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine_reference import naive_eval, naive_state
from lwlc import figures
from lwlc.commands.analyze import run
from lwlc.commands.cli import main
from lwlc.core.alignment import weight_matching
from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc_runs import fit_pair, fit_single, members, mlp_of

BARRIER_HEADER = "plan,group,rest_from,split,reference,loss_barrier,error_barrier"
SAMPLES = 200


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """An independently initialised pair and three single networks, from short ``lwlc fit`` runs."""
    root = tmp_path_factory.mktemp("runs")
    found = {"pair": fit_pair(root / "pair", "--model.init_args.init_seed_b", "1", batches=40)}
    found.update({f"s{seed}": fit_single(root / f"s{seed}", seed=seed) for seed in (1, 2, 3)})
    yield found


def analyze(out: Path, *args: str) -> Path:
    main(
        ["analyze", *args, "--out", str(out), "--max-samples", str(SAMPLES), "--alphas", "0,0.5,1"]
    )
    return out


def read_rows(path: Path) -> tuple[str, list[dict[str, str]]]:
    with path.open(newline="") as f:
        return path.read_text().splitlines()[0], list(csv.DictReader(f))


def test_align_reports_every_path_before_and_after_alignment(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = analyze(
        tmp_path / "out",
        "--ckpt",
        str(runs["pair"]),
        "--plans",
        "full,single",
        "--align",
        "weight-matching",
    )
    header, barriers = read_rows(out / "barriers.csv")
    assert header == BARRIER_HEADER
    paths = {(r["plan"], r["group"], r["rest_from"]) for r in barriers}
    plain = {p for p in paths if not p[0].startswith("aligned:")}
    aligned = {(p[0].removeprefix("aligned:"), *p[1:]) for p in paths - plain}
    assert {p[0] for p in plain} == {"full", "single"} and aligned == plain  # every path twice

    m = members(runs["pair"])
    permuted, _ = weight_matching(mlp_of(runs["pair"]), m["a"], m["b"])
    x, y = DigitsDataModule().tensors("test", SAMPLES)
    _, curves = read_rows(out / "curves.csv")
    for r in curves:
        if r["plan"].startswith("aligned:") and r["rest_from"] == "a":
            keys = (
                set(m["a"])
                if r["plan"] == "aligned:full"
                else {k for k in m["a"] if k.startswith(r["group"] + ".")}
            )
            loss, _ = naive_eval(
                mlp_of(runs["pair"]),
                naive_state(m["a"], permuted, keys, float(r["alpha"]), "a"),
                x,
                y,
            )
            assert float(r["loss"]) == pytest.approx(loss, abs=1e-5), r

    def full_barrier(plan: str) -> float:
        return next(
            float(r["loss_barrier"])
            for r in barriers
            if r["plan"] == plan and r["reference"] == "path"
        )

    assert full_barrier("aligned:full") < full_barrier("full") / 2
    assert {p.name for p in out.glob("alignment_test_*.png")} == {
        "alignment_test_path.png",
        "alignment_test_models.png",
        "alignment_test_midpoint.png",
    }


def test_several_checkpoints_compare_every_pair(runs: dict[str, Path], tmp_path: Path) -> None:
    ckpts = [str(runs[s]) for s in ("s1", "s2", "s3")]
    out = analyze(tmp_path / "many", "--ckpt", *ckpts, "--plans", "full,single", "--no-plots")
    labels = ["s1", "s2", "s3"]  # the part of each path the three do not share
    header, rows = read_rows(out / "barriers.csv")
    assert header == BARRIER_HEADER + ",model_a,model_b"
    pairs = [("s1", "s2"), ("s1", "s3"), ("s2", "s3")]
    assert sorted({(r["model_a"], r["model_b"]) for r in rows}) == pairs
    alone = analyze(
        tmp_path / "alone",
        "--ckpt-a",
        ckpts[0],
        "--ckpt-b",
        ckpts[2],
        "--plans",
        "full,single",
        "--no-plots",
    )
    _, expected = read_rows(alone / "barriers.csv")
    got = [
        {k: v for k, v in r.items() if k not in ("model_a", "model_b")}
        for r in rows
        if (r["model_a"], r["model_b"]) == ("s1", "s3")
    ]
    assert got == expected
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"{a}~{b}" for a, b in pairs]
    assert set(labels) == {r["model_a"] for r in rows} | {r["model_b"] for r in rows}


def test_several_checkpoints_need_an_output_folder_unless_listing_layers(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(LwlcError, match="give --out DIR"):
        run(["--ckpt", str(runs["s1"]), str(runs["s2"])])
    assert run(["--ckpt", str(runs["s1"]), str(runs["s2"]), "--list-layers"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:-2]] == [
        "fc1",
        "fc2",
        "head",
    ]
    with pytest.raises(LwlcError, match="--align: 'git-rebasin' is not one of none"):
        run(["--ckpt", str(runs["pair"]), "--align", "git-rebasin"])


def test_barrier_matrices_draw_each_cell_on_one_scale() -> None:
    rows = [
        {
            "split": "test",
            "reference": "path",
            "group": g,
            "model": m,
            "toward": t,
            "loss_barrier": v,
            "error_barrier": v / 10,
        }
        for g, cells in {
            "fc1": {("x", "y"): 0.5, ("y", "x"): -0.25},
            "fc2": {("y", "x"): 1.0},
        }.items()
        for (m, t), v in cells.items()
    ]
    fig = figures.barrier_matrices(rows, "model", "toward", "group", metric="error")
    panels = [ax for ax in fig.axes if ax.get_title().startswith("layer: ")]
    assert [ax.get_title() for ax in panels] == ["layer: fc1", "layer: fc2"]
    meshes = [ax.collections[0] for ax in panels]
    nan = float("nan")
    fc1 = torch.tensor([[nan, 0.05], [-0.025, nan]])  # rows x, y; columns likewise; fractions
    fc2 = torch.tensor([[nan, nan], [0.1, nan]])
    for mesh, expected in zip(meshes, (fc1, fc2), strict=True):
        drawn = torch.tensor(mesh.get_array().filled(nan), dtype=torch.float32).reshape(2, 2)
        assert torch.allclose(drawn, expected, equal_nan=True)
        assert mesh.get_clim() == pytest.approx((-0.025, 0.1))  # one scale, spanning the data
