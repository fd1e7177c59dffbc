"""The barrier Callback's heatmaps for W&B, as W&B's own HTML media: layers x evaluations, each
cell coloured on the PNG heatmaps' scale (0 white, positive red, negative blue, the bar spanning
the data and 0) and labelled with its value, the exact value of ``barriers.csv`` in its tooltip.

W&B has no built-in heatmap chart preset (its presets are line, bar, scatter, histogram, area
and confusion matrix), and a matplotlib PNG of the same table costs more than the sweeps it
shows; an HTML table is string formatting, so W&B shows the heatmaps live, on the Callback's
media schedule, under the PNGs' names (``barrier_heatmap/test_single_rest_b_loss`` is
``heatmap_test_single_rest_b_loss.png``). Plain Python: no pandas or matplotlib import.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from lwlc.results.words import FULL_LABEL, LAYER_AXIS, barrier_label, heatmap_what, title

Rows = Sequence[Mapping[str, Any]]
# seaborn's "vlag" (the PNGs' colour map) at 0, 1/8, ..., 1: blue, white at the middle, red.
VLAG = (
    (0.139, 0.413, 0.741), (0.404, 0.546, 0.745), (0.609, 0.682, 0.794), (0.811, 0.831, 0.877),
    (0.981, 0.962, 0.958), (0.908, 0.785, 0.777), (0.827, 0.592, 0.582), (0.749, 0.405, 0.398),
    (0.661, 0.215, 0.231),
)  # fmt: skip


def grid(
    barriers: Rows, plan: str, metric: str, reference: str, split: str, rest_from: str
) -> tuple[str, list[float], dict[str, dict[float, float]]]:
    """The heatmap's cells as ``heatmap_table`` lays them out: the full model's row first, then
    the plan's groups in their order; columns are epochs, or steps when an epoch holds several
    evaluations. Returns the column name, the sorted columns and each row's values by column."""
    rows = [r for r in barriers if (r["split"], r["reference"]) == (split, reference)]
    cells = [r for r in rows if r["plan"] == "full"]
    cells += [r for r in rows if r["plan"] == plan != "full" and r["rest_from"] == rest_from]
    steps: dict[float, set[float]] = {}
    for r in cells:
        steps.setdefault(float(r["epoch"]), set()).add(float(r["step"]))
    x = "epoch" if all(len(s) <= 1 for s in steps.values()) else "step"
    values: dict[str, dict[float, float]] = {}
    for r in cells:
        name = FULL_LABEL if r["plan"] == "full" else str(r["group"])
        values.setdefault(name, {})[float(r[x])] = float(r[f"{metric}_barrier"])
    columns = sorted({c for line in values.values() for c in line})
    return x, columns, values


def colour(value: float, low: float, high: float) -> str:
    """The cell colour of ``value`` on a scale from ``low`` <= 0 to ``high`` >= 0 centred at 0
    (equal sizes equally strong), as the PNG heatmaps' ``colour_scale``."""
    limit = max(-low, high) or 1.0
    t = min(1.0, max(0.0, 0.5 + value / (2 * limit))) * (len(VLAG) - 1)
    i = min(int(t), len(VLAG) - 2)
    rgb = [a + (b - a) * (t - i) for a, b in zip(VLAG[i], VLAG[i + 1], strict=True)]
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def _cell(value: float | None, low: float, high: float, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return '<td title="not measured"></td>'
    background = colour(value, low, high)
    r, g, b = (int(background[k : k + 2], 16) / 255 for k in (1, 3, 5))
    ink = "#000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.408 else "#fff"
    text = f"{value:.{digits}f}"
    text = f"{0.0:.{digits}f}" if float(text) == 0.0 else text  # never "-0.00"
    return f'<td style="background:{background};color:{ink}" title="{value!r}">{text}</td>'


def heatmap_html(
    barriers: Rows, plan: str, metric: str, reference: str, split: str, rest_from: str,
    pairing: str | None = None,
) -> str:  # fmt: skip
    """One heatmap as an HTML table with the PNG's title, rows, columns and colour scale."""
    x, columns, values = grid(barriers, plan, metric, reference, split, rest_from)
    finite = [v for line in values.values() for v in line.values() if math.isfinite(v)]
    low, high = min([0.0, *finite]), max([0.0, *finite])
    limit = max(-low, high)
    least = 2 if metric == "loss" else 3
    digits = min(4, max(least, 1 - math.floor(math.log10(limit)) if limit > 0 else least))
    heading = title(heatmap_what(metric, plan, rest_from), split, reference, pairing)
    head = "".join(f"<th>{c:g}</th>" for c in columns)
    body = "".join(
        f'<tr><th style="text-align:right">{html.escape(name)}</th>'
        + "".join(_cell(line.get(c), low, high, digits) for c in columns)
        + "</tr>"
        for name, line in values.items()
    )
    lines = "<br>".join(html.escape(t) for t in heading.replace("\u00a0", " ").splitlines())
    return (
        '<div style="font-family:sans-serif;font-size:12px">'
        f"<p><b>{lines}</b></p>"
        '<table style="border-collapse:collapse;text-align:center" cellpadding="4">'
        f"<tr><th>{html.escape(LAYER_AXIS.get(plan, plan))} \\ {x}</th>{head}</tr>{body}</table>"
        f"<p>{barrier_label(metric)}; colour scale {low:.{digits}f} (blue) to "
        f"{high:.{digits}f} (red), 0 white; through {x} {columns[-1]:g}</p></div>"
    )


def html_heatmaps(
    barriers: Rows, splits: Sequence[str], reference: str, pairing: str | None
) -> dict[str, str]:
    """Every heatmap the PNGs would show (each split, layer-wise plan and rest model, loss and
    error), by W&B key ``barrier_heatmap/<split>_<plan>[_rest_b]_<metric>``."""
    plans = [p for p in dict.fromkeys(str(r["plan"]) for r in barriers) if p != "full"]
    rests = list(dict.fromkeys(str(r["rest_from"]) for r in barriers if r["plan"] != "full"))
    out = {}
    for split in splits:
        for plan in plans or ["full"]:
            for rest in rests if plan != "full" else ["a"]:
                for metric in ("loss", "error"):
                    name = f"{split}_{plan}{'_rest_b' if rest == 'b' else ''}_{metric}"
                    out[f"barrier_heatmap/{name}"] = heatmap_html(
                        barriers, plan, metric, reference, split, rest, pairing
                    )
    return out
