"""The results layer's default views (issue 27.1) and its one-place writing (issue 24.2).

The default barrier figure of two independently trained networks must show their single-layer
barriers (against the whole models), read back from the very Figure that was saved; tables,
colour bars and titles must say the same default and never hide a value.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lwlc.commands.cli import main
from lwlc.data import DigitsDataModule
from lwlc.formats.io import read_csv
from lwlc.models import MLP
from lwlc.results import bars, draw, heatmaps, style, words
from lwlc.results.references import default_reference, shown_order

SRC = Path(__file__).resolve().parents[2] / "src" / "lwlc"


def _trained_mlp(seed: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """An MLP trained on digits from its own initialisation (``seed``), full-batch."""
    torch.manual_seed(seed)
    model = MLP(width=32)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.state_dict()


def _bar_heights(ax) -> list[float]:
    """The heights of the bars drawn in ``ax`` (seaborn draws each as a Rectangle)."""
    return [p.get_height() for p in ax.patches if isinstance(p, Rectangle) and p.get_width() > 0]


def test_default_barrier_figure_of_independent_networks_shows_single_layer_barriers(
    tmp_path, monkeypatch
):
    x, y = DigitsDataModule().tensors("train", None)
    files = []
    for seed in (0, 1):
        files.append(tmp_path / f"m{seed}.pt")
        torch.save(_trained_mlp(seed, x, y), files[-1])
    drawn: dict[str, Figure] = {}
    save = draw.save_figure
    monkeypatch.setattr(draw, "save_figure", lambda f, p, **k: drawn.setdefault(Path(p).name, f)
                        and save(f, p, **k))  # fmt: skip
    out = tmp_path / "out"
    main(["analyze", "--ckpt-a", str(files[0]), "--ckpt-b", str(files[1]), "--out", str(out),
          "--model", "lwlc.models.MLP", "--model.init_args.width", "32", "--data",
          "lwlc.data.DigitsDataModule", "--plans", "full,single", "--alphas", "0,0.5,1",
          "--splits", "test"])  # fmt: skip
    assert (out / "barriers_test.png").is_file() and (out / "barriers_test_path.png").is_file()
    fig = drawn["barriers_test.png"]
    assert "reference: midpoint" in fig.get_suptitle().replace("\u00a0", " ")
    loss_ax = fig.axes[0]  # the single plan's loss panel
    heights = sorted(_bar_heights(loss_ax))
    rows = read_csv(out / "barriers.csv")
    expected = sorted(
        float(r["loss_barrier"])
        for r in rows
        if r["plan"] == "single" and r["reference"] == "midpoint" and r["split"] == "test"
    )
    assert heights == pytest.approx(expected, abs=1e-6)
    assert max(heights) > 0.3  # a single-layer barrier the reader can see (nats)
    assert not [t for t in loss_ax.texts if t.get_gid() == style.FLAT_NOTE]
    # beside it, the path reference: ~0 for single layers, and the panel says why
    path_ax = drawn["barriers_test_path.png"].axes[0]
    assert max(abs(h) for h in _bar_heights(path_ax)) < style.FLAT["loss"]
    notes = [t.get_text() for t in path_ax.texts if t.get_gid() == style.FLAT_NOTE]
    assert len(notes) == 1 and "by construction" in notes[0]


def test_a_panel_whose_bars_are_too_small_to_see_beside_the_full_model_says_so():
    # The demo's path reference: every single layer 0 but one at 0.0099 nats, on an axis that
    # reaches the full model's 1.13, so no bar can be seen; that panel says so, and why. The
    # error panel's 0.04 beside a full 0.46 is seen, and it has no note.
    rows = [dict(plan="full", group="all", rest_from="a", split="test", reference="path",
                 loss_barrier=1.13, error_barrier=0.46)]  # fmt: skip
    for group in ("fc1", "fc2", "head"):
        for rest in "ab":
            loss = 0.0099 if (group, rest) == ("fc1", "b") else 0.0
            error = 0.04 if (group, rest) == ("head", "a") else 0.0
            rows.append(dict(plan="single", group=group, rest_from=rest, split="test",
                             reference="path", loss_barrier=loss, error_barrier=error))  # fmt: skip
    fig = bars.layer_barriers(rows, reference="path")
    loss_ax, error_ax = fig.axes[:2]
    low, high = loss_ax.get_ylim()
    assert high > 1.13 and max(_bar_heights(loss_ax)) == pytest.approx(0.0099)
    assert 0.0099 < 0.01 * (high - low)  # under 1% of the axis: not seen
    notes = [t.get_text() for t in loss_ax.texts if t.get_gid() == style.FLAT_NOTE]
    assert len(notes) == 1 and "too small to see" in notes[0] and "by construction" in notes[0]
    assert not [t for t in error_ax.texts if t.get_gid() == style.FLAT_NOTE]


def test_the_default_reference_is_the_papers_midpoint_then_the_whole_models_then_path():
    assert default_reference(["path", "midpoint", "models"]) == "midpoint"
    assert default_reference(["path", "models"]) == "models"
    assert default_reference(["path"]) == "path"
    assert shown_order(["path", "models", "midpoint"]) == ["midpoint", "models", "path"]


def test_colour_bar_spans_the_data_and_zero_only():
    cmap, norm = heatmaps.colour_scale(np.array([0.0, 0.5, 2.0, np.nan]))
    assert (norm.vmin, norm.vmax) == (0.0, 2.0)  # not -2..2 for barriers >= 0
    white = np.array(cmap(norm(0.0))[:3])
    assert white.min() > 0.9  # 0 stays white (the diverging map's centre)
    cmap, norm = heatmaps.colour_scale(np.array([-0.5, 2.0]))
    assert (norm.vmin, norm.vmax) == (-0.5, 2.0)
    full = sns.color_palette(style.DIVERGING, as_cmap=True)
    # a negative barrier is as blue as a positive one of its size is red, on the symmetric map
    assert cmap(norm(-0.5)) == pytest.approx(full(0.5 - 0.5 / 4), abs=0.01)


def test_many_layers_get_distinct_colours():
    groups = [f"layer{i}" for i in range(17)]
    palette = style.layer_palette(["all", *groups])
    colours = [tuple(round(c, 3) for c in palette[g]) for g in groups]
    assert len(set(colours)) == len(groups)
    neighbours = [math.dist(colours[i], colours[i + 1]) for i in range(len(groups) - 1)]
    assert min(neighbours) > 0.2  # neighbouring layers are told apart at a glance


def test_titles_never_break_inside_parentheses():
    text = words.title("curves", "test", "models", "independent initialisations (seeds 0, 1)")
    inside = [part for line in text.split("\n") for part in line.split("(")[1:]]
    assert inside and all(" " not in part.split(")")[0] for part in inside)


def test_cell_numbers_are_legible_at_natural_size():
    rows = [
        dict(plan="single", group=g, rest_from="a", split="test", reference="models",
             loss_barrier=v, error_barrier=0.0, alignment=a)
        for g, v in (("fc1", 0.5), ("fc2", 1.5)) for a in ("before", "after")
    ]  # fmt: skip
    fig = heatmaps.barrier_matrices(rows, "group", "alignment", reference="models")
    sizes = {t.get_fontsize() for t in fig.axes[0].texts}
    assert sizes and min(sizes) * style.DPI / 72 >= 12  # pixels of a digit's height at DPI


def test_no_command_imports_another_command():
    """analyze, plot and merge reach results through lwlc.results, never through each other."""
    commands = ("analyze", "plot", "merge", "experiment")
    own = [p for p in (SRC / "commands").glob("*.py") if p.stem.split("_")[0] in commands[:3]]
    assert len(own) >= 3
    for path in own:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                for other in commands:
                    if other != path.stem.split("_")[0] and name == f"lwlc.commands.{other}":
                        raise AssertionError(f"{path.name} imports lwlc.commands.{other}")


def test_result_files_are_written_in_plan_order_whatever_order_rows_arrive(tmp_path):
    from lwlc.core.barriers import BARRIER_COLUMNS
    from lwlc.core.interpolation import InterpolationPath
    from lwlc.results.files import Interrupts, ResultFiles

    names = (("full", "all"), ("single", "fc1"), ("single", "fc2"))
    paths = [InterpolationPath(p, g, "a", frozenset()) for p, g in names]

    def row(plan: str, group: str, split: str) -> dict:
        return dict(plan=plan, group=group, rest_from="a", split=split, reference="models",
                    loss_barrier=1.0, error_barrier=0.0)  # fmt: skip

    with Interrupts() as interrupts:
        files = ResultFiles(tmp_path, paths, ["test", "val"], interrupts)
        files.add([], [row("single", "fc2", "val"), row("single", "fc2", "test")])
        files.add([], [row("full", "all", "val"), row("single", "fc1", "test")])
    written = [(r["plan"], r["group"], r["split"]) for r in read_csv(tmp_path / "barriers.csv")]
    assert written == [("full", "all", "val"), ("single", "fc1", "test"),
                       ("single", "fc2", "test"), ("single", "fc2", "val")]  # fmt: skip
    assert (tmp_path / "barriers.csv").read_text().splitlines()[0] == ",".join(BARRIER_COLUMNS)
    assert files.finished_paths() == 3


def test_an_interrupted_analysis_draws_its_finished_paths_and_no_stale_figure(
    tmp_path, monkeypatch
):
    import os
    import signal

    from lwlc.results import files as results_files

    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpts.append(tmp_path / f"m{seed}.pt")
        torch.save(MLP(width=8).state_dict(), ckpts[-1])
    out = tmp_path / "out"
    out.mkdir()
    (out / "barriers_val.png").write_bytes(b"a figure of an earlier analysis")
    real_write = results_files.write_csv

    def write_then_terminate(path, rows, columns):  # SIGTERM once two paths are written
        real_write(path, rows, columns)
        if Path(path).name == "barriers.csv" and len(rows) >= 6:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(results_files, "write_csv", write_then_terminate)
    drawn: dict[str, Figure] = {}
    save = draw.save_figure
    monkeypatch.setattr(draw, "save_figure", lambda f, p, **k: drawn.setdefault(Path(p).name, f)
                        and save(f, p, **k))  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main(["analyze", "--ckpt-a", str(ckpts[0]), "--ckpt-b", str(ckpts[1]), "--out", str(out),
              "--overwrite", "--model", "lwlc.models.MLP", "--model.init_args.width", "8",
              "--data", "lwlc.data.DigitsDataModule", "--plans", "full,single", "--alphas",
              "0,0.5,1", "--splits", "test", "--chunk-size", "1",
              "--max-samples", "50"])  # fmt: skip
    assert stop.value.code == 128 + signal.SIGTERM
    assert not (out / "barriers_val.png").exists()  # --overwrite took the old figure too
    rows = read_csv(out / "barriers.csv")
    singles = [r for r in rows if r["plan"] == "single" and r["reference"] == "midpoint"]
    assert 1 <= len(singles) < 6  # some single-layer paths finished, not all
    heights = sorted(_bar_heights(drawn["barriers_test.png"].axes[0]))
    assert heights == pytest.approx(sorted(float(r["loss_barrier"]) for r in singles), abs=1e-6)


def test_redrawing_with_another_main_reference_leaves_no_stale_figure_beside(tmp_path):
    """After a drawing whose main reference was ``models`` (``midpoint`` beside), the default
    drawing makes ``midpoint`` the main figure and removes its old copy beside."""
    barriers = [
        dict(plan=plan, group=group, rest_from="a", split="test", reference=ref,
             loss_barrier=value, error_barrier=value / 10)
        for plan, group in (("full", "all"), ("single", "fc1"), ("single", "fc2"))
        for ref, value in (("midpoint", 0.5), ("models", 1.5), ("path", 0.0))
    ]  # fmt: skip
    curves = [
        dict(plan=plan, group=group, rest_from="a", split="test", alpha=a, loss=1 + a * (1 - a),
             accuracy=0.9)
        for plan, group in (("full", "all"), ("single", "fc1"), ("single", "fc2"))
        for a in (0.0, 0.5, 1.0)
    ]  # fmt: skip
    draw.save_analysis_figures(tmp_path, curves, barriers, reference="models")
    assert (tmp_path / "barriers_test_midpoint.png").is_file()
    draw.save_analysis_figures(tmp_path, curves, barriers)
    names = sorted(p.name for p in tmp_path.glob("barriers_*.png"))
    assert names == ["barriers_test.png", "barriers_test_models.png", "barriers_test_path.png"]
