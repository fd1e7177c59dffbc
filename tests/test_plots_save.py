"""``plots.save_figure``: its one-pass PNG is the image matplotlib's ``savefig`` draws."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lwlc import plots

LAYERS = ("fc1", "fc2", "a.rather.long.layer_name")


def _training_rows() -> list[dict]:
    """Barriers of a full model and three layers over four epochs (values known per cell)."""
    rows = []
    for epoch in range(4):
        for i, (plan, group) in enumerate([("full", "all"), *(("single", g) for g in LAYERS)]):
            value = (epoch - 1.5) * (i + 1) / 10
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
        lambda rows: plots.barrier_heatmap(rows, metric="loss"),
        lambda rows: plots.barrier_heatmap(rows, metric="error"),
        lambda rows: plots.barrier_matrices(rows, "group", "epoch", "plan", reference="midpoint"),
        lambda rows: plots.layer_barriers(rows, reference="midpoint"),
    ],
    ids=["heatmap_loss", "heatmap_error", "matrices", "bars"],
)
def test_saved_png_is_pixel_for_pixel_what_savefig_draws(tmp_path, draw):
    rows = _training_rows()
    expected = io.BytesIO()
    draw(rows).savefig(expected, dpi=90, format="png")
    fig = draw(rows)
    canvas, dpi = fig.canvas, fig.dpi
    path = plots.save_figure(fig, tmp_path / "figure.png", dpi=90)
    saved = _pixels(path.read_bytes())
    assert saved.shape == _pixels(expected).shape
    assert np.array_equal(saved, _pixels(expected))
    assert fig.canvas is canvas and fig.dpi == dpi, "the figure is left as it was"


def test_other_formats_are_written_by_savefig(tmp_path):
    path = plots.save_figure(plots.barrier_heatmap(_training_rows()), tmp_path / "heatmap.svg")
    assert path.read_text().lstrip().startswith("<?xml") and "<svg" in path.read_text()
