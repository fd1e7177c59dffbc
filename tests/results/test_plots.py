"""Figures: the values drawn are the values given, heatmap layout, and ``lwlc plot``."""

from __future__ import annotations

import math

import pytest
from matplotlib.collections import QuadMesh
from matplotlib.patches import Rectangle
from PIL import Image

from lwlc import figures
from lwlc.commands import plot
from lwlc.core.barriers import BARRIER_COLUMNS, CURVE_COLUMNS
from lwlc.core.errors import LwlcError
from lwlc.formats.io import write_csv

LAYERS = ("fc1", "fc2", "head")


def _barrier(plan, group, rest, loss, error, reference="path", split="test", **extra):
    return {
        "plan": plan,
        "group": group,
        "rest_from": rest,
        "split": split,
        "reference": reference,
        "loss_barrier": loss,
        "error_barrier": error,
        **extra,
    }


def _analysis_rows() -> tuple[list[dict], list[dict]]:
    """Curves and barriers of an analysis: full plus single layers with rest a and b."""
    curves, barriers = [], []
    for plan, group, rest, scale in [("full", "all", "a", 1.0)] + [
        ("single", g, r, 0.1 * (i + 1) + (0.05 if r == "b" else 0))
        for i, g in enumerate(LAYERS)
        for r in "ab"
    ]:
        for alpha in (0.0, 0.5, 1.0):
            bump = scale * alpha * (1 - alpha)
            curves.append(
                {
                    "plan": plan,
                    "group": group,
                    "rest_from": rest,
                    "split": "test",
                    "alpha": alpha,
                    "loss": 0.3 + bump,
                    "accuracy": 0.9 - bump / 10,
                }
            )
        barriers.append(_barrier(plan, group, rest, scale / 4, scale / 40))
    return curves, barriers


def _training_rows(epochs=(0, 1, 2, 3), steps_per_epoch=10) -> list[dict]:
    """Barriers over training: value = epoch + row index / 10, so every cell is known."""
    rows = []
    for epoch in epochs:
        for i, (plan, group) in enumerate([("full", "all"), *(("single", g) for g in LAYERS)]):
            for reference in ("path", "midpoint"):
                value = epoch + i / 10 + (0.5 if reference == "path" else 0.0)
                rows.append(
                    _barrier(
                        plan,
                        group,
                        "a",
                        value,
                        value / 100,
                        reference,
                        "val",
                        epoch=epoch,
                        step=epoch * steps_per_epoch,
                    )
                )
    return rows


def test_heatmap_table_puts_the_full_model_first_and_layers_in_forward_order():
    table = figures.heatmap_table(
        _training_rows(), plan="single", metric="loss", reference="midpoint"
    )
    assert list(table.index) == [figures.FULL_LABEL, *LAYERS]
    assert list(table.columns) == [0, 1, 2, 3]
    assert table.columns.name == "epoch"
    for i, label in enumerate(table.index):
        for epoch in table.columns:
            assert table.loc[label, epoch] == pytest.approx(epoch + i / 10)


def test_heatmap_error_is_a_fraction_as_in_the_csv():
    table = figures.heatmap_table(_training_rows(), metric="error", reference="midpoint")
    assert table.loc["fc2", 3] == pytest.approx((3 + 2 / 10) / 100)


def test_heatmap_columns_are_steps_when_an_epoch_holds_several_evaluations():
    rows = _training_rows()
    rows += [{**r, "step": 5} for r in rows if r["epoch"] == 0]
    table = figures.heatmap_table(rows, reference="midpoint")
    assert table.columns.name == "step"
    assert list(table.columns) == [0, 5, 10, 20, 30]


def test_heatmap_draws_one_cell_per_value():
    fig = figures.barrier_heatmap(_training_rows(), reference="midpoint")
    mesh = next(c for c in fig.axes[0].collections if isinstance(c, QuadMesh))
    drawn = mesh.get_array().reshape(4, 4)
    for i in range(4):
        for epoch in range(4):
            assert drawn[i, epoch] == pytest.approx(epoch + i / 10)


def test_heatmap_cells_that_round_to_zero_read_0_not_minus_0():
    rows = _training_rows(epochs=(0, 1))
    for row in rows:  # epoch 0: numerical noise on both sides of zero
        if row["epoch"] == 0:
            row["loss_barrier"] = -0.0004 if row["group"] != "fc1" else 0.0004
    fig = figures.barrier_heatmap(rows, reference="midpoint")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "-0.00" not in texts and "-0.0" not in texts
    assert texts.count("0.00") == len(LAYERS) + 1  # the epoch-0 column, every row
    assert "1.10" in texts  # real values keep their sign and digits


def test_a_cumulative_heatmaps_title_names_its_rows_in_words():
    rows = [{**r, "plan": "cumulative_front"} for r in _training_rows() if r["plan"] != "full"]
    rows += [r for r in _training_rows() if r["plan"] == "full"]
    fig = figures.barrier_heatmap(rows, plan="cumulative_front", reference="midpoint")
    title = fig.get_suptitle()
    assert title.startswith("loss barrier by cumulative group from the front over training")
    assert fig.axes[0].get_ylabel() == "front layers up to"


def test_heatmap_of_results_without_epochs_is_a_clear_error():
    _, barriers = _analysis_rows()
    with pytest.raises(LwlcError, match="no epoch/step columns"):
        figures.barrier_heatmap(barriers, reference="path")


def test_layer_bars_have_the_given_heights_and_the_full_model_as_a_line():
    _, barriers = _analysis_rows()
    fig = figures.layer_barriers(barriers, reference="path")
    loss_ax, error_ax = fig.axes[0], fig.axes[1]
    heights = sorted(
        p.get_height() for p in loss_ax.patches if isinstance(p, Rectangle) and p.get_height()
    )
    expected = sorted(r["loss_barrier"] for r in barriers if r["plan"] == "single")
    assert heights == pytest.approx(expected)
    errors = sorted(
        p.get_height() for p in error_ax.patches if isinstance(p, Rectangle) and p.get_height()
    )
    assert errors == pytest.approx(
        sorted(r["error_barrier"] for r in barriers if r["plan"] == "single")
    )
    full_line = [line for line in loss_ax.lines if line.get_label() == figures.FULL_LABEL]
    assert full_line and full_line[0].get_ydata()[0] == pytest.approx(0.25)


def test_interpolation_curves_draw_every_path():
    curves, _ = _analysis_rows()
    fig = figures.interpolation_curves(curves)
    full_loss = fig.axes[0].lines[0]
    assert list(full_loss.get_xdata()) == [0.0, 0.5, 1.0]
    assert list(full_loss.get_ydata()) == pytest.approx([0.3, 0.55, 0.3])
    single_loss = fig.axes[1]
    drawn = sorted(
        round(float(y), 6)
        for line in single_loss.lines
        for y in line.get_ydata()
        if not math.isnan(y)
    )
    expected = sorted(round(r["loss"], 6) for r in curves if r["plan"] == "single")
    assert set(expected) <= set(drawn)


def _png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_lwlc_plot_redraws_an_analysis_directory(tmp_path, capsys):
    curves, barriers = _analysis_rows()
    write_csv(tmp_path / "curves.csv", curves, CURVE_COLUMNS)
    write_csv(tmp_path / "barriers.csv", barriers, BARRIER_COLUMNS)
    plot.main([str(tmp_path)])
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["barriers_test.png", "curves_test.png"]
    assert all(min(_png(tmp_path / name)) > 100 for name in written)
    assert capsys.readouterr().out.split() == [
        str(tmp_path / n) for n in ("curves_test.png", "barriers_test.png")
    ]


def test_lwlc_plot_redraws_a_training_run_including_heatmaps(tmp_path):
    barriers = _training_rows()
    curves = [
        {
            "epoch": r["epoch"],
            "step": r["step"],
            "plan": r["plan"],
            "group": r["group"],
            "rest_from": "a",
            "split": "val",
            "alpha": alpha,
            "loss": 0.1 + alpha,
            "accuracy": 0.9,
        }
        for r in barriers
        if r["reference"] == "path"
        for alpha in (0.0, 0.5, 1.0)
    ]
    results = tmp_path / "run" / "barriers"
    write_csv(results / "curves.csv", curves, ("epoch", "step", *CURVE_COLUMNS))
    write_csv(results / "barriers.csv", barriers, ("epoch", "step", *BARRIER_COLUMNS))
    written = plot.run([str(tmp_path / "run"), "--out", str(tmp_path / "figures")])
    names = sorted(p.name for p in written)
    assert names == sorted(
        [
            "curves_val.png",
            "barriers_val.png",
            "heatmap_val_single_loss.png",
            "heatmap_val_single_error.png",
        ]
    )
    assert all(p.parent == tmp_path / "figures" and _png(p) for p in written)


def test_lwlc_plot_names_what_it_looked_for(tmp_path):
    with pytest.raises(LwlcError, match="no curves.csv and barriers.csv in .*barriers"):
        plot.run([str(tmp_path)])


def test_save_heatmaps_draws_the_requested_metrics_for_each_split_and_plan(tmp_path):
    rows = _training_rows()
    rows += [{**r, "split": "test"} for r in rows]
    written = figures.save_heatmaps(tmp_path, rows, "midpoint", metrics=["loss"])
    assert [p.name for p in written] == [
        "heatmap_val_single_loss.png",
        "heatmap_test_single_loss.png",
    ]
    assert all(_png(p) for p in written)
