"""Which figures a results folder gets, drawn from its rows and saved atomically under fixed names.

``lwlc analyze``, ``lwlc plot``, the barrier Callback and ``lwlc.measure(...).plot()`` all draw
through here, so one result gets the same figures whoever draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lwlc.core.barriers import METRICS
from lwlc.core.measurement import ALIGNED
from lwlc.results.bars import (
    WEIGHT_MEASURES,
    interpolation_curves,
    layer_barriers,
    layer_distances,
)
from lwlc.results.heatmaps import barrier_heatmap, barrier_matrices
from lwlc.results.references import default_reference, shown_order
from lwlc.results.style import Rows, frame, pairing_text, plans_of, save_figure

# The pairwise matrices' axes: the model whose other layers are kept, the one interpolated toward.
ROW, COLUMN = "rest from", "interpolated toward"


def _splits(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["split"])) if "split" in df else []


def save_analysis_figures(
    out_dir: Path,
    curves: Rows,
    barriers: Rows,
    reference: str | None = None,
    pairing: str | None = None,
    beside: bool = True,
) -> list[Path]:
    """``curves_<split>.png`` and ``barriers_<split>.png`` for each split of an analysis, the bars
    at ``reference`` (default: ``midpoint``, against the whole A and B, when measured) and, with
    ``beside``, ``barriers_<split>_<ref>.png`` at each other reference measured."""
    written: list[Path] = []
    curve_df, barrier_df = frame(curves), frame(barriers)
    for split in _splits(curve_df):
        fig = interpolation_curves(curve_df, split, pairing=pairing)
        written.append(save_figure(fig, Path(out_dir) / f"curves_{split}.png"))
    for split in _splits(barrier_df):
        present = shown_order(barrier_df[barrier_df["split"] == split]["reference"])
        main = reference or default_reference(present)
        fig = layer_barriers(barrier_df, main, split, pairing)
        written.append(save_figure(fig, Path(out_dir) / f"barriers_{split}.png"))
        # an earlier drawing with another main reference left this one beside: it is the main now
        (Path(out_dir) / f"barriers_{split}_{main}.png").unlink(missing_ok=True)
        for other in [r for r in present if r != main and beside]:
            fig = layer_barriers(barrier_df, other, split, pairing)
            written.append(save_figure(fig, Path(out_dir) / f"barriers_{split}_{other}.png"))
    return written


def save_heatmaps(
    out_dir: Path,
    barriers: Rows,
    reference: str = "midpoint",
    metrics: Sequence[str] = tuple(METRICS),
    pairing: str | None = None,
) -> list[Path]:
    """``heatmap_<split>_<plan>[_rest_b]_<metric>.png`` per split, layer-wise plan and rest
    model (A; B as ``_rest_b``), for loss and error: the authors draw both rests."""
    written: list[Path] = []
    df = frame(barriers)
    layered = df[df["plan"] != "full"]
    rests = list(dict.fromkeys(layered["rest_from"])) if len(layered) else ["a"]
    for split in _splits(df):
        for plan in plans_of(df, with_full=False) or ["full"]:
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
    """The analysis figures of the last evaluation at ``reference`` (the one the heatmaps show)
    plus the heatmaps over training."""
    figures = save_analysis_figures(out_dir, curves, barriers, reference, pairing, beside=False)
    return figures + save_heatmaps(out_dir, barriers, reference, pairing=pairing)


def heatmap_name(split: str, plan: str, metric: str, rest_from: str = "a") -> str:
    """File name of a training-time heatmap (``_rest_b`` when the rest is B's)."""
    rest = "_rest_b" if rest_from == "b" else ""
    return f"heatmap_{split}_{plan}{rest}_{metric}.png"


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


def draw_figures(
    out: Path,
    curves: Rows,
    barriers: Rows,
    summary: Mapping[str, Any],
    reference: str | None = None,
    measures: Rows = (),
) -> list[Path]:
    """Draw an analysis's figures into ``out`` (``lwlc analyze``'s and ``lwlc plot``'s): curves
    and bars per split (``reference`` first, default ``midpoint``, the others beside), and with
    ``--align`` the before/after matrices at every reference; their titles say how the pair was
    made (from ``summary``). Returns the files written."""
    pairing = pairing_text(summary)
    written = save_analysis_figures(out, curves, barriers, reference, pairing)
    written += save_distances(out, measures, pairing)
    comparison = alignment_rows(barriers)
    for split, ref in dict.fromkeys((r["split"], r["reference"]) for r in comparison):
        fig = barrier_matrices(
            comparison, "group", "alignment", "rest_from", reference=ref, split=split,
            pairing=pairing,
        )  # fmt: skip
        written.append(save_figure(fig, out / f"alignment_{split}_{ref}.png"))
    return written


def alignment_rows(barriers: Rows) -> list[dict[str, Any]]:
    """Full and single-layer barriers with an ``alignment`` column (before/after), if aligned.

    The full model's row is repeated for each rest model, to head both panels of the figure.
    """
    if not any(str(r["plan"]).startswith(ALIGNED) for r in barriers):
        return []
    rests = list(dict.fromkeys(r["rest_from"] for r in barriers))
    rows = []
    for r in barriers:
        plan = str(r["plan"]).removeprefix(ALIGNED)
        after = "after" if str(r["plan"]).startswith(ALIGNED) else "before"
        if plan == "full":
            full = {**r, "group": "full model", "alignment": after}
            rows += [{**full, "rest_from": x} for x in rests]
        elif plan == "single":
            rows.append({**r, "alignment": after})
    return rows


def pairwise_rows(rows: Rows, aligned: bool) -> list[dict[str, Any]]:
    """Barrier rows as matrix cells: ``ROW`` is the rest model, ``COLUMN`` the other one."""
    cells = []
    for r in rows:
        plan = str(r["plan"])
        kind = plan.removeprefix(ALIGNED)
        if plan.startswith(ALIGNED) != aligned or kind not in ("full", "single"):
            continue
        group = "full model" if kind == "full" else r["group"]
        ends = [(r["model_a"], r["model_b"]), (r["model_b"], r["model_a"])]
        if kind == "full":
            chosen = ends
        else:
            chosen = ends[:1] if r["rest_from"] == "a" else ends[1:]
        cells += [{**r, "group": group, ROW: m, COLUMN: t} for m, t in chosen]
    return cells


def pairwise_figures(out: Path, rows: Rows) -> list[Path]:
    """``pairwise[_aligned]_<split>_<reference>.png``: per layer, model x model loss barriers
    of several checkpoints (``lwlc analyze --ckpt m1 m2 ...``). Returns the files written."""
    models = list(dict.fromkeys(m for r in rows for m in (r["model_a"], r["model_b"])))
    written = []
    for aligned in (False, True):
        cells = pairwise_rows(rows, aligned)
        pairing = f"every pair of {', '.join(map(str, models))}" + (
            ", B aligned to A" if aligned else ""
        )
        for split, ref in dict.fromkeys((r["split"], r["reference"]) for r in cells):
            fig = barrier_matrices(
                cells, ROW, COLUMN, "group", reference=ref, split=split, pairing=pairing
            )
            name = f"pairwise{'_aligned' if aligned else ''}_{split}_{ref}.png"
            written.append(save_figure(fig, out / name))
    return written
