"""Result files written as the rows arrive: atomically, in a fixed order, never torn by a signal.

Every write goes through a temporary file and a rename (:func:`lwlc.formats.io.write_csv`), the
rows are sorted by path, split, alpha and reference however the work was chunked or resumed, and
SIGINT/SIGTERM arriving while a file is written wait until the files agree with each other.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lwlc.core.barriers import BARRIER_COLUMNS, CURVE_COLUMNS
from lwlc.core.interpolation import InterpolationPath
from lwlc.core.measures import MEASURE_COLUMNS
from lwlc.core.sweep import Rows, path_key
from lwlc.formats.io import write_csv, write_json
from lwlc.results.soup import SOUP_FILE

RESULT_FILES = ("curves.csv", "barriers.csv", "measures.csv", "summary.json")
# The figures an analysis draws (lwlc.results.draw): dropped with the results they show.
FIGURES = ("curves_*.png", "barriers_*.png", "alignment_*.png", "pairwise_*.png", "distances.png",
           "soup_*.png")  # fmt: skip
# Other results an analysis folder may hold: the k-model barriers of ``lwlc analyze --soup``
# (``lwlc.results.soup``), dropped with the rest by --overwrite.
OTHER_RESULTS = (SOUP_FILE,)
# The barriers of several checkpoints' pairs (``lwlc analyze --ckpt m1 m2 ...``) in one file.
PAIR_COLUMNS = (*BARRIER_COLUMNS, "model_a", "model_b")


class Interrupted(Exception):
    """SIGINT or SIGTERM, turned into an exception so that finished results are kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupts:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`, except while results are
    being written (``with interrupts.writing():``): a signal arriving then is raised once the write
    is done, so the result files always agree with each other. Off the main thread (where Python
    cannot handle signals) it changes nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> Interrupts:
        self._writing = False
        self._pending: int | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        if self._writing:
            self._pending = signum
        else:
            raise Interrupted(signum)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold signals off while the block writes; raise a held one when it is done."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending is not None:
            raise Interrupted(self._pending)


def in_order(rows: Rows, paths: Sequence[InterpolationPath], splits: Sequence[str]) -> Rows:
    """Rows by path (in plan order), then split, keeping the order of alphas and references: the
    files come out the same however the work was chunked or resumed."""
    position = {(p.plan, p.group, p.rest_from): i for i, p in enumerate(paths)}
    split_position = {s: i for i, s in enumerate(splits)}
    return sorted(
        rows,
        key=lambda r: (
            position.get(path_key(r), len(paths)),
            split_position.get(str(r["split"]), 0),
        ),
    )


class ResultFiles:
    """``curves.csv``, ``barriers.csv``, ``measures.csv`` and ``summary.json`` of one analysis in
    ``out``; ``curves`` and ``barriers`` hold every row written so far (a resume's first)."""

    def __init__(
        self,
        out: Path,
        paths: Sequence[InterpolationPath],
        splits: Sequence[str],
        interrupts: Interrupts,
        rows: tuple[Rows, Rows] = ([], []),
    ) -> None:
        self.out, self.paths, self.splits, self.interrupts = out, paths, splits, interrupts
        self.curves, self.barriers = rows

    def add(self, curves: Rows, barriers: Rows) -> None:
        """Add rows (of any paths, in any order) and rewrite both CSVs, in order."""
        with self.interrupts.writing():
            self.curves[:] = in_order(self.curves + curves, self.paths, self.splits)
            self.barriers[:] = in_order(self.barriers + barriers, self.paths, self.splits)
            write_csv(self.out / "curves.csv", self.curves, CURVE_COLUMNS)
            write_csv(self.out / "barriers.csv", self.barriers, BARRIER_COLUMNS)

    def measures(self, rows: Rows) -> None:
        """Write ``measures.csv``."""
        with self.interrupts.writing():
            write_csv(self.out / "measures.csv", rows, MEASURE_COLUMNS)

    def summary(self, summary: Mapping[str, Any], hold_signals: bool = True) -> None:
        """Write ``summary.json`` (``hold_signals=False`` once a signal has already stopped it)."""
        if not hold_signals:
            write_json(self.out / "summary.json", summary)
            return
        with self.interrupts.writing():
            write_json(self.out / "summary.json", summary)

    def finished_paths(self) -> int:
        """How many paths have barriers written."""
        return len({path_key(r) for r in self.barriers})


def warn_nonfinite(curves: Rows) -> int:
    """Say how many curve points have a NaN/Inf loss (they are kept as such, never dropped)."""
    bad = sum(not math.isfinite(float(r["loss"])) for r in curves)
    if bad:
        print(
            f"lwlc: warning: {bad} of {len(curves)} evaluated points have a NaN/Inf loss "
            "(kept as nan in curves.csv; the barriers of their paths are nan): "
            "those interpolated models diverge",
            file=sys.stderr,
        )
    return bad


def remove_results(folder: Path) -> None:
    """Delete the result files and figures of an earlier analysis in ``folder`` (--overwrite),
    so that no figure of it is left beside the new CSVs."""
    for name in (*RESULT_FILES, *OTHER_RESULTS):
        (folder / name).unlink(missing_ok=True)
    for pattern in FIGURES:
        for figure in folder.glob(pattern):
            figure.unlink(missing_ok=True)


def remove_temporaries(folder: Path, names: Sequence[str]) -> list[Path]:
    """Delete the temporary files a killed write of ``names`` left in ``folder``."""
    stray = [p for name in names for p in folder.glob(f".{name}.*.tmp") if p.is_file()]
    for p in stray:
        p.unlink(missing_ok=True)
    return stray
