"""The three files beside a selected merge: ``<out>.selection.json``, ``.csv`` and ``.png``.

The JSON holds the choice and every named model's loss and accuracy (members, full average,
chosen) per split; the CSV every step of the search; the figure the selection-split and test
losses against the fraction of parameters averaged, with the members, the full average and the
chosen model marked. All are written atomically; none overwrites a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lwlc.core.errors import LwlcError
from lwlc.core.selection import Selection, selection_rows, selection_summary
from lwlc.formats.io import write_csv, write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SUFFIXES = (".selection.json", ".selection.csv", ".selection.png")


def report_paths(out: Path) -> list[Path]:
    """The report files of the merge written to ``out``."""
    return [out.with_name(out.name + s) for s in SUFFIXES]


def check_report_paths(out: Path) -> None:
    """Refuse, before any work, a merge whose report would overwrite a file."""
    for p in report_paths(out):
        if p.exists():
            raise LwlcError(f"{p} already exists: choose another --out (lwlc never overwrites)")


def write_report(out: Path, sel: Selection, extra: Mapping[str, Any]) -> list[Path]:
    """Write the JSON (summary plus ``extra``), the CSV and the figure; returns their paths."""
    from lwlc.results.style import save_figure

    json_path, csv_path, png_path = report_paths(out)
    rows = selection_rows(sel)
    write_json(json_path, {**selection_summary(sel), **extra})
    write_csv(csv_path, rows, list(rows[0]))
    save_figure(selection_figure(sel), png_path)
    return [json_path, csv_path, png_path]


def selection_figure(sel: Selection) -> Figure:
    """Loss against the fraction of parameters averaged, one panel per split (the selection
    split first) on one y axis, in lwlc's look: every candidate measured (blue where it fits the
    budget), the members' losses, the budget line, the full average and the chosen model."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    from lwlc.results.style import legend_outside, legend_width, look, panel_grid

    splits = sorted(sel.metrics["chosen"], key=lambda split: split != sel.select_split)
    rows = selection_rows(sel)
    members = [n for n in sel.metrics if n.startswith("member_")]
    colours = sns.color_palette("colorblind", 10)
    fit, full, chosen = colours[0], colours[1], colours[3]
    member_colours = [colours[i] for i in (2, 4, 5, 6, 8, 9)]  # none of the markers' colours
    dashes = ["--", "-.", (0, (5, 2, 1, 2)), (0, (1, 1))]
    entries: list[tuple[Any, str]] = [
        (Line2D([], [], ls="", marker="o", ms=4, color="0.72"), "candidate (over budget)"),
        (Line2D([], [], ls="", marker="o", ms=4, color=fit), "candidate (fits)"),
    ]
    lines = {
        name: {"color": member_colours[i % 6], "ls": dashes[i // 6 % 4], "lw": 1.2}
        for i, name in enumerate(members)
    }
    for name, line in lines.items():
        entries.append((Line2D([], [], **line), f"model {name.removeprefix('member_').upper()}"))
    budget = {"color": "0.1", "ls": ":", "lw": 1.2}
    entries += [
        (Line2D([], [], **budget), f"budget (+{sel.budget:g} nats, {sel.select_split})"),
        (Line2D([], [], ls="", marker="s", ms=7, color=full), "full average"),
        (Line2D([], [], ls="", marker="*", ms=13, color=chosen), "chosen"),
    ]
    labels = [label for _, label in entries]
    share = sel.fraction(sel.result.chosen)
    with look():
        fig, panels = panel_grid(len(splits), 4.6, 3.4, margin=legend_width(labels))
        for (ax,), split in zip(panels, splits, strict=True):
            for fits in (False, True):
                group = [r for r in rows if bool(r["fits"]) == fits]
                ax.scatter([r["fraction"] for r in group], [r[f"{split}_loss"] for r in group],
                           s=14, color=fit if fits else "0.72", zorder=2, lw=0)  # fmt: skip
            for name, line in lines.items():
                ax.axhline(sel.metrics[name][split].loss, **line)
            if split == sel.select_split:
                ax.axhline(sel.result.limit, **budget)
            ax.scatter([1.0], [sel.metrics["full_average"][split].loss], marker="s", s=50,
                       color=full, zorder=3)  # fmt: skip
            ax.scatter([share], [sel.metrics["chosen"][split].loss], marker="*", s=200,
                       color=chosen, edgecolor="white", lw=0.6, zorder=4)  # fmt: skip
            ax.set_xlabel("fraction of parameters averaged")
            ax.set_ylabel("loss (nats)" if ax is panels[0][0] else "")
            role = "selection split" if split == sel.select_split else "held out"
            ax.set_title(f"{split} ({role})", fontsize="small")
        legend_outside(fig, [h for h, _ in entries], labels)
        fig.suptitle(
            f"layer selection, {sel.result.search} search: {len(sel.result.chosen)} of "
            f"{len(sel.groups)} groups averaged ({share:.0%} of the parameters)"
        )
    return fig
