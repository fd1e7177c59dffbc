"""How the figures read: laid out by matplotlib (nothing cut off, legends and colour bars outside
the data), compared panels on one y axis, rows at most 1,600 px wide, error in percent and
error barriers as fractions as drawn, heatmap cells at their epochs, the pairwise diagonal
marked, titles naming split, reference and pairing; and ``lwlc plot`` of a folder of several
checkpoints.

Every property is read back from the drawn Figure (artists' data and window extents after a
draw at the saved resolution), not from pixels.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from lwlc import figures
from lwlc.commands.cli import main
from lwlc.core.barriers import BARRIER_COLUMNS, CURVE_COLUMNS
from lwlc.formats.io import write_csv, write_json
from lwlc.results import draw

PLANS = ("full", "single", "cumulative_front", "cumulative_back")
LAYERS = ("fc1", "fc2", "layer4.1.downsample.0", "head")
DPI = 120  # save_figure's resolution
MAX_ROW_PX = 1600  # the widest a figure may be at it (the limit)
PAIRING = "shared initialisation (seed 0), different data orders (seeds 0, 1)"


def _analysis(plans=PLANS, layers=LAYERS, aligned=False):
    """Curves and barriers of an analysis with known values (``aligned``: every plan twice)."""
    curves, barriers = [], []
    kinds = [*plans, *(f"aligned:{p}" for p in plans)] if aligned else list(plans)
    for k, plan in enumerate(kinds):
        groups = ["all"] if plan.endswith("full") else list(layers)
        for i, group in enumerate(groups):
            for rest in "ab":
                scale = 0.1 * (k + 1) + 0.02 * i + (0.01 if rest == "b" else 0.0)
                for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
                    bump = scale * alpha * (1 - alpha)
                    curves.append(
                        dict(plan=plan, group=group, rest_from=rest, split="test", alpha=alpha,
                             loss=0.3 + bump, accuracy=0.9 - bump)
                    )  # fmt: skip
                for ref in ("path", "midpoint"):
                    barriers.append(
                        dict(plan=plan, group=group, rest_from=rest, split="test", reference=ref,
                             loss_barrier=scale / 4, error_barrier=scale / 4)
                    )  # fmt: skip
    return curves, barriers


def _training(epochs, layers=("fc1", "fc2", "head")):
    rows = []
    for epoch in epochs:
        for i, (plan, group) in enumerate([("full", "all"), *(("single", g) for g in layers)]):
            value = epoch / 100 + i / 10
            rows.append(
                dict(plan=plan, group=group, rest_from="a", split="val", reference="midpoint",
                     loss_barrier=value, error_barrier=value / 10, epoch=epoch, step=10 * epoch)
            )  # fmt: skip
    return rows


def _pairwise(models=("m0", "m1", "m2")):
    """Matrix cells of several checkpoints as lwlc analyze --ckpt m0 m1 m2 hands them over."""
    rows = []
    for a in models:
        for b in models:
            if a != b:
                for group in ("full model", "fc1", "fc2"):
                    rows.append(
                        dict(split="test", reference="path", group=group, model=a, toward=b,
                             loss_barrier=0.1 * models.index(a) + 0.01 * models.index(b),
                             error_barrier=0.01)
                    )  # fmt: skip
    return rows


def _drawn(fig: Figure) -> FigureCanvasAgg:
    """``fig`` laid out and drawn as save_figure draws it (at its DPI)."""
    canvas = FigureCanvasAgg(fig)
    fig.dpi = DPI
    canvas.draw()
    return canvas


FIGURES = {
    "curves": lambda: figures.interpolation_curves(_analysis()[0], pairing=PAIRING),
    "curves_aligned": lambda: figures.interpolation_curves(_analysis(aligned=True)[0]),
    "bars_one_plan": lambda: figures.layer_barriers(
        _analysis(("full", "single"))[1], "midpoint", pairing=PAIRING
    ),
    "bars_one_plan_untitled": lambda: figures.layer_barriers(_analysis(("single",))[1], "midpoint"),
    "bars_aligned": lambda: figures.layer_barriers(_analysis(aligned=True)[1], "path"),
    "bars_many_groups": lambda: figures.layer_barriers(
        _analysis(("full", "single", "custom"), [f"random_{i}" for i in range(14)])[1], "path"
    ),
    "heatmap": lambda: figures.barrier_heatmap(_training(range(11)), pairing=PAIRING),
    "heatmap_uneven": lambda: figures.barrier_heatmap(
        _training([*range(10), *range(20, 201, 20)]), metric="error"
    ),
    "pairwise": lambda: figures.barrier_matrices(
        _pairwise(), "model", "toward", "group", pairing="every pair of m0, m1, m2"
    ),
    "pairwise_many": lambda: figures.barrier_matrices(
        [dict(r, group=f"{r['group']}_{k}") for k in range(4) for r in _pairwise()],
        "model",
        "toward",
        "group",
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", FIGURES)
def test_every_text_lies_inside_the_figure_and_rows_are_at_most_1600_px(name):
    fig = FIGURES[name]()
    renderer = _drawn(fig).get_renderer()
    drawn = fig.get_tightbbox(renderer)  # in inches: every artist drawn, texts included
    assert drawn.x0 >= 0 and drawn.y0 >= 0, "cut off at the left or bottom"
    assert drawn.x1 <= fig.get_figwidth() + 0.01 and drawn.y1 <= fig.get_figheight() + 0.01
    titles = [
        fig._suptitle,
        *(ax.title for ax in fig.axes),
        *(t for g in fig.legends for t in g.texts),
    ]
    for text in (t for t in titles if t is not None and t.get_text()):
        extent = text.get_window_extent(renderer)
        assert fig.bbox.x0 - 1 <= extent.x0 and extent.x1 <= fig.bbox.x1 + 1, text.get_text()
    assert fig.get_figwidth() * DPI <= MAX_ROW_PX


@pytest.mark.parametrize("name", ["curves", "bars_one_plan", "bars_aligned"])
def test_legends_are_outside_every_axes(name):
    fig = FIGURES[name]()
    renderer = _drawn(fig).get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for legend in legends:
        extent = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not extent.overlaps(ax.get_window_extent(renderer))


def _panels(fig: Figure, ylabel_word: str) -> list:
    """The axes of one quantity: those in the first column named by their y label, the rest
    by sharing its y axis."""
    first = [ax for ax in fig.axes if ylabel_word in ax.get_ylabel()]
    return [ax for ax in fig.axes if any(ax.get_shared_y_axes().joined(ax, f) for f in first)]


@pytest.mark.parametrize(
    ("name", "quantities"),
    [("curves", ("loss", "error")), ("bars_aligned", ("loss barrier", "error barrier"))],
)
def test_panels_of_one_quantity_share_their_y_axis(name, quantities):
    fig = FIGURES[name]()
    _drawn(fig)
    for quantity in quantities:
        axes = _panels(fig, quantity)
        assert len(axes) >= 4
        assert len({ax.get_ylim() for ax in axes}) == 1
    assert len(_panels(fig, quantities[0])) + len(_panels(fig, quantities[1])) == len(fig.axes)


def test_curves_draw_error_in_percent():
    curves, _ = _analysis(("full",))
    fig = figures.interpolation_curves(curves)
    loss_ax, error_ax = fig.axes
    assert error_ax.get_ylabel() == "error (%)"
    drawn = [line for line in error_ax.lines if len(line.get_xdata()) == 5]
    expected = [100 * (1 - r["accuracy"]) for r in curves if r["rest_from"] == "a"]
    assert list(drawn[0].get_ydata()) == pytest.approx(expected)


def test_heatmap_cells_sit_at_their_epochs_to_scale():
    epochs = [*range(10), *range(20, 201, 20)]
    fig = figures.barrier_heatmap(_training(epochs))
    mesh = next(c for c in fig.axes[0].collections if isinstance(c, QuadMesh))
    xs = mesh.get_coordinates()[0, :, 0]  # the cell edges along x
    x = np.array(epochs, dtype=float)
    assert list(xs[1:-1]) == pytest.approx(list((x[1:] + x[:-1]) / 2)), "halfway to neighbours"
    assert ((xs[:-1] < x) & (x < xs[1:])).all(), "each epoch inside its own cell"
    widths = np.diff(xs)
    assert widths[5] == pytest.approx(1.0) and widths[-2] == pytest.approx(20.0)
    drawn = mesh.get_array().reshape(4, len(epochs))
    assert drawn[0, -1] == pytest.approx(2.0) and drawn[3, 0] == pytest.approx(0.3)


def test_heatmap_labels_every_cell_wide_enough_for_its_number():
    # The demo's schedule: epochs 0-9, then every 5 to 30 (8 x 15 = 120 cells, the limit): the
    # narrow early cells stay unlabelled, each of the wide late ones shows its value.
    epochs = [*range(10), *range(10, 31, 5)]
    layers = ("fc1", "fc2", "fc3", "fc4", "fc5", "fc6", "head")
    fig = figures.barrier_heatmap(_training(epochs, layers))
    ax = fig.axes[0]
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    xs = mesh.get_coordinates()[0, :, 0]
    inches = np.diff(xs) / (xs[-1] - xs[0]) * ax.get_position().width * fig.get_figwidth()
    wide = [e for e, w in zip(epochs, inches, strict=True) if w >= 0.3]
    assert wide == [10, 15, 20, 25, 30] and max(inches[:10]) < 0.3
    labels = {(round(t.get_position()[0], 6), t.get_text()) for t in ax.texts}
    centres = (xs[1:] + xs[:-1]) / 2
    expected = {
        (round(float(centres[epochs.index(e)]), 6), f"{e / 100 + i / 10:.2f}")
        for e in wide
        for i in range(len(layers) + 1)
    }
    assert labels == expected


@pytest.mark.parametrize(
    "epochs",
    [
        [*range(10), *range(10, 31, 5)],  # the demo's schedule
        [*range(10), *range(20, 201, 20)],
        list(range(31)),  # fashion_mnist_mlp: every epoch
        list(range(0, 4001, 250)),  # steps: long labels
    ],
)
def test_heatmap_names_evaluations_on_its_x_axis(epochs):
    # Each x tick label names an evaluation (the cell above it), never a round number between
    # cells; the first and the last evaluations are named, the labels do not touch, and every
    # evaluation without a name has a minor tick.
    fig = figures.barrier_heatmap(_training(epochs))
    ax = fig.axes[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.dpi = DPI
    fig.draw(renderer)
    named = [t for t in ax.get_xticklabels() if t.get_text()]
    where = [float(t.get_position()[0]) for t in named]
    assert [float(t.get_text()) for t in named] == where
    assert set(where) <= set(epochs) and where[0] == epochs[0] and where[-1] == epochs[-1]
    boxes = [t.get_window_extent(renderer) for t in named]
    assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes)), "labels apart"
    minor = set(ax.xaxis.get_minorticklocs())
    assert set(epochs) - set(where) <= minor
    if epochs[-1] == 30 and len(epochs) == 15:  # the wide cells of the demo: each named
        assert {10, 15, 20, 25, 30} <= set(where)


def test_pairwise_matrix_has_one_colour_bar_and_a_marked_diagonal():
    fig = FIGURES["pairwise"]()
    panels = [ax for ax in fig.axes if ax.get_title().startswith("layer: ")]
    assert len(panels) == 3 and len(fig.axes) == 4, "three matrices and one colour bar"
    for ax in panels:
        mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
        mask = np.ma.getmaskarray(mesh.get_array()).reshape(3, 3)
        assert (mask == np.eye(3, dtype=bool)).all(), "only the diagonal is left out"
        marks = [t for t in ax.texts if t.get_text() == "same\nmodel"]
        assert sorted(t.get_position() for t in marks) == [(0.5, 0.5), (1.5, 1.5), (2.5, 2.5)]


@pytest.mark.parametrize("name", ["curves", "bars_one_plan", "heatmap", "pairwise"])
def test_titles_name_the_split_the_reference_and_the_pairing(name):
    title = FIGURES[name]()._suptitle.get_text().replace("\u00a0", " ")  # unbroken parentheses
    assert "test split" in title or "val split" in title
    assert ("pair: " + PAIRING in title) or ("pair: every pair of m0, m1, m2" in title)
    if name != "curves":  # curves are the measured values: no reference
        assert "reference: " in title


def test_pairing_text_reads_analyze_and_callback_summaries():
    pair = {"init": "shared", "order": "different", "init_seed_a": 0, "init_seed_b": 0,
            "order_seed_a": 0, "order_seed_b": 1, "spawn_steps": 0}  # fmt: skip
    callback = {"pairing": {"mode": "pair", **pair}}
    analysis = {
        "pairing": "init: shared, ...",
        "checkpoints": [{"path": "p.ckpt", "pairing": pair}],
    }
    separate = {"checkpoints": [{"path": "/r/x/last.ckpt"}, {"path": "/r/y/last.ckpt"}]}
    assert figures.pairing_text(callback) == figures.pairing_text(analysis) == PAIRING
    assert figures.pairing_text(separate) == "A = x/last.ckpt, B = y/last.ckpt (in /r)"
    spawn = {"pairing": {**pair, "init": "spawn", "spawn_steps": 7, "order": "shared"}}
    assert figures.pairing_text(spawn) == "B spawned from A after 7 steps, same data order (seed 0)"


def _pair_folder(root, models=("m0", "m1", "m2")):
    """The --out of ``lwlc analyze --ckpt m0 m1 m2``: all pairs' barriers, one folder per pair."""
    curves, barriers = _analysis(("full", "single"), ("fc1", "fc2"))
    everything = []
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            write_csv(root / f"{a}~{b}" / "curves.csv", curves, CURVE_COLUMNS)
            write_csv(root / f"{a}~{b}" / "barriers.csv", barriers, BARRIER_COLUMNS)
            summary = {"checkpoints": [{"path": f"/runs/{m}/last.ckpt"} for m in (a, b)]}
            write_json(root / f"{a}~{b}" / "summary.json", summary)
            everything += [dict(r, model_a=a, model_b=b) for r in barriers]
    write_csv(root / "barriers.csv", everything, (*BARRIER_COLUMNS, "model_a", "model_b"))


def test_lwlc_plot_redraws_a_folder_of_several_checkpoints(tmp_path, capsys, monkeypatch):
    _pair_folder(tmp_path / "abc")
    drawn: dict[str, Figure] = {}
    save = figures.save_figure
    monkeypatch.setattr(  # every figure of lwlc plot is saved by lwlc.results.draw
        draw, "save_figure", lambda f, p, **k: drawn.setdefault(str(p), f) and save(f, p, **k)
    )
    main(["plot", str(tmp_path / "abc"), "--out", str(tmp_path / "figures")])
    written = capsys.readouterr().out.split()
    pairs = ("m0~m1", "m0~m2", "m1~m2")
    assert sorted(written) == sorted(
        [str(tmp_path / "figures" / f"pairwise_test_{r}.png") for r in ("path", "midpoint")]
        + [
            str(tmp_path / "figures" / p / n)
            for p in pairs  # each pair's bars at midpoint (no models rows here), path beside
            for n in ("curves_test.png", "barriers_test.png", "barriers_test_path.png")
        ]
    )
    assert all((tmp_path / "figures" / w).is_file() for w in written)
    matrix = drawn[str(tmp_path / "figures" / "pairwise_test_path.png")]
    assert "pair: every pair of m0, m1, m2" in matrix._suptitle.get_text()
    bars = drawn[str(tmp_path / "figures" / "m0~m2" / "barriers_test.png")]
    bars_title = bars._suptitle.get_text().replace("\u00a0", " ")  # unbroken parentheses
    assert "pair: A = m0/last.ckpt, B = m2/last.ckpt (in /runs)" in bars_title


def test_lwlc_plot_of_several_checkpoints_names_a_missing_pair_folder(tmp_path, capsys):
    _pair_folder(tmp_path / "abc")
    (tmp_path / "abc" / "m0~m2" / "curves.csv").unlink()
    with pytest.raises(SystemExit) as exit_:
        main(["plot", str(tmp_path / "abc")])
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("lwlc: error: ") and "m0~m2" in line and "\n" not in line
    assert not list((tmp_path / "abc").rglob("*.png")), "nothing drawn"
