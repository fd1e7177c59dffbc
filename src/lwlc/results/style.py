"""lwlc's one look for figures: style, labels, panel grids, legends, and atomic saving.

Figures are built with matplotlib's object API, never pyplot, so drawing is safe inside a training
process and a dropped figure is freed. They are laid out by matplotlib's constrained layout:
nothing is cropped, legends and colour bars sit outside the data, and panels wrap into rows of at
most ``MAX_ROW_PX`` pixels at ``DPI``. Units: loss in nats (or the unit given), error in percent,
error barriers as fractions of the samples (0.01 = one percentage point), as the CSVs and W&B
hold them: one unit per name everywhere.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd
import seaborn as sns
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

from lwlc.core.errors import LwlcError
from lwlc.formats.io import atomic_file
from lwlc.results.references import FLAT_REASON
from lwlc.results.words import (  # noqa: F401  (re-exported: the figures' words live there)
    FULL_LABEL,
    HEATMAP_ROWS,
    LAYER_AXIS,
    REFERENCES,
    REST,
    barrier_label,
    pairing_text,
)

Rows = Sequence[Mapping[str, object]] | pd.DataFrame

SAME_MODEL = "same model"
DIVERGING = "vlag"
DPI = 120  # the resolution figures are saved at (save_figure's default)
MAX_ROW_PX = 1600  # the widest a row of panels may be at DPI
FLAT = {"loss": 5e-4, "error": 5e-5}  # below these (nats, fraction) a bar does not show on its axis
VISIBLE = 0.02  # a bar shorter than this share of its axis's span is not seen
FLAT_NOTE = "flat-note"  # the gid of the note saying why a panel shows no bars
NAMES = {"group": "layer", "rest_from": "rest from"}
_NUMERIC = ("alpha", "loss", "accuracy", "loss_barrier", "error_barrier", "epoch", "step")
_CHAR = 0.065  # inches per character of a legend label (small font), to reserve its width


@contextmanager
def look() -> Iterator[None]:
    """lwlc's one style (seaborn's whitegrid, paper context, colour-blind palette), scoped."""
    with (
        sns.axes_style("whitegrid"),
        sns.plotting_context("paper"),
        sns.color_palette("colorblind"),
    ):
        yield


def frame(rows: Rows) -> pd.DataFrame:
    """Result rows as a DataFrame with numeric columns as numbers and an ``error`` column in %."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column in _NUMERIC:
        if column in df:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    if "accuracy" in df:
        df["error"] = 100.0 * (1.0 - df["accuracy"])
    return df


def is_flat(values: Sequence[float] | pd.Series, metric: str) -> bool:
    """Whether every finite value of ``values`` is about 0 (below what an axis of it shows)."""
    finite = [abs(float(v)) for v in values if math.isfinite(float(v))]
    return bool(finite) and max(finite) < FLAT[metric]


def note_flat(
    ax: Axes, values: Sequence[float] | pd.Series, metric: str, reference: str | None = None
) -> bool:
    """Say inside ``ax`` why its bars are not visible: every value is about 0, or too small to
    see on the axis's final span (a full model's line far above them), with the reason for
    ``reference`` if one is known; or none was measured. Call it once the axis's limits are
    final (after every panel sharing them is drawn)."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    unit = "nats" if metric == "loss" else "of the samples"
    reason = "\n" + FLAT_REASON[reference] if reference in FLAT_REASON else ""
    low, high = ax.get_ylim()
    seen = max(FLAT[metric], VISIBLE * (high - low))  # the shortest bar a reader sees
    if not finite:
        text = "not measured (nan)"
    elif is_flat(finite, metric):
        text = f"every bar is 0 (within {FLAT[metric]:g} {unit})"
    elif max(abs(v) for v in finite) < seen:
        text = f"every bar is below {seen:.2g} {unit}, too small to see here"
    else:
        return False
    if finite and reason:
        text += ":" + reason
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7,
        color="0.25", gid=FLAT_NOTE, bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9},
        in_layout=False, clip_on=False,
    )  # fmt: skip
    return True


def column_label(column: str) -> str:
    """A column of the results as an axis or panel label (``group`` is a layer or layer set)."""
    return NAMES.get(column, column.replace("_", " "))


def pick(df: pd.DataFrame, column: str, value: object, what: str) -> pd.DataFrame:
    """Rows with ``column == value`` (the first value present when ``value`` is None)."""
    present = list(dict.fromkeys(df[column]))
    if not present:
        raise LwlcError(f"no {what} rows to plot: the results are empty")
    if value is None:
        value = present[0]
    if value not in present:
        raise LwlcError(f"no rows for {what} {value!r}; available: {', '.join(map(str, present))}")
    return df[df[column] == value]


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last evaluation when the rows span several (training-time results)."""
    return df[df["step"] == df["step"].max()] if "step" in df and len(df) else df


def plans_of(df: pd.DataFrame, with_full: bool) -> list[str]:
    """The plans present, in the order of the rows (the order they were requested in)."""
    return [p for p in dict.fromkeys(df["plan"]) if with_full or full_of(p) != p]


def full_of(plan: str) -> str:
    """The full-model plan a layer-wise plan compares with: ``full``, ``aligned:full`` for
    ``aligned:single`` (a prefix before ``:`` names a variant of the pair)."""
    return plan[: plan.rfind(":") + 1] + "full"


def legend_width(labels: Sequence[str], columns: int = 1) -> float:
    """Inches to reserve right of the panels for a legend of ``labels`` in ``columns``."""
    return columns * (0.55 + _CHAR * max((len(str(label)) for label in labels), default=0))


def panel_grid(
    count: int,
    width: float,
    height: float,
    stack: int = 1,
    margin: float = 0.0,
    share_y: bool = True,
    dpi: int = DPI,
    min_width: float = 5.0,
) -> tuple[Figure, list[list[Axes]]]:
    """A figure of ``count`` panels of ``stack`` axes each (one above the other), ``width`` x
    ``height`` inches per axes, wrapped into rows of at most ``MAX_ROW_PX`` at ``dpi`` with
    ``margin`` inches beside them (for a legend or colour bar). Returns each panel's axes, top to
    bottom; with ``share_y`` the axes at one height of the stack share their y axis, labelled
    in the first column only. The figure is at least ``min_width`` inches wide, for its title.
    """
    room = MAX_ROW_PX / dpi - margin
    width = min(width, room)
    cols = max(1, min(count, int(room // width)))
    lines = -(-count // cols)
    size = (max(min_width, cols * width + margin), lines * stack * height)
    fig = Figure(figsize=size, layout="constrained")
    grid = fig.subplots(lines * stack, cols, squeeze=False)
    panels = [[grid[(i // cols) * stack + k][i % cols] for k in range(stack)] for i in range(count)]
    for i in range(count, lines * cols):  # the empty places of the last row
        for k in range(stack):
            grid[(i // cols) * stack + k][i % cols].remove()
    if share_y:
        for i, panel in enumerate(panels[1:], start=1):
            for k, ax in enumerate(panel):
                ax.sharey(panels[0][k])
                if i % cols:
                    ax.tick_params(labelleft=False)
    return fig, panels


def legend_outside(
    fig: Figure, handles: Sequence[Artist], labels: Sequence[str], title: str | None = None
) -> None:
    """One legend for the whole figure, right of the panels (constrained layout makes room)."""
    fig.legend(
        handles,
        labels,
        loc="outside right center",
        title=title,
        fontsize="small",
        title_fontsize="small",
        frameon=False,
    )


def legend_from(fig: Figure, ax: Axes, title: str | None = None) -> None:
    """Move the legend seaborn drew in ``ax`` out of the data, beside the figure's panels."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    legend_outside(fig, handles, labels, title)


def layer_palette(groups: Sequence[str]) -> dict[str, Any]:
    """One distinct colour per group across every panel of a figure (the colour-blind palette up
    to its 10 colours, evenly spaced hues beyond, never a repeat); the full model dark grey."""
    named = [g for g in groups if g != "all"]
    count = max(1, len(named))
    if count <= 10:
        colours = sns.color_palette("colorblind", count)
    else:  # hues spread round the circle, neighbouring layers about 140 degrees apart
        hues = sns.color_palette("husl", count)
        step = next(k for k in range(round(0.38 * count), count) if math.gcd(k, count) == 1)
        colours = [hues[(i * step) % count] for i in range(count)]
    return {g: colours[i] for i, g in enumerate(named)} | {"all": "0.15"}


def barrier_values(df: pd.DataFrame, metric: str) -> pd.Series:
    """The ``metric``'s barrier column, in the unit of the CSV (nats; a fraction for error)."""
    return df[f"{metric}_barrier"]


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = DPI) -> Path:
    """Write ``fig`` as an image atomically (readers never see half a file); returns the path."""
    path = Path(path)
    image_format = path.suffix.lstrip(".").lower() or "png"
    with atomic_file(path, "wb") as f:
        if image_format == "png":
            _save_png(fig, f, dpi)
        else:
            fig.savefig(f, dpi=dpi, format=image_format)
    return path


def _save_png(fig: Figure, file: IO[bytes], dpi: int) -> None:
    """``fig.savefig(file, format="png")`` in one drawing pass instead of savefig's two.

    With a layout engine savefig draws the figure once to lay it out and once more to render it;
    drawing on an Agg canvas lays out and renders in the same pass, pixel for pixel the same image.
    """
    canvas, figure_dpi = fig.canvas, fig.dpi
    agg = FigureCanvasAgg(fig)
    fig.dpi = dpi
    try:
        agg.draw()
        # zlib level 3 instead of PIL's 6: files 6% larger, encoded in half the time.
        pil = {"compress_level": 3}
        imsave(file, agg.buffer_rgba(), format="png", origin="upper", dpi=dpi, pil_kwargs=pil)
    finally:
        fig.dpi = figure_dpi
        fig.set_canvas(canvas)
