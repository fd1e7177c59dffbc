"""The barrier Callback's files in its directory: the CSVs of its history (appended as it grows),
``summary.json`` and the figures drawn from the CSVs' rows.

Figures never lag their CSVs at the end of a run: CSVs rewritten from scratch remove the figures
drawn from earlier rows, and the Callback redraws them at the end of fit and after an interrupt.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lwlc.core.barriers import METRICS
from lwlc.formats.io import append_csv, read_csv, write_csv, write_json
from lwlc.tracking.history import COLUMNS, History

FIGURES = ("heatmap_*.png", "curves_*.png", "barriers_*.png", "distances.png")
# Everything the Callback (and ``lwlc plot`` of its folder) writes in its directory: the CSVs,
# the summary, the figures and the temporary files of an interrupted write.
OUTPUTS = ("curves.csv", "barriers.csv", "measures.csv", "summary.json", *FIGURES, ".*.tmp")


class ResultFiles:
    """Keeps ``directory``'s CSVs equal to a :class:`History`, appending what is new."""

    def __init__(self, directory: Path, with_measures: bool) -> None:
        self.directory = directory
        self.with_measures = with_measures
        self.written: dict[str, int] = {}  # rows of each history in its file (absent: rewrite)
        self.relabelled: int | None = None  # the history's relabel count the files match

    def write(self, history: History) -> None:
        """Append new rows; after a relabel or a restore, rewrite the CSVs and remove the
        figures drawn from the earlier rows (an earlier run's, or before the relabelling)."""
        if history.relabelled != self.relabelled:
            self.written, self.relabelled = {}, history.relabelled
            for figure in (p for pattern in FIGURES for p in self.directory.glob(pattern)):
                figure.unlink(missing_ok=True)
        for name, rows in history.tables().items():
            if name == "measures" and not self.with_measures:
                continue
            done, path = self.written.get(name), self.directory / f"{name}.csv"
            if done is None:
                write_csv(path, rows, COLUMNS[name])
            elif done < len(rows):
                append_csv(path, rows[done:], COLUMNS[name])
            self.written[name] = len(rows)

    def write_summary(
        self, info: Mapping[str, Any], status: str, history: History, memory: Mapping[str, Any]
    ) -> None:
        """``summary.json``: the run's info, its status and evaluations, the last memory plan."""
        summary = {**info, "status": status, "evaluations": history.evaluations()}
        write_json(self.directory / "summary.json", {**summary, "memory": dict(memory)})

    def draw(self, reference: str, info: Mapping[str, Any], distances: bool = False) -> list[Path]:
        """The heatmaps of loss and error (and, with ``distances``, ``distances.png`` of the last
        weight measures) drawn from the rows read back from the CSVs in the directory: a figure
        shows what its CSV holds. Returns the heatmaps."""
        from lwlc import figures

        pairing = figures.pairing_text(info)
        barriers = read_csv(self.directory / "barriers.csv")
        drawn = figures.save_heatmaps(self.directory, barriers, reference, METRICS, pairing)
        if distances:
            measures = read_csv(self.directory / "measures.csv")
            figures.save_distances(self.directory, measures, pairing)
        return drawn
