"""The three files beside a selected merge: ``<out>.selection.json``, ``.csv`` and ``.png``.

The JSON holds the choice and every named model's loss and accuracy (members, full average,
chosen) per split; the CSV every step of the search; the figure the selection-split and test
losses against the fraction of parameters averaged, with the members, the full average and the
chosen model marked. All are written atomically; none overwrites a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lwlc.core.errors import LwlcError
from lwlc.core.selection import Selection, selection_rows, selection_summary
from lwlc.formats.io import atomic_file, write_csv, write_json

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
    json_path, csv_path, png_path = report_paths(out)
    rows = selection_rows(sel)
    write_json(json_path, {**selection_summary(sel), **extra})
    write_csv(csv_path, rows, list(rows[0]))
    plot_selection(sel, png_path)
    return [json_path, csv_path, png_path]


def plot_selection(sel: Selection, path: Path) -> Path:
    """Loss against the fraction of parameters averaged, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(sel.metrics["chosen"])
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits) + 1.6, 4.2), squeeze=False)
    rows = selection_rows(sel)
    members = [n for n in sel.metrics if n.startswith("member_")]
    for ax, split in zip(axes[0], splits, strict=True):
        fits = [r for r in rows if r["fits"]]
        over = [r for r in rows if not r["fits"]]
        for group, colour, label in ((over, "#bbbbbb", "over budget"), (fits, "#4c72b0", "fits")):
            ax.scatter([r["fraction"] for r in group], [r[f"{split}_loss"] for r in group],
                       s=14, color=colour, label=f"candidate ({label})", zorder=2)  # fmt: skip
        for i, name in enumerate(members):
            ax.axhline(sel.metrics[name][split].loss, color=f"C{i + 1}", ls="--", lw=1,
                       label=f"model {name[-1].upper()}")  # fmt: skip
        if split == sel.select_split:
            ax.axhline(sel.result.limit, color="k", ls=":", lw=1, label=f"budget (+{sel.budget})")
        ax.scatter([1.0], [sel.metrics["full_average"][split].loss], marker="s", s=60,
                   color="#dd8452", label="full average", zorder=3)  # fmt: skip
        ax.scatter([sel.fraction(sel.result.chosen)], [sel.metrics["chosen"][split].loss],
                   marker="*", s=220, color="#c44e52", label="chosen", zorder=4)  # fmt: skip
        ax.set_xlabel("fraction of parameters averaged")
        ax.set_ylabel(f"{split} loss (nats)")
        role = "selection split" if split == sel.select_split else "held out"
        ax.set_title(f"{split} ({role}), {sel.result.search} search")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()  # the first panel has the budget
    fig.legend(handles, labels, fontsize=8, loc="center right")  # outside: never hides a point
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
