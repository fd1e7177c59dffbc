"""Barrier heatmaps: layers x evaluations over training, and matrices (layer x alignment, model x
model), each cell coloured on a scale centred at 0 and labelled with its value when it fits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lwlc.core.barriers import METRICS
from lwlc.core.errors import LwlcError
from lwlc.results.references import FLAT_REASON
from lwlc.results.style import (
    DIVERGING,
    DPI,
    FULL_LABEL,
    LAYER_AXIS,
    MAX_ROW_PX,
    REST,
    SAME_MODEL,
    Rows,
    barrier_label,
    barrier_values,
    column_label,
    frame,
    is_flat,
    look,
    panel_grid,
    pick,
)
from lwlc.results.words import heatmap_what, title

_MAX_ANNOTATED_CELLS = 120
_MIN_ANNOTATED_CELL = 0.3  # inches: narrower cells are drawn without their values
CELL_FONT = 7.5  # points: a cell's value, legible at the saved size (12 pixels at 120 dpi)


def heatmap_table(
    barriers: Rows,
    plan: str = "single",
    metric: str = "loss",
    reference: str = "midpoint",
    split: str | None = None,
    rest_from: str | None = None,
) -> pd.DataFrame:
    """Barriers as a table: full model first, then the plan's groups (rows) x evaluations (columns).

    Columns are epochs, or steps when one epoch holds several evaluations.
    """
    if metric not in METRICS:
        raise LwlcError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    df = pick(pick(frame(barriers), "split", split, "split"), "reference", reference, "reference")
    if "step" not in df:
        raise LwlcError(
            "these barriers come from one evaluation (no epoch/step columns): a heatmap needs "
            "results of lwlc's barrier Callback"
        )
    layered = (
        pick(df[df["plan"] != "full"], "plan", plan, "plan") if plan != "full" else df.iloc[0:0]
    )
    layered = pick(layered, "rest_from", rest_from, "rest_from") if len(layered) else layered
    full = df[df["plan"] == "full"].assign(group=FULL_LABEL)
    cells = pd.concat([full, layered])
    x = "epoch" if cells.groupby("epoch")["step"].nunique().max() <= 1 else "step"
    cells = cells.assign(value=barrier_values(cells, metric))
    table = cells.pivot_table(index="group", columns=x, values="value", aggfunc="last", sort=False)
    order = list(dict.fromkeys(cells["group"]))
    return table.reindex(index=order, columns=sorted(table.columns))


def cell_edges(positions: Sequence[float]) -> np.ndarray:
    """Edges of cells centred on sorted ``positions``: halfway between neighbours, the outer
    ones as far out as the nearest inner one (1 wide for a single cell)."""
    x = np.asarray(positions, dtype=float)
    if len(x) == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    middle = (x[1:] + x[:-1]) / 2
    return np.concatenate([[x[0] - (middle[0] - x[0])], middle, [x[-1] + (x[-1] - middle[-1])]])


def _cells(
    ax: Axes,
    table: pd.DataFrame,
    scale: tuple[Colormap, Normalize],
    x_edges: np.ndarray,
    annotate: Sequence[bool],
    metric: str,
    edges: bool = True,
) -> Any:
    """Draw ``table`` as coloured cells (rows top to bottom) between ``x_edges``, outlined in
    white unless ``edges`` is false; NaN cells are masked (left blank); the cells of each column
    whose ``annotate`` is true are labelled with their values. Returns the QuadMesh, for a colour
    bar."""
    cmap, norm = scale
    values = np.ma.masked_invalid(table.to_numpy(dtype=float))
    y_edges = np.arange(len(table.index) + 1)
    outline = 0.4 if edges else 0.0
    mesh = ax.pcolormesh(
        x_edges, y_edges, values, cmap=cmap, norm=norm, edgecolors="white", linewidth=outline
    )
    if not edges:  # the rows still apart
        ax.hlines(y_edges[1:-1], x_edges[0], x_edges[-1], colors="white", linewidth=0.8)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[-1], 0)
    ax.set_yticks(y_edges[:-1] + 0.5, [str(i) for i in table.index])
    ax.tick_params(axis="y", labelrotation=0, length=0)
    ax.grid(False)
    if any(annotate):
        centres = (x_edges[1:] + x_edges[:-1]) / 2
        fmt = f"{{:.{_decimals(max(abs(norm.vmin), abs(norm.vmax)), metric)}f}}"
        for i in range(values.shape[0]):
            for j in (j for j in range(values.shape[1]) if annotate[j]):
                if values.mask[i, j] if np.ndim(values.mask) else False:
                    continue
                colour = mesh.cmap(norm(float(values[i, j])))
                luminance = 0.2126 * colour[0] + 0.7152 * colour[1] + 0.0722 * colour[2]
                ax.text(
                    centres[j],
                    i + 0.5,
                    _cell_text(float(values[i, j]), fmt),
                    ha="center",
                    va="center",
                    fontsize=CELL_FONT,
                    color="black" if luminance > 0.408 else "white",
                    in_layout=False,
                )
    return mesh


def _cell_text(value: float, fmt: str) -> str:
    """``value`` in ``fmt``, a value that rounds to zero printed as 0 (never "-0.00")."""
    text = fmt.format(value)
    return fmt.format(0.0) if float(text) == 0.0 else text


def _decimals(limit: float, metric: str) -> int:
    """Decimals that show values up to ``limit`` with two significant digits (loss at least
    2 decimals, error as a fraction at least 3, at most 4)."""
    least = 2 if metric == "loss" else 3
    return min(4, max(least, 1 - math.floor(math.log10(limit)) if limit > 0 else least))


def colour_scale(values: pd.Series | np.ndarray) -> tuple[Colormap, Normalize]:
    """The colours of barrier cells: 0 white, positive red, negative blue, equally strong for
    equal sizes (a barrier's sign matters), on a colour bar that spans the data and 0 only
    (0 to 3 for barriers that are all >= 0, never -3 to 3)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(0.0, float(finite.max())) if finite.size else 0.0
    limit = max(-low, high)
    if limit == 0:
        low, high, limit = 0.0, 1.0, 1.0
    full = colormaps[DIVERGING]
    part = full(np.linspace(0.5 + low / (2 * limit), 0.5 + high / (2 * limit), 256))
    return ListedColormap(part, name=f"{DIVERGING}_part"), Normalize(low, high)


def barrier_heatmap(
    barriers: Rows,
    plan: str = "single",
    metric: str = "loss",
    reference: str = "midpoint",
    split: str | None = None,
    rest_from: str | None = None,
    pairing: str | None = None,
) -> Figure:
    """The paper's training-time figure: barriers of the full model and each layer over epochs.

    Each evaluation's cell is centred on its epoch (or step), so an uneven schedule (epochs 0-9,
    then every 20) is drawn to scale: cells reach halfway to their neighbours. Laid out by fixed
    margins computed from the label lengths, not by a layout engine: the barrier Callback draws
    it at the end of every fit, where constrained layout doubled the cost of the drawing.
    """
    table = heatmap_table(barriers, plan, metric, reference, split, rest_from)
    positions = [float(c) for c in table.columns]
    edges = cell_edges(positions)
    chars = max(len(str(i)) for i in table.index)
    cells_width = min(MAX_ROW_PX / DPI - 2.4 - 0.07 * chars, max(3.0, 0.45 * len(positions)))
    widths = np.diff(edges) / (edges[-1] - edges[0]) * cells_width  # inches
    narrowest = float(widths.min())
    # Each column wide enough for its numbers is labelled (epochs 0-9 of an uneven schedule are
    # narrow, the later ones wide); none when the figure holds too many cells to read.
    annotate = list(widths >= _MIN_ANNOTATED_CELL) if table.size <= _MAX_ANNOTATED_CELLS else []
    df = frame(barriers)
    what = heatmap_what(metric, plan, _rest_of(df, plan, rest_from))
    heading = title(
        what, str(pick(df, "split", split, "split")["split"].iloc[0]), reference, pairing
    )
    with look():
        fig, ax, cax = _heatmap_frame(cells_width, chars, len(table.index), heading)
        outlined = narrowest >= 0.1  # thinner cells would be all outline
        mesh = _cells(ax, table, colour_scale(table.to_numpy()), edges, annotate, metric, outlined)
        fig.colorbar(mesh, cax=cax, label=barrier_label(metric))
        _fit_colour_bar(fig, ax, cax)
        named = _named_ticks(positions, edges, cells_width / (edges[-1] - edges[0]))
        ax.set_xticks(named, [f"{p:g}" for p in named])
        if len(named) < len(positions):  # the evaluations without a name: minor ticks
            ax.set_xticks(positions, minor=True)
            ax.tick_params(axis="x", which="minor", bottom=True, length=3, width=0.6)
            ax.set_xlim(edges[0], edges[-1])
        ax.set_xlabel(str(table.columns.name))
        ax.set_ylabel(LAYER_AXIS.get(plan, "") if plan != "full" else "")
    return fig


def _named_ticks(positions: Sequence[float], edges: np.ndarray, scale: float) -> list[float]:
    """The evaluations a heatmap's x axis names (``scale``: inches per epoch or step), so that a
    column is read by its own epoch, never between the ticks of a round-number axis: the last,
    the first and each wide cell (later evaluations of an uneven schedule), then the multiples
    of the smallest of 1, 2, 5, 10, 20, ... whose labels keep apart; each only where it keeps
    clear of those already named by the room of the longest label."""
    room = _TICK_CHAR * max(len(f"{p:g}") for p in positions) + _TICK_GAP  # between centres
    widths = np.diff(edges)
    named: list[float] = []

    def name(p: float) -> None:
        if all(abs(p - q) * scale >= room for q in named):
            named.append(p)

    name(positions[-1])
    name(positions[0])
    for i in sorted(range(len(positions)), key=lambda i: -widths[i]):
        if widths[i] > 1.5 * widths.min():
            name(positions[i])
    for step in (m * 10**k for k in range(15) for m in (1, 2, 5)):
        multiples = [p for p in positions if p % step == 0]
        if len(multiples) < 2 or min(np.diff(multiples)) * scale >= room:
            break
    for p in multiples:
        name(p)
    return sorted(named)


_TICK_CHAR, _TICK_GAP = 0.08, 0.1  # inches: a digit of a tick label (8.8 pt), the gap between


def _rest_of(df: pd.DataFrame, plan: str, rest_from: str | None) -> str | None:
    """The rest model a layer-wise heatmap shows (the first present when not given)."""
    if plan == "full":
        return None
    return str(pick(df, "rest_from", rest_from, "rest_from")["rest_from"].iloc[0])


def _heatmap_frame(
    cells_width: float, chars: int, rows: int, heading: str
) -> tuple[Figure, Axes, Axes]:
    """A heatmap's figure, cells axes and colour bar axes at fixed margins (inches): the row
    labels' width at the left, the colour bar at the right (its tick labels' room is set by
    :func:`_fit_colour_bar`), the title's lines (wrapped at the figure's width) on top, tick
    labels and axis label below."""
    left = 0.55 + 0.065 * chars
    width = left + cells_width + _RIGHT
    line_chars = max(20, int((width - 0.2) / 0.068))  # characters of the title's font per line
    lines = sum(-(-len(line) // line_chars) for line in heading.splitlines())
    top = 0.12 + 0.19 * lines
    height = max(2.2, 0.32 * rows + 0.9) + top - 0.1
    fig = Figure(figsize=(width, height))
    ax, cax = fig.add_axes((0, 0, 1, 1)), fig.add_axes((0, 0, 1, 1))
    _place(fig, ax, cax, (left, cells_width, _RIGHT), (_BOTTOM, top))
    fig.suptitle(heading, y=1 - 0.06 / height, va="top", wrap=True)
    return fig, ax, cax


_RIGHT, _BOTTOM, _BAR = 1.05, 0.5, 0.14  # inches: right of the cells, below them, bar width


def _place(
    fig: Figure, ax: Axes, cax: Axes, across: tuple[float, float, float], up: tuple[float, float]
) -> None:
    """Size ``fig`` to ``across`` (left margin, cells, right margin) by the cells' height plus
    ``up`` (bottom, top margins) and put the cells and the colour bar (0.15 in right of them)."""
    (left, cells, right), (bottom, top) = across, up
    width, height = left + cells + right, fig.get_figheight()
    fig.set_size_inches(width, height)
    tall = (height - top - bottom) / height
    ax.set_position((left / width, bottom / height, cells / width, tall))
    cax.set_position(((left + cells + 0.15) / width, bottom / height, _BAR / width, tall))


def _fit_colour_bar(fig: Figure, ax: Axes, cax: Axes) -> None:
    """Widen the right margin when the colour bar's tick labels are long (0.00040: tiny
    barriers), so that they and the bar's label stay inside the figure."""
    axis = cax.yaxis
    labels = axis.get_major_formatter().format_ticks(list(axis.get_majorticklocs()))
    labels.append(axis.get_major_formatter().get_offset())
    right = max(_RIGHT, 0.15 + _BAR + 0.55 + 0.068 * max(len(t) for t in labels))
    if right > _RIGHT:
        width, height = fig.get_figwidth(), fig.get_figheight()
        box = ax.get_position()
        left, cells = box.x0 * width, box.width * width
        top = height * (1 - box.y1)
        _place(fig, ax, cax, (left, cells, right), (_BOTTOM, top))


def barrier_matrices(
    barriers: Rows,
    row: str,
    col: str,
    facet: str | None = None,
    metric: str = "loss",
    reference: str = "path",
    split: str | None = None,
    pairing: str | None = None,
) -> Figure:
    """Barriers as ``row`` x ``col`` heatmaps, one per ``facet`` value, on one colour scale
    (one colour bar). In a square matrix (model x model) the diagonal pairs a model with
    itself: it has no barrier and is drawn hatched, labelled ``same model``.

    E.g. layer x (before, after alignment), or model x model with one matrix per layer.
    """
    if metric not in METRICS:
        raise LwlcError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    df = pick(pick(frame(barriers), "split", split, "split"), "reference", reference, "reference")
    df = df.assign(value=barrier_values(df, metric))
    panels = list(dict.fromkeys(df[facet])) if facet else [None]
    index, columns = list(dict.fromkeys(df[row])), list(dict.fromkeys(df[col]))
    square = set(columns) <= set(index)
    if square:  # a square matrix (model x model) keeps one order
        columns = [v for v in index if v in set(columns)]
    scale = colour_scale(df["value"])
    annotate = len(index) * len(columns) <= _MAX_ANNOTATED_CELLS
    with look():
        fig, grid = panel_grid(
            len(panels),
            max(2.0, 0.55 * len(columns) + 1.2),
            max(2.4, 0.45 * len(index) + 1.3),
            margin=0.9,
            share_y=False,
        )
        mesh = None
        for (ax,), panel in zip(grid, panels, strict=True):
            sub = df if panel is None else df[df[facet] == panel]
            table = sub.pivot_table(index=row, columns=col, values="value", aggfunc="last")
            table = table.reindex(index=index, columns=columns)
            labelled = [annotate] * len(columns)
            mesh = _cells(ax, table, scale, np.arange(len(columns) + 1.0), labelled, metric)
            ax.set_xticks(np.arange(len(columns)) + 0.5, [str(c) for c in columns])
            if square:
                for i, name in enumerate(index):
                    if name in columns and np.isnan(table.iloc[i, columns.index(name)]):
                        _same_model(ax, columns.index(name), i)
            _label_matrix(ax, row, col, facet, panel)
        fig.colorbar(mesh, ax=[axes[0] for axes in grid], label=barrier_label(metric))
        layers = df[df["group"] != FULL_LABEL]["value"] if "group" in df else df["value"][:0]
        if reference in FLAT_REASON and is_flat(layers, metric):
            reason = FLAT_REASON[reference]
            fig.supxlabel(f"every layer's cell is 0:\n{reason}", fontsize=7, color="0.25")
        what = f"{metric} barriers"
        fig.suptitle(title(what, str(df["split"].iloc[0]), reference, pairing), wrap=True)
    return fig


def _label_matrix(ax: Axes, row: str, col: str, facet: str | None, panel: object) -> None:
    """Axis labels of one matrix (the row label in the first column only) and its title."""
    first = ax.get_subplotspec().is_first_col()
    ax.set_ylabel(column_label(row) if first else "")
    if not first:
        ax.tick_params(axis="y", labelleft=False)
    ax.set_xlabel(column_label(col))
    if facet == "rest_from":
        ax.set_title(REST.get(str(panel), f"rest from {panel}"), fontsize="small")
    elif facet is not None:
        ax.set_title(f"{column_label(facet)}: {panel}", fontsize="small")


def _same_model(ax: Axes, x: int, y: int) -> None:
    """Mark the cell at (x, y) as a model paired with itself (no barrier measured)."""
    ax.add_patch(
        Rectangle((x, y), 1, 1, facecolor="0.94", edgecolor="0.7", hatch="////", lw=0, zorder=0)
    )
    ax.text(
        x + 0.5, y + 0.5, "same\nmodel", ha="center", va="center", fontsize=5.5, color="0.35",
        in_layout=False, gid=SAME_MODEL,
    )  # fmt: skip
