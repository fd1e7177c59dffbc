"""Every lwlc figure, one look: interpolation curves, per-layer barrier bars, barrier heatmaps.

Each function takes tidy rows (dicts as written by ``lwlc.sweep``, or a DataFrame of them, one
row per observation) and returns a matplotlib Figure. Figures are built with matplotlib's object
API, never pyplot, so drawing is safe inside a training process and a dropped figure is freed.
Loss barriers are in nats, error barriers in percentage points.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.layout_engine import LayoutEngine

from lwlc.errors import LwlcError
from lwlc.io import atomic_file

Rows = Sequence[Mapping[str, object]] | pd.DataFrame

METRICS = ("loss", "error")
FULL_LABEL = "full model"
DIVERGING = "vlag"
LAYER_AXIS = {
    "single": "layer",
    "cumulative_front": "front layers up to",
    "cumulative_back": "back layers from",
    "custom": "layer set",
}
_NUMERIC = ("alpha", "loss", "accuracy", "loss_barrier", "error_barrier", "epoch", "step")
_MAX_ANNOTATED_CELLS = 120
_PAD = 3 / 72  # inches between the figure's edge and its contents, as constrained layout's


@contextmanager
def _look() -> Iterator[None]:
    """lwlc's one style (seaborn's whitegrid, paper context, colour-blind palette), scoped."""
    with (
        sns.axes_style("whitegrid"),
        sns.plotting_context("paper"),
        sns.color_palette("colorblind"),
    ):
        yield


def frame(rows: Rows) -> pd.DataFrame:
    """Result rows as a DataFrame with numeric columns as numbers and an ``error`` curve column."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column in _NUMERIC:
        if column in df:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    if "accuracy" in df:
        df["error"] = 1.0 - df["accuracy"]
    return df


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
    return [p for p in dict.fromkeys(df["plan"]) if with_full or p != "full"]


def _axes(rows: int, cols: int, width: float, height: float) -> tuple[Figure, list[list[Axes]]]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [list(r) for r in axes]


def _barrier_values(df: pd.DataFrame, metric: str) -> pd.Series:
    values = df[f"{metric}_barrier"]
    return 100.0 * values if metric == "error" else values


def _barrier_label(metric: str) -> str:
    return "loss barrier (nats)" if metric == "loss" else "error barrier (pp)"


class _HeatmapLayout(LayoutEngine):
    """Lays out a figure of one heatmap and its colorbar, measuring each label once.

    Constrained layout measures every label twice per draw, most of the time a small heatmap
    takes to draw (the Callback draws two at the end of a fit). This places the cells to fill the
    figure less its labels, and the colorbar to their right: as tall as the cells, 1/20 as wide,
    5% of their width away (the defaults of a colorbar under constrained layout).
    """

    _adjust_compatible = False
    _colorbar_gridspec = False

    def execute(self, fig: Figure) -> None:
        if len(fig.axes) != 2:  # something was added to the figure: leave it as drawn
            return
        ax, cax = fig.axes
        renderer = fig._get_renderer()  # as matplotlib's own layout engines get it
        width, height, pad = fig.bbox.width, fig.bbox.height, _PAD * fig.dpi

        def overhang(axes: Axes) -> tuple[float, float, float, float]:
            """How far the labels of ``axes`` reach out of it: left, right, bottom, top (px)."""
            box, inner = axes.get_tightbbox(renderer), axes.bbox
            return inner.x0 - box.x0, box.x1 - inner.x1, inner.y0 - box.y0, box.y1 - inner.y1

        left, _, bottom, top = overhang(ax)
        y0, cells_height = pad + bottom, height - 2 * pad - bottom - top
        bar = cells_height / 20
        if cells_height <= 0:  # labels larger than the figure: leave it as drawn
            return
        # The colorbar's ticks, hence its labels' width, depend on its height: set that first.
        cax.set_position((0, y0 / height, bar / width, cells_height / height))
        right = overhang(cax)[1]
        x0 = pad + left
        cells_width = (width - x0 - pad - right - bar) / 1.05
        if cells_width <= 0:
            return
        ax.set_position((x0 / width, y0 / height, cells_width / width, cells_height / height))
        cax.set_position(
            ((width - pad - right - bar) / width, y0 / height, bar / width, cells_height / height)
        )


def _heatmap(ax: Axes, table: pd.DataFrame, metric: str, annotate: bool, **options: Any) -> None:
    """One barrier heatmap in lwlc's look: diverging around 0, values written in small cells."""
    sns.heatmap(
        table,
        ax=ax,
        cmap=DIVERGING,
        center=0.0,
        annot=annotate,
        fmt=".2f" if metric == "loss" else ".1f",
        annot_kws={"size": 6},
        linewidths=0.4,
        cbar_kws={"label": _barrier_label(metric)},
        **options,
    )
    # The cell values sit inside the axes: leaving them out of the layout gives the same figure
    # and spares the layout engine measuring every one of them.
    for text in ax.texts:
        text.set_in_layout(False)
    ax.tick_params(axis="y", labelrotation=0)


def interpolation_curves(curves: Rows, split: str | None = None, loss_unit: str = "nats") -> Figure:
    """Loss and error along every path: one column per plan, hue = layer, dashes = rest model.

    Curves without accuracy (e.g. a regression loss, ``loss_unit`` naming it) show loss only.
    """
    df = _latest(_pick(frame(curves), "split", split, "split"))
    plans = _plans(df, with_full=True)
    metrics = [m for m in METRICS if m in df and df[m].notna().any()]
    with _look():
        fig, axes = _axes(len(metrics), len(plans), 3.6, 2.6)
        for col, plan in enumerate(plans):
            sub = df[df["plan"] == plan]
            for row, metric in enumerate(metrics):
                ax = axes[row][col]
                sns.lineplot(
                    data=sub,
                    x="alpha",
                    y=metric,
                    hue="group",
                    style="rest_from",
                    marker="o",
                    markersize=3,
                    ax=ax,
                    legend=row == 0 and plan != "full",
                    hue_order=list(dict.fromkeys(sub["group"])),
                )
                ax.set_title(plan if row == 0 else "")
                unit = loss_unit if metric == "loss" else "fraction"
                ax.set_ylabel(f"{metric} ({unit})" if col == 0 else "")
                if ax.get_legend() is not None:
                    ax.legend(
                        fontsize="xx-small",
                        title_fontsize="x-small",
                        ncols=1 + len(set(sub["group"])) // 12,
                    )
        fig.suptitle(f"interpolation curves ({df['split'].iloc[0]})")
    return fig


def layer_barriers(barriers: Rows, reference: str = "path", split: str | None = None) -> Figure:
    """Per-layer barriers (bars) of each layer-wise plan, the full model's as a dashed line."""
    df = _latest(
        _pick(_pick(frame(barriers), "split", split, "split"), "reference", reference, "reference")
    )
    plans = _plans(df, with_full=False) or ["full"]
    full = df[df["plan"] == "full"]
    with _look():
        fig, axes = _axes(
            len(METRICS), len(plans), max(3.0, 0.35 * df["group"].nunique() + 1.5), 2.6
        )
        for col, plan in enumerate(plans):
            sub = df[df["plan"] == plan]
            for row, metric in enumerate(METRICS):
                ax = axes[row][col]
                sns.barplot(
                    x=sub["group"],
                    y=_barrier_values(sub, metric),
                    hue=sub["rest_from"],
                    ax=ax,
                    legend=row == 0,
                    order=list(dict.fromkeys(sub["group"])),
                )
                if len(full):
                    ax.axhline(
                        float(_barrier_values(full, metric).iloc[0]),
                        color="0.2",
                        ls="--",
                        lw=1,
                        label=FULL_LABEL,
                    )
                ax.axhline(0.0, color="0.5", lw=0.6)
                ax.set_title(plan if row == 0 else "")
                ax.set_xlabel(LAYER_AXIS.get(plan, "") if row == len(METRICS) - 1 else "")
                ax.set_ylabel(_barrier_label(metric) if col == 0 else "")
                ax.tick_params(axis="x", labelrotation=60, labelsize="x-small")
                if row == 0:
                    ax.legend(fontsize="xx-small", title="rest from", title_fontsize="x-small")
        fig.suptitle(f"layer-wise barriers ({df['split'].iloc[0]}, reference: {reference})")
    return fig


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


def barrier_heatmap(
    barriers: Rows,
    plan: str = "single",
    metric: str = "loss",
    reference: str = "midpoint",
    split: str | None = None,
    rest_from: str | None = None,
) -> Figure:
    """The paper's training-time figure: barriers of the full model and each layer over epochs."""
    table = heatmap_table(barriers, plan, metric, reference, split, rest_from)
    x_name = table.columns.name
    table.columns = pd.Index([int(c) for c in table.columns], name=x_name)
    annotate = table.size <= _MAX_ANNOTATED_CELLS
    with _look():
        size = (max(4.0, 0.45 * table.shape[1] + 2.5), max(2.0, 0.32 * table.shape[0] + 1.2))
        fig = Figure(figsize=size, layout=_HeatmapLayout())
        ax, cax = fig.add_subplot(), fig.add_axes((0.9, 0.1, 0.02, 0.8))
        _heatmap(ax, table, metric, annotate, cbar_ax=cax)
        ax.set_xlabel(x_name)
        ax.set_ylabel(LAYER_AXIS.get(plan, "") if plan != "full" else "")
        ax.set_title(f"{metric} barrier by {LAYER_AXIS.get(plan, plan)} ({reference} reference)")
    return fig


def barrier_matrices(
    barriers: Rows,
    row: str,
    col: str,
    facet: str | None = None,
    metric: str = "loss",
    reference: str = "path",
    split: str | None = None,
) -> Figure:
    """Barriers as ``row`` x ``col`` heatmaps, one per ``facet`` value, on one colour scale.

    E.g. layer x (before, after alignment), or model x model with one matrix per layer.
    """
    if metric not in METRICS:
        raise LwlcError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    df = _pick(_pick(frame(barriers), "split", split, "split"), "reference", reference, "reference")
    df = df.assign(value=_barrier_values(df, metric))
    panels = list(dict.fromkeys(df[facet])) if facet else [None]
    index, columns = list(dict.fromkeys(df[row])), list(dict.fromkeys(df[col]))
    if set(columns) <= set(index):  # a square matrix (model x model) keeps one order
        columns = [v for v in index if v in set(columns)]
    limit = float(df["value"].abs().max()) or 1.0
    ncols = min(len(panels), 4)
    with _look():
        fig, axes = _axes(
            -(-len(panels) // ncols),
            ncols,
            max(3.0, 0.55 * len(columns) + 2.0),
            max(2.0, 0.3 * len(index) + 1.2),
        )
        flat = [ax for line in axes for ax in line]
        for ax, panel in zip(flat, panels, strict=False):
            sub = df if panel is None else df[df[facet] == panel]
            table = sub.pivot_table(index=row, columns=col, values="value", aggfunc="last")
            _heatmap(
                ax,
                table.reindex(index=index, columns=columns),
                metric,
                len(index) * len(columns) <= _MAX_ANNOTATED_CELLS,
                vmin=-limit,
                vmax=limit,
            )
            ax.set_title("" if panel is None else f"{facet}: {panel}", fontsize="small")
        for ax in flat[len(panels) :]:
            ax.set_visible(False)
        fig.suptitle(f"{metric} barriers ({df['split'].iloc[0]}, reference: {reference})")
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
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
    out_dir: Path, curves: Rows, barriers: Rows, reference: str = "path"
) -> list[Path]:
    """``curves_<split>.png`` and ``barriers_<split>.png`` for each split of an analysis."""
    written: list[Path] = []
    curve_df, barrier_df = frame(curves), frame(barriers)
    for split in _splits(curve_df):
        written.append(
            save_figure(
                interpolation_curves(curve_df, split), Path(out_dir) / f"curves_{split}.png"
            )
        )
    for split in _splits(barrier_df):
        written.append(
            save_figure(
                layer_barriers(barrier_df, reference, split),
                Path(out_dir) / f"barriers_{split}.png",
            )
        )
    return written


def save_heatmaps(
    out_dir: Path, barriers: Rows, reference: str = "midpoint", metrics: Sequence[str] = METRICS
) -> list[Path]:
    """``heatmap_<split>_<plan>_<metric>.png`` per split and layer-wise plan (loss and error)."""
    written: list[Path] = []
    df = frame(barriers)
    for split in _splits(df):
        for plan in _plans(df, with_full=False) or ["full"]:
            for metric in metrics:
                fig = barrier_heatmap(df, plan, metric, reference, split)
                written.append(save_figure(fig, Path(out_dir) / heatmap_name(split, plan, metric)))
    return written


def save_training_figures(
    out_dir: Path, curves: Rows, barriers: Rows, reference: str = "midpoint"
) -> list[Path]:
    """The analysis figures of the last evaluation plus the heatmaps over training."""
    return save_analysis_figures(out_dir, curves, barriers, reference) + save_heatmaps(
        out_dir, barriers, reference
    )


def heatmap_name(split: str, plan: str, metric: str) -> str:
    """File name of a training-time heatmap."""
    return f"heatmap_{split}_{plan}_{metric}.png"
