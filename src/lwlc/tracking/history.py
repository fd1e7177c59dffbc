"""The barrier Callback's history: every evaluation's rows, stamped with epoch and step.

Epochs are *completed* epochs: 0 is the initialisation (before any step), 1 the end of the
first epoch, and so on, as the paper's heatmaps are labelled. The history is saved in every
checkpoint (as JSON text), so that a resumed run goes on without gaps or duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lwlc.core.barriers import BARRIER_COLUMNS, CURVE_COLUMNS
from lwlc.core.measures import MEASURE_COLUMNS
from lwlc.core.sweep import Rows

TIME_COLUMNS = ("epoch", "step")
COLUMNS = {
    "curves": TIME_COLUMNS + CURVE_COLUMNS,
    "barriers": TIME_COLUMNS + BARRIER_COLUMNS,
    "measures": TIME_COLUMNS + MEASURE_COLUMNS,
}


@dataclass
class History:
    """Rows of curves, barriers and extra measures, the epochs already evaluated, and two
    counters that tell the file writer and the publisher what changed: ``revision`` grows with
    every change, ``relabelled`` when rows already written changed."""

    curves: Rows = field(default_factory=list)
    barriers: Rows = field(default_factory=list)
    measures: Rows = field(default_factory=list)
    done_epochs: set[int] = field(default_factory=set)
    revision: int = 0
    relabelled: int = 0
    encoded: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)
    encoded_for: int = field(default=0, repr=False, compare=False)

    def tables(self) -> dict[str, Rows]:
        """The three histories by name (``curves``, ``barriers``, ``measures``)."""
        return {"curves": self.curves, "barriers": self.barriers, "measures": self.measures}

    def add(self, epoch: int, step: int, curves: Rows, barriers: Rows, measures: Rows) -> Rows:
        """Append one evaluation's rows stamped with ``epoch`` and ``step``; returns the
        stamped barriers."""
        stamp = {"epoch": epoch, "step": step}
        stamped = [{**stamp, **r} for r in barriers]
        self.curves += [{**stamp, **r} for r in curves]
        self.barriers += stamped
        self.measures += [{**stamp, **r} for r in measures]
        self.revision += 1
        return stamped

    def recorded(self, step: int) -> bool:
        """Whether an evaluation at optimizer step ``step`` is in the history."""
        return any(r["step"] == step for r in self.barriers)

    def relabel(self, step: int, epoch: int) -> None:
        """Label the rows of step ``step`` as taken after ``epoch`` completed epochs."""
        changed = False
        for rows in self.tables().values():
            for row in rows:
                if row["step"] == step and row["epoch"] != epoch:
                    row["epoch"], changed = epoch, True
        if changed:
            self.revision += 1
            self.relabelled += 1

    def evaluations(self) -> list[dict[str, int]]:
        """Each evaluation's epoch and step, in step order."""
        seen = {(int(r["epoch"]), int(r["step"])) for r in self.barriers}
        return [{"epoch": e, "step": s} for e, s in sorted(seen, key=lambda t: t[1])]

    def latest_curves(self) -> Rows:
        """The curve rows of the last evaluation."""
        last = self.curves[-1]["step"] if self.curves else None
        return [r for r in self.curves if r["step"] == last]

    def state_dict(self) -> dict[str, Any]:
        """The rows as JSON text (torch.save inspects every object it pickles: row by row, the
        numbers of the history made each checkpoint slower to write) and the epochs done. Each
        row is encoded once (Lightning saves two checkpoints an epoch and the history grows with
        every evaluation; re-encoding all of it each time grew quadratically), again only after
        a relabel or a restore; the text equals ``json.dumps`` of the rows."""
        if self.encoded_for != self.relabelled:
            self.encoded, self.encoded_for = {}, self.relabelled
        text = {}
        for name, rows in self.tables().items():
            done = self.encoded.setdefault(name, [])
            done += [json.dumps(row, default=float) for row in rows[len(done) :]]
            text[name] = "[" + ", ".join(done) + "]"
        return {**text, "done_epochs": sorted(self.done_epochs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint's history (JSON text, or lists of rows from earlier versions)."""
        for name in ("curves", "barriers", "measures"):
            saved = state.get(name, [])
            rows = json.loads(saved) if isinstance(saved, str) else saved
            setattr(self, name, [dict(r) for r in rows])
        self.done_epochs = set(state.get("done_epochs", []))
        self.revision += 1
        self.relabelled += 1
