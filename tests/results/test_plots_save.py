"""``figures.save_figure``: its one-pass PNG is the image matplotlib's ``savefig`` draws; under
constrained layout the heatmap keeps every label inside the figure, its colour bar beside it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from lwlc import figures

LAYERS = ("fc1", "fc2", "a.rather.long.layer_name")


def _training_rows(layers=LAYERS, epochs=4, scale=0.1) -> list[dict]:
    """Barriers of a full model and some layers over some epochs (values known per cell)."""
    rows = []
    for epoch in range(epochs):
        for i, (plan, group) in enumerate([("full", "all"), *(("single", g) for g in layers)]):
            value = (epoch - 1.5) * (i + 1) * scale
            rows.append(
                {
                    "plan": plan,
                    "group": group,
                    "rest_from": "a",
                    "split": "val",
                    "reference": "midpoint",
                    "loss_barrier": value,
                    "error_barrier": value / 10,
                    "epoch": epoch,
                    "step": 10 * epoch,
                }
            )
    return rows


def _pixels(png: bytes | io.BytesIO) -> np.ndarray:
    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as image:
        assert image.format == "PNG"
        return np.asarray(image)


@pytest.mark.parametrize(
    "draw",
    [
        lambda rows: figures.barrier_heatmap(rows, metric="loss"),
        lambda rows: figures.barrier_heatmap(rows, metric="error"),
        lambda rows: figures.barrier_matrices(rows, "group", "epoch", "plan", reference="midpoint"),
        lambda rows: figures.layer_barriers(rows, reference="midpoint"),
    ],
    ids=["heatmap_loss", "heatmap_error", "matrices", "bars"],
)
def test_saved_png_is_pixel_for_pixel_what_savefig_draws(tmp_path, draw):
    rows = _training_rows()
    expected = io.BytesIO()
    draw(rows).savefig(expected, dpi=90, format="png")
    fig = draw(rows)
    canvas, dpi = fig.canvas, fig.dpi
    path = figures.save_figure(fig, tmp_path / "figure.png", dpi=90)
    saved = _pixels(path.read_bytes())
    assert saved.shape == _pixels(expected).shape
    assert np.array_equal(saved, _pixels(expected))
    assert fig.canvas is canvas and fig.dpi == dpi, "the figure is left as it was"


def test_other_formats_are_written_by_savefig(tmp_path):
    path = figures.save_figure(figures.barrier_heatmap(_training_rows()), tmp_path / "heatmap.svg")
    assert path.read_text().lstrip().startswith("<?xml") and "<svg" in path.read_text()


@pytest.mark.parametrize(
    ("layers", "epochs", "scale"),
    [
        (LAYERS, 4, 0.1),
        (("stem", "layer4.1.downsample.0", *(f"block{i}" for i in range(12))), 30, 1e-6),
        (("x",), 1, 10.0),
    ],
    ids=["small", "long_names_many_epochs_tiny_values", "one_cell_row"],
)
def test_heatmap_labels_stay_inside_the_figure_beside_a_full_height_colorbar(
    tmp_path, layers, epochs, scale
):
    fig = figures.barrier_heatmap(_training_rows(layers, epochs, scale))
    pixels = _pixels(figures.save_figure(fig, tmp_path / "heatmap.png").read_bytes())
    # Nothing is cut at the edges: a 3-pixel frame of the image is all background.
    frame = np.concatenate(
        [pixels[:3].reshape(-1, 4), pixels[-3:].reshape(-1, 4)]
        + [pixels[:, :3].reshape(-1, 4), pixels[:, -3:].reshape(-1, 4)]
    )
    assert (frame == 255).all()
    # Labels were drawn around the cells (the image is not blank beyond the cells).
    canvas = FigureCanvasAgg(fig)
    fig.dpi = 120
    canvas.draw()
    renderer = canvas.get_renderer()
    cells, bar = (ax.get_window_extent(renderer) for ax in fig.axes)
    assert cells.x0 > 20 and cells.y0 > 20, "room left for the layer names and the epochs"
    assert bar.x0 > cells.x1 and bar.height == pytest.approx(cells.height)
    assert fig.bbox.width - bar.x1 > 20, "room right of the colorbar for its ticks and label"
    assert cells.width > 0.5 * (fig.bbox.width - cells.x0), "the cells fill the rest"
