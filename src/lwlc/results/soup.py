"""The results of ``lwlc analyze --soup``: ``soup_barriers.csv`` and ``summary.json`` (written
atomically, the CSV first, so a summary saying ``complete`` always has its rows), the console
table of the k-model barriers and their figure ``soup_<split>.png``, one per split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lwlc.core.soup import SOUP_COLUMNS
from lwlc.core.sweep import Rows
from lwlc.formats.io import write_csv, write_json
from lwlc.results.console import shown

SOUP_FILE = "soup_barriers.csv"
LEGEND = (
    "barrier: the soup on the group (the other layers from the rest member) minus the weighted "
    "mean of the members' own values; with 2 networks and equal weights, the midpoint barrier"
)


def write_soup(out: Path, summary: Mapping[str, Any], rows: Rows | None = None) -> None:
    """``soup_barriers.csv`` (:data:`~lwlc.core.soup.SOUP_COLUMNS`) when the rows are given,
    then ``summary.json``."""
    if rows is not None:
        write_csv(out / SOUP_FILE, rows, SOUP_COLUMNS)
    write_json(out / "summary.json", summary)


def print_soup(rows: Rows, split: str, names: Sequence[str]) -> None:
    """One split's k-model barriers: the soup's loss, the members' weighted mean loss and the
    loss barrier (nats), and the error barrier (a fraction), per group and rest member."""
    found = [r for r in rows if r["split"] == split]
    if not found:
        return
    given = str(found[0]["weights"]).split()
    weights = ", ".join(f"{n} {float(w):.3g}" for n, w in zip(names, given, strict=True))
    print(
        f"\nSoup of {found[0]['k']} networks (weights {weights}) on {split}: loss in nats, "
        "error as a fraction"
    )
    print(f"  {LEGEND}")
    width = max(len(str(r["group"])) for r in found)
    plan = max(len(str(r["plan"])) for r in found)
    print(
        f"{'plan':<{plan}} {'group':<{width}} {'rest':<4}{'soup loss':>12}{'members loss':>14}"
        f"{'loss barrier':>14}{'error barrier':>15}"
    )
    for r in found:
        print(
            f"{r['plan']:<{plan}} {r['group']:<{width}} {r['rest_from']:<4}"
            f"{shown(r['soup_loss'], 4):>12}{shown(r['members_loss'], 4):>14}"
            f"{shown(r['loss_barrier'], 4):>14}{shown(r['error_barrier'], 4):>15}"
        )


def draw_soup(out: Path, rows: Rows, splits: Sequence[str], names: Sequence[str]) -> list[Path]:
    """``soup_<split>.png``: the k-model barriers per group as analyze draws a pair's (bars per
    layer-wise plan and rest member, the ``full`` soup dashed), titled with the soup's weights."""
    from lwlc.results.bars import layer_barriers
    from lwlc.results.style import save_figure
    from lwlc.results.words import unbroken

    written = []
    for split in splits:
        found = [  # members named as a pair's in figures: rest from A, B, C, ...
            {**r, "reference": "members", "rest_from": str(r["rest_from"]).upper()}
            for r in rows
            if r["split"] == split
        ]
        if not found:
            continue
        fig = layer_barriers(found, "members", split)
        given = str(found[0]["weights"]).split()
        weights = ", ".join(f"{n} {float(w):.3g}" for n, w in zip(names, given, strict=True))
        fig.suptitle(
            unbroken(f"k-model barriers, {split} split\nsoup of {len(names)} networks "
                     f"({weights}) vs their weighted mean"),
            wrap=True,
        )  # fmt: skip
        written.append(save_figure(fig, out / f"soup_{split}.png"))
    return written
