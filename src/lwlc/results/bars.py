"""Line and bar figures: interpolation curves, per-layer barriers, per-layer weight distances.

Each function takes tidy rows (dicts as written by ``lwlc.core.sweep``, or a DataFrame of them)
and returns a matplotlib Figure in lwlc's look (:mod:`lwlc.results.style`).
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lwlc.core.barriers import METRICS
from lwlc.core.errors import LwlcError
from lwlc.results.references import default_reference
from lwlc.results.style import (
    FULL_LABEL,
    LAYER_AXIS,
    REST,
    Rows,
    barrier_label,
    barrier_values,
    frame,
    full_of,
    latest,
    layer_palette,
    legend_outside,
    legend_width,
    look,
    note_flat,
    panel_grid,
    pick,
    plans_of,
)
from lwlc.results.words import title, unbroken


def interpolation_curves(
    curves: Rows, split: str | None = None, loss_unit: str = "nats", pairing: str | None = None
) -> Figure:
    """Loss and error along every path: one panel per plan (loss above error), one colour per
    layer across panels, dashed: rest from B. Loss and error axes are shared across panels.

    Curves without accuracy (e.g. a regression loss, ``loss_unit`` naming it) show loss only.
    """
    df = latest(pick(frame(curves), "split", split, "split"))
    plans = plans_of(df, with_full=True)
    metrics = [m for m in METRICS if m in df and df[m].notna().any()]
    groups = list(dict.fromkeys(df["group"]))
    rests = list(dict.fromkeys(df["rest_from"]))
    palette = layer_palette(groups)
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
            title("interpolation curves", str(df["split"].iloc[0]), None, pairing), wrap=True
        )
    return fig


def layer_barriers(
    barriers: Rows,
    reference: str | None = None,
    split: str | None = None,
    pairing: str | None = None,
) -> Figure:
    """Per-layer barriers (bars) of each layer-wise plan, the full model's as a dashed line, at
    ``reference`` (default: ``midpoint``, against the whole A and B, if measured).

    Loss and error bars are each on one y axis across plans, so the plans compare at a glance.
    A panel whose bars are all about 0 says so, and why for the ``path`` reference.
    """
    df = pick(frame(barriers), "split", split, "split")
    reference = reference or default_reference(df["reference"])
    df = latest(pick(df, "reference", reference, "reference"))
    plans = plans_of(df, with_full=False) or plans_of(df, with_full=True)
    has_full = bool((df["plan"] == "full").any())
    rests = list(dict.fromkeys(df["rest_from"]))
    palette = dict(zip(rests, sns.color_palette("colorblind", len(rests)), strict=True))
    entries = [REST.get(r, f"rest from {r}") for r in rests] + ([FULL_LABEL] if has_full else [])
    most = max(df[df["plan"] == p]["group"].nunique() for p in plans)
    with look():
        fig, panels = panel_grid(
            len(plans), max(2.8, 0.28 * most + 1.2), 2.3, len(METRICS), legend_width(entries)
        )
        drawn: list[tuple[Axes, pd.Series, str]] = []
        for panel, plan in zip(panels, plans, strict=True):
            sub, full = df[df["plan"] == plan], df[df["plan"] == full_of(plan)]
            for ax, metric in zip(panel, METRICS, strict=True):
                sns.barplot(
                    x=sub["group"],
                    y=barrier_values(sub, metric),
                    hue=sub["rest_from"],
                    palette=palette,
                    hue_order=rests,
                    ax=ax,
                    legend=False,
                    order=list(dict.fromkeys(sub["group"])),
                )
                if len(full):
                    value = float(barrier_values(full, metric).iloc[0])
                    ax.axhline(value, color="0.2", ls="--", lw=1, label=FULL_LABEL)
                ax.axhline(0.0, color="0.5", lw=0.6)
                drawn.append((ax, barrier_values(sub, metric), metric))
                first = ax.get_subplotspec().is_first_col()
                ax.set_ylabel(barrier_label(metric) if first else "")
                ax.set_xlabel(LAYER_AXIS.get(plan, "") if ax is panel[-1] else "")
                ax.tick_params(axis="x", labelrotation=60, labelsize="x-small")
            panel[0].set_title(plan)
        for ax, values, metric in drawn:  # the y axes are shared: their spans are final now
            note_flat(ax, values, metric, reference)
        handles: list[Artist] = [Patch(color=palette[r]) for r in rests]
        if has_full:
            handles.append(Line2D([], [], color="0.2", ls="--", lw=1))
        legend_outside(fig, handles, entries)
        fig.suptitle(
            title("layer-wise barriers", str(df["split"].iloc[0]), reference, pairing), wrap=True
        )
    return fig


BETWEEN = {"a-b": "A vs B", "a-init": "A vs its init", "b-init": "B vs its init"}
WEIGHT_MEASURES = {"l2_distance": "L2 distance", "cosine_similarity": "cosine similarity"}


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
        heading = "weight distances and cosines per layer"
        fig.suptitle(unbroken(heading + (f"\npair: {pairing}" if pairing else "")), wrap=True)
    return fig
