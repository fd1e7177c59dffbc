"""Every lwlc figure, one look: interpolation curves, per-layer barrier bars, barrier heatmaps.

Each function takes tidy rows (dicts as written by ``lwlc.core.sweep``, or a DataFrame of them, one
row per observation) and returns a matplotlib Figure. Figures are built with matplotlib's object
API, never pyplot, so drawing is safe inside a training process and a dropped figure is freed.
They are laid out by matplotlib's constrained layout: nothing is cropped, legends and colour bars
sit outside the data, and panels wrap into rows of at most ``MAX_ROW_PX`` pixels at ``DPI``.
Units: loss in nats (or the unit given), error in percent, error barriers in percentage points.
Titles name the split, the barrier reference and, when given, how the pair was made.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from lwlc.core.errors import LwlcError
from lwlc.formats.io import atomic_file

Rows = Sequence[Mapping[str, object]] | pd.DataFrame

METRICS = ("loss", "error")
FULL_LABEL = "full model"
SAME_MODEL = "same model"
DIVERGING = "vlag"
DPI = 120  # the resolution figures are saved at (save_figure's default)
MAX_ROW_PX = 1600  # the widest a row of panels may be at DPI
LAYER_AXIS = {
    "single": "layer",
    "cumulative_front": "front layers up to",
    "cumulative_back": "back layers from",
    "custom": "layer set",
}
HEATMAP_ROWS = {  # what a heatmap's rows are, in its title (the axis words read badly there)
    **LAYER_AXIS,
    "cumulative_front": "cumulative group from the front",
    "cumulative_back": "cumulative group from the back",
}
REFERENCES = {
    "path": "vs the path's own endpoints",
    "models": "vs the line from A to B",
    "midpoint": "alpha 0.5 vs the mean of A and B",
}
REST = {"a": "rest from A", "b": "rest from B"}
NAMES = {"group": "layer", "rest_from": "rest from"}
_NUMERIC = ("alpha", "loss", "accuracy", "loss_barrier", "error_barrier", "epoch", "step")
_MAX_ANNOTATED_CELLS = 120
_MIN_ANNOTATED_CELL = 0.3  # inches: narrower cells are drawn without their values
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


def pairing_text(summary: Mapping[str, Any]) -> str | None:
    """How the compared networks were made, in a few words, from an lwlc ``summary.json``
    (of ``lwlc analyze`` or of the barrier Callback); None when it records nothing."""
    pairing = summary.get("pairing")
    checkpoints = [c for c in summary.get("checkpoints") or [] if isinstance(c, Mapping)]
    if isinstance(pairing, Mapping) and pairing.get("mode") == "reference":
        return f"the network being trained vs {pairing.get('b')}"
    if not isinstance(pairing, Mapping) and len(checkpoints) == 1:
        pairing = checkpoints[0].get("pairing")  # analyze of a paired checkpoint
    if isinstance(pairing, Mapping) and "init" in pairing:
        return _pair_words(pairing)
    paths = [Path(str(c.get("path"))) for c in checkpoints]
    if len(paths) == 2:
        common = Path(os.path.commonpath(paths)) if paths[0].anchor == paths[1].anchor else None
        if common is not None and common not in paths:
            a, b = (p.relative_to(common) for p in paths)
            return f"A = {a}, B = {b} (in {common})"
        return f"A = {paths[0]}, B = {paths[1]}"
    return pairing if isinstance(pairing, str) else None


def _pair_words(p: Mapping[str, Any]) -> str:
    """``PairedModule.pairing()`` as words: initialisation, then data order."""
    if p.get("init") == "spawn":
        init = f"B spawned from A after {p.get('spawn_steps')} steps"
    elif p.get("init") == "shared":
        init = f"shared initialisation (seed {p.get('init_seed_a')})"
    else:
        init = f"independent initialisations (seeds {p.get('init_seed_a')}, {p.get('init_seed_b')})"
    if p.get("order") == "shared":
        order = f"same data order (seed {p.get('order_seed_a')})"
    else:
        order = f"different data orders (seeds {p.get('order_seed_a')}, {p.get('order_seed_b')})"
    if p.get("data") == "halves":
        order += ", each on its own half of the training data"
    return f"{init}, {order}"


def _title(what: str, split: str, reference: str | None, pairing: str | None) -> str:
    """A figure title naming the split, the barrier reference and how the pair was made,
    one line each."""
    lines = [f"{what}, {split} split"]
    if reference is not None:
        lines.append(f"reference: {reference} ({REFERENCES.get(reference, 'as logged')})")
    return "\n".join(lines + ([f"pair: {pairing}"] if pairing else []))


def _name(column: str) -> str:
    """A column of the results as an axis or panel label (``group`` is a layer or layer set)."""
    return NAMES.get(column, column.replace("_", " "))


def _pick(df: pd.DataFrame, column: str, value: object, what: str) -> pd.DataFrame:
    """Rows with ``column == value`` (the first value present when ``value`` is None)."""
    present = list(dict.fromkeys(df[column]))
    if not present:
        raise LwlcError(f"no {what} rows to plot: the results are empty")
    if value is None:
        value = present[0]
    if value not in present:
        raise LwlcError(f"no rows for {what} {value!r}; available: {', '.join(map(str, present))}")
    return df[df[column] == value]


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last evaluation when the rows span several (training-time results)."""
    return df[df["step"] == df["step"].max()] if "step" in df and len(df) else df


def _plans(df: pd.DataFrame, with_full: bool) -> list[str]:
    """The plans present, in the order of the rows (the order they were requested in)."""
    return [p for p in dict.fromkeys(df["plan"]) if with_full or _full_of(p) != p]


def _full_of(plan: str) -> str:
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


def _palette(groups: Sequence[str]) -> dict[str, Any]:
    """One colour per group across every panel of a figure; the full model dark grey."""
    colours = sns.color_palette("colorblind", max(1, len(groups)))
    named = [g for g in groups if g != "all"]
    palette: dict[str, Any] = {g: colours[i % len(colours)] for i, g in enumerate(named)}
    return palette | {"all": "0.15"}


def interpolation_curves(
    curves: Rows, split: str | None = None, loss_unit: str = "nats", pairing: str | None = None
) -> Figure:
    """Loss and error along every path: one panel per plan (loss above error), one colour per
    layer across panels, dashed: rest from B. Loss and error axes are shared across panels.

    Curves without accuracy (e.g. a regression loss, ``loss_unit`` naming it) show loss only.
    """
    df = _latest(_pick(frame(curves), "split", split, "split"))
    plans = _plans(df, with_full=True)
    metrics = [m for m in METRICS if m in df and df[m].notna().any()]
    groups = list(dict.fromkeys(df["group"]))
    rests = list(dict.fromkeys(df["rest_from"]))
    palette = _palette(groups)
    dashes = {r: "-" if i == 0 else (0, (4, 2)) if i == 1 else ":" for i, r in enumerate(rests)}
    entries = [(FULL_LABEL if g == "all" else g) for g in groups]
    if len(rests) > 1:
        entries += [REST.get(r, f"rest from {r}") for r in rests]
    with look():
        fig, panels = panel_grid(len(plans), 3.0, 2.3, len(metrics), legend_width(entries))
        for panel, plan in zip(panels, plans, strict=True):
            sub = df[df["plan"] == plan]
            for (group, rest), path in sub.groupby(["group", "rest_from"], sort=False):
                path = path.sort_values("alpha")
                for ax, metric in zip(panel, metrics, strict=True):
                    ax.plot(
                        path["alpha"],
                        path[metric],
                        color=palette[group],
                        ls=dashes[rest],
                        marker="o",
                        markersize=2.5,
                        lw=1.2,
                    )
            panel[0].set_title(plan)
            for ax, metric in zip(panel, metrics, strict=True):
                unit = loss_unit if metric == "loss" else "%"
                ax.set_ylabel(f"{metric} ({unit})" if ax.get_subplotspec().is_first_col() else "")
                ax.set_xlabel("alpha (0: A, 1: B)" if ax is panel[-1] else "")
        handles: list[Artist] = [
            Line2D([], [], color=palette[g], marker="o", ms=2.5) for g in groups
        ]
        if len(rests) > 1:
            handles += [Line2D([], [], color="0.4", ls=dashes[r]) for r in rests]
        legend_outside(fig, handles, entries, "layer")
        fig.suptitle(
            _title("interpolation curves", str(df["split"].iloc[0]), None, pairing), wrap=True
        )
    return fig


def layer_barriers(
    barriers: Rows, reference: str = "path", split: str | None = None, pairing: str | None = None
) -> Figure:
    """Per-layer barriers (bars) of each layer-wise plan, the full model's as a dashed line.

    Loss and error bars are each on one y axis across plans, so the plans compare at a glance.
    """
    df = _latest(
        _pick(_pick(frame(barriers), "split", split, "split"), "reference", reference, "reference")
    )
    plans = _plans(df, with_full=False) or _plans(df, with_full=True)
    has_full = bool((df["plan"] == "full").any())
    rests = list(dict.fromkeys(df["rest_from"]))
    palette = dict(zip(rests, sns.color_palette("colorblind", len(rests)), strict=True))
    entries = [REST.get(r, f"rest from {r}") for r in rests] + ([FULL_LABEL] if has_full else [])
    most = max(df[df["plan"] == p]["group"].nunique() for p in plans)
    with look():
        fig, panels = panel_grid(
            len(plans), max(2.8, 0.28 * most + 1.2), 2.3, len(METRICS), legend_width(entries)
        )
        for panel, plan in zip(panels, plans, strict=True):
            sub, full = df[df["plan"] == plan], df[df["plan"] == _full_of(plan)]
            for ax, metric in zip(panel, METRICS, strict=True):
                sns.barplot(
                    x=sub["group"],
                    y=_barrier_values(sub, metric),
                    hue=sub["rest_from"],
                    palette=palette,
                    hue_order=rests,
                    ax=ax,
                    legend=False,
                    order=list(dict.fromkeys(sub["group"])),
                )
                if len(full):
                    value = float(_barrier_values(full, metric).iloc[0])
                    ax.axhline(value, color="0.2", ls="--", lw=1, label=FULL_LABEL)
                ax.axhline(0.0, color="0.5", lw=0.6)
                first = ax.get_subplotspec().is_first_col()
                ax.set_ylabel(_barrier_label(metric) if first else "")
                ax.set_xlabel(LAYER_AXIS.get(plan, "") if ax is panel[-1] else "")
                ax.tick_params(axis="x", labelrotation=60, labelsize="x-small")
            panel[0].set_title(plan)
        handles: list[Artist] = [Patch(color=palette[r]) for r in rests]
        if has_full:
            handles.append(Line2D([], [], color="0.2", ls="--", lw=1))
        legend_outside(fig, handles, entries)
        fig.suptitle(
            _title("layer-wise barriers", str(df["split"].iloc[0]), reference, pairing), wrap=True
        )
    return fig


def _barrier_values(df: pd.DataFrame, metric: str) -> pd.Series:
    values = df[f"{metric}_barrier"]
    return 100.0 * values if metric == "error" else values


def _barrier_label(metric: str) -> str:
    return "loss barrier (nats)" if metric == "loss" else "error barrier (pp)"


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
    df = _pick(_pick(frame(barriers), "split", split, "split"), "reference", reference, "reference")
    if "step" not in df:
        raise LwlcError(
            "these barriers come from one evaluation (no epoch/step columns): a heatmap needs "
            "results of lwlc's barrier Callback"
        )
    layered = (
        _pick(df[df["plan"] != "full"], "plan", plan, "plan") if plan != "full" else df.iloc[0:0]
    )
    layered = _pick(layered, "rest_from", rest_from, "rest_from") if len(layered) else layered
    full = df[df["plan"] == "full"].assign(group=FULL_LABEL)
    cells = pd.concat([full, layered])
    x = "epoch" if cells.groupby("epoch")["step"].nunique().max() <= 1 else "step"
    cells = cells.assign(value=_barrier_values(cells, metric))
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
    norm: Normalize,
    x_edges: np.ndarray,
    annotate: bool,
    metric: str,
    edges: bool = True,
) -> Any:
    """Draw ``table`` as coloured cells (rows top to bottom) between ``x_edges``, outlined in
    white unless ``edges`` is false; NaN cells are masked (left blank). Returns the QuadMesh,
    for a colour bar."""
    values = np.ma.masked_invalid(table.to_numpy(dtype=float))
    y_edges = np.arange(len(table.index) + 1)
    outline = 0.4 if edges else 0.0
    mesh = ax.pcolormesh(
        x_edges, y_edges, values, cmap=DIVERGING, norm=norm, edgecolors="white", linewidth=outline
    )
    if not edges:  # the rows still apart
        ax.hlines(y_edges[1:-1], x_edges[0], x_edges[-1], colors="white", linewidth=0.8)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[-1], 0)
    ax.set_yticks(y_edges[:-1] + 0.5, [str(i) for i in table.index])
    ax.tick_params(axis="y", labelrotation=0, length=0)
    ax.grid(False)
    if annotate:
        centres = (x_edges[1:] + x_edges[:-1]) / 2
        fmt = f"{{:.{_decimals(norm.vmax, metric)}f}}"
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
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
                    fontsize=6,
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
    2 decimals, error in pp at least 1, at most 4)."""
    least = 2 if metric == "loss" else 1
    return min(4, max(least, 1 - math.floor(math.log10(limit)) if limit > 0 else least))


def _norm(values: pd.Series | np.ndarray) -> Normalize:
    """A colour scale symmetric around 0 (a barrier's sign matters), covering ``values``."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return Normalize(-limit, limit)


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
    then every 20) is drawn to scale: cells reach halfway to their neighbours.
    """
    table = heatmap_table(barriers, plan, metric, reference, split, rest_from)
    x_name = str(table.columns.name)
    positions = [float(c) for c in table.columns]
    edges = cell_edges(positions)
    rows = max(len(str(i)) for i in table.index)
    cells_width = min(MAX_ROW_PX / DPI - 2.4 - 0.07 * rows, max(3.0, 0.45 * len(positions)))
    narrowest = float(np.diff(edges).min() / (edges[-1] - edges[0])) * cells_width
    annotate = table.size <= _MAX_ANNOTATED_CELLS and narrowest >= _MIN_ANNOTATED_CELL
    split_name = str(_pick(frame(barriers), "split", split, "split")["split"].iloc[0])
    with look():
        size = (cells_width + 2.4 + 0.07 * rows, max(2.2, 0.32 * len(table.index) + 1.6))
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.add_subplot()
        outlined = narrowest >= 0.1  # thinner cells would be all outline
        mesh = _cells(ax, table, _norm(table.to_numpy()), edges, annotate, metric, outlined)
        fig.colorbar(mesh, ax=ax, label=_barrier_label(metric))
        spacing = float(np.diff(positions).min()) if len(positions) > 1 else 1.0
        if spacing / (edges[-1] - edges[0]) * cells_width >= _MIN_ANNOTATED_CELL:
            ax.set_xticks(positions, [f"{p:g}" for p in positions])
        else:  # too many evaluations to name each: a numeric axis, evaluations as minor ticks
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xticks(positions, minor=True)
            ax.tick_params(axis="x", which="minor", bottom=True, length=3, width=0.6)
            ax.set_xlim(edges[0], edges[-1])
        ax.set_xlabel(x_name)
        ax.set_ylabel(LAYER_AXIS.get(plan, "") if plan != "full" else "")
        what = f"{metric} barrier by {HEATMAP_ROWS.get(plan, plan)} over training"
    if plan != "full":
        rest = str(_pick(frame(barriers), "rest_from", rest_from, "rest_from")["rest_from"].iloc[0])
        what += f", rest from {rest.upper()}"
        fig.suptitle(_title(what, split_name, reference, pairing), wrap=True)
    return fig


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
    df = _pick(_pick(frame(barriers), "split", split, "split"), "reference", reference, "reference")
    df = df.assign(value=_barrier_values(df, metric))
    panels = list(dict.fromkeys(df[facet])) if facet else [None]
    index, columns = list(dict.fromkeys(df[row])), list(dict.fromkeys(df[col]))
    square = set(columns) <= set(index)
    if square:  # a square matrix (model x model) keeps one order
        columns = [v for v in index if v in set(columns)]
    norm = _norm(df["value"])
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
            mesh = _cells(ax, table, norm, np.arange(len(columns) + 1.0), annotate, metric)
            ax.set_xticks(np.arange(len(columns)) + 0.5, [str(c) for c in columns])
            if square:
                for i, name in enumerate(index):
                    if name in columns and np.isnan(table.iloc[i, columns.index(name)]):
                        _same_model(ax, columns.index(name), i)
            first = ax.get_subplotspec().is_first_col()
            ax.set_ylabel(_name(row) if first else "")
            if not first:
                ax.tick_params(axis="y", labelleft=False)
            ax.set_xlabel(_name(col))
            if facet == "rest_from":
                ax.set_title(REST.get(str(panel), f"rest from {panel}"), fontsize="small")
            elif facet is not None:
                ax.set_title(f"{_name(facet)}: {panel}", fontsize="small")
        fig.colorbar(mesh, ax=[axes[0] for axes in grid], label=_barrier_label(metric))
        what = f"{metric} barriers"
        fig.suptitle(_title(what, str(df["split"].iloc[0]), reference, pairing), wrap=True)
    return fig


def _same_model(ax: Axes, x: int, y: int) -> None:
    """Mark the cell at (x, y) as a model paired with itself (no barrier measured)."""
    ax.add_patch(
        Rectangle((x, y), 1, 1, facecolor="0.94", edgecolor="0.7", hatch="////", lw=0, zorder=0)
    )
    ax.text(
        x + 0.5, y + 0.5, "same\nmodel", ha="center", va="center", fontsize=5.5, color="0.35",
        in_layout=False, gid=SAME_MODEL,
    )  # fmt: skip


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


def _splits(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["split"])) if "split" in df else []


def save_analysis_figures(
    out_dir: Path,
    curves: Rows,
    barriers: Rows,
    reference: str = "path",
    pairing: str | None = None,
) -> list[Path]:
    """``curves_<split>.png`` and ``barriers_<split>.png`` for each split of an analysis."""
    written: list[Path] = []
    curve_df, barrier_df = frame(curves), frame(barriers)
    for split in _splits(curve_df):
        fig = interpolation_curves(curve_df, split, pairing=pairing)
        written.append(save_figure(fig, Path(out_dir) / f"curves_{split}.png"))
    for split in _splits(barrier_df):
        fig = layer_barriers(barrier_df, reference, split, pairing)
        written.append(save_figure(fig, Path(out_dir) / f"barriers_{split}.png"))
    return written


def save_heatmaps(
    out_dir: Path,
    barriers: Rows,
    reference: str = "midpoint",
    metrics: Sequence[str] = METRICS,
    pairing: str | None = None,
) -> list[Path]:
    """``heatmap_<split>_<plan>[_rest_b]_<metric>.png`` per split, layer-wise plan and rest
    model (A; B as ``_rest_b``), for loss and error: the authors draw both rests."""
    written: list[Path] = []
    df = frame(barriers)
    layered = df[df["plan"] != "full"]
    rests = list(dict.fromkeys(layered["rest_from"])) if len(layered) else ["a"]
    for split in _splits(df):
        for plan in _plans(df, with_full=False) or ["full"]:
            for rest in rests if plan != "full" else ["a"]:
                for metric in metrics:
                    fig = barrier_heatmap(df, plan, metric, reference, split, rest, pairing)
                    name = heatmap_name(split, plan, metric, rest)
                    written.append(save_figure(fig, Path(out_dir) / name))
    return written


def save_training_figures(
    out_dir: Path,
    curves: Rows,
    barriers: Rows,
    reference: str = "midpoint",
    pairing: str | None = None,
) -> list[Path]:
    """The analysis figures of the last evaluation plus the heatmaps over training."""
    return save_analysis_figures(out_dir, curves, barriers, reference, pairing) + save_heatmaps(
        out_dir, barriers, reference, pairing=pairing
    )


def heatmap_name(split: str, plan: str, metric: str, rest_from: str = "a") -> str:
    """File name of a training-time heatmap (``_rest_b`` when the rest is B's)."""
    rest = "_rest_b" if rest_from == "b" else ""
    return f"heatmap_{split}_{plan}{rest}_{metric}.png"


BETWEEN = {"a-b": "A vs B", "a-init": "A vs its init", "b-init": "B vs its init"}
WEIGHT_MEASURES = {"l2_distance": "L2 distance", "cosine_similarity": "cosine similarity"}


def save_distances(out_dir: Path, measures: Rows, pairing: str | None = None) -> list[Path]:
    """``distances.png`` of the weight measures (of the last evaluation, for a training run's
    rows), or nothing when there are none."""
    rows = [r for r in measures if r["measure"] in WEIGHT_MEASURES]
    if not rows:
        return []
    if "step" in rows[0]:
        last = max(int(r["step"]) for r in rows)
        rows = [r for r in rows if int(r["step"]) == last]
    return [save_figure(layer_distances(rows, pairing), Path(out_dir) / "distances.png")]


def layer_distances(measures: Rows, pairing: str | None = None) -> Figure:
    """Per-layer L2 distance (above) and cosine similarity (below) of the weights, as bars per
    pair of models (``lwlc.core.measures.weight_measures`` rows); the whole model's values are
    dashed lines in the pair's colour, as the full model in ``layer_barriers``.
    """
    df = frame(measures)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df = df[df["measure"].isin(list(WEIGHT_MEASURES))]
    if df.empty:
        raise LwlcError("no l2_distance or cosine_similarity rows to draw")
    kinds = [m for m in WEIGHT_MEASURES if (df["measure"] == m).any()]
    pairs = list(dict.fromkeys(df["between"]))
    palette = dict(zip(pairs, sns.color_palette("colorblind", len(pairs)), strict=True))
    entries = [BETWEEN.get(p, p) for p in pairs] + [FULL_LABEL]
    layers, whole = df[df["group"] != "all"], df[df["group"] == "all"]
    order = list(dict.fromkeys(layers["group"]))
    with look():
        fig, panels = panel_grid(
            1,
            max(2.8, 0.28 * len(order) * len(pairs) / 2 + 1.2),
            2.3,
            len(kinds),
            legend_width(entries),
        )
        for ax, kind in zip(panels[0], kinds, strict=True):
            sub = layers[layers["measure"] == kind]
            sns.barplot(
                x=sub["group"],
                y=sub["value"],
                hue=sub["between"],
                palette=palette,
                hue_order=pairs,
                ax=ax,
                legend=False,
                order=order,
            )
            for _, row in whole[whole["measure"] == kind].iterrows():
                ax.axhline(float(row["value"]), color=palette[row["between"]], ls="--", lw=1)
            ax.axhline(0.0, color="0.5", lw=0.6)
            ax.set_ylabel(WEIGHT_MEASURES[kind])
            ax.set_xlabel("layer" if ax is panels[0][-1] else "")
            ax.tick_params(axis="x", labelrotation=60, labelsize="x-small")
        handles: list[Artist] = [Patch(color=palette[p]) for p in pairs]
        handles.append(Line2D([], [], color="0.2", ls="--", lw=1))
        legend_outside(fig, handles, entries)
        title = "weight distances and cosines per layer"
        fig.suptitle(title + (f"\npair: {pairing}" if pairing else ""), wrap=True)
    return fig
