"""``lwlc plot RUN_DIR``: redraw the figures of an analysis or of a training run from its CSVs.

RUN_DIR is an ``lwlc analyze`` results directory, a barrier Callback directory, a run directory
holding one in ``barriers/``, or the ``--out`` of ``lwlc analyze --ckpt m1 m2 ...`` (its pairwise
matrices and every pair's folder). Results with ``epoch``/``step`` columns (training-time) also
get the layers x epochs heatmaps. Figure titles take the pairing from ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lwlc.commands.errors import argument_error, short_help
from lwlc.core.barriers import BARRIER_COLUMNS, CURVE_COLUMNS
from lwlc.core.errors import LwlcError
from lwlc.formats import lock
from lwlc.formats.io import read_csv
from lwlc.formats.outputs import check_out

RESULT_FILES = ("curves.csv", "barriers.csv")
NEEDED_COLUMNS = {"curves.csv": CURVE_COLUMNS, "barriers.csv": BARRIER_COLUMNS}
# The barrier Callback's columns saying when each row was measured (training-time results).
TIME_COLUMNS = ("epoch", "step")


def build_parser() -> Any:
    """The ``lwlc plot`` argument parser."""
    from jsonargparse import ArgumentParser

    p = short_help(ArgumentParser)(
        prog="lwlc plot", description=__doc__.splitlines()[0], exit_on_error=False
    )
    p.add_argument(
        "run_dir", type=str, help="results directory (analysis, barriers/ or a run directory)"
    )
    p.add_argument(
        "--out",
        type=str | None,
        default=None,
        help="where to write the figures (default: next to the CSVs)",
    )
    p.add_argument(
        "--reference",
        type=str | None,
        default=None,
        help="barrier reference of barriers_<split>.png: models, midpoint or path (default: "
        "models, against the whole A and B, with the others beside; a training run's: the one "
        "logged)",
    )
    return p


def find_results(run_dir: Path) -> Path:
    """The directory holding ``curves.csv`` and ``barriers.csv`` in or below ``run_dir``."""
    for candidate in (run_dir, run_dir / "barriers", run_dir / "analysis"):
        if all((candidate / name).is_file() for name in RESULT_FILES):
            return candidate
    if not run_dir.is_dir():
        raise LwlcError(f"{run_dir} is not a directory: give a run or results directory")
    raise LwlcError(
        f"no curves.csv and barriers.csv in {run_dir}, {run_dir}/barriers or {run_dir}/analysis: "
        "give a directory written by lwlc analyze or by the barrier Callback"
    )


def read_results(path: Path, needed: Sequence[str] | None = None) -> list[dict[str, object]]:
    """The rows of ``curves.csv`` or ``barriers.csv``, refused with one line unless every row
    has the columns the figures need (with ``epoch`` and ``step`` if either is there).

    Checked before anything is drawn, so a foreign, damaged or empty file writes no figure.
    """
    what = "give the curves.csv and barriers.csv that lwlc analyze or the barrier Callback wrote"
    try:
        rows = read_csv(path)
    except UnicodeDecodeError as err:
        raise LwlcError(
            f"{path} is not UTF-8 text (it holds the byte 0x{err.object[err.start]:02x}): {what}"
        ) from None
    except OSError as err:
        raise LwlcError(f"cannot read {path} ({err.strerror}): check that it is readable") from None
    except csv.Error as err:
        raise LwlcError(f"{path} is not a readable CSV file ({err}): {what}") from None
    if not rows:
        raise LwlcError(f"{path} holds no results yet: nothing to draw")
    timed = any(c in rows[0] for c in TIME_COLUMNS)
    columns = (*(needed or NEEDED_COLUMNS[path.name]), *(TIME_COLUMNS if timed else ()))
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise LwlcError(f"{path} lacks the column(s) {', '.join(missing)}: {what}")
    for number, row in enumerate(rows, start=1):
        if None in row or None in row.values():
            raise LwlcError(
                f"{path} row {number} has another number of fields than the header (damaged or cut "
                f"short): {what}"
            )
    return rows


def _summary(results: Path) -> dict[str, Any]:
    """The results' summary.json (how the pair was made, the options), or {} if unreadable."""
    try:
        summary = json.loads((results / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _logged_reference(summary: dict[str, Any]) -> str | None:
    """The reference the Callback logged with (recorded in its summary.json), if any."""
    options = summary.get("options")
    return options.get("reference") if isinstance(options, dict) else None


def _check_reference(reference: str, barriers: Sequence[dict[str, object]], path: Path) -> None:
    present = list(dict.fromkeys(str(r["reference"]) for r in barriers))
    if reference not in present:
        raise LwlcError(
            f"no barriers with --reference {reference} in {path}: choose {' or '.join(present)}"
        )


def _redraw(results: Path, out: Path, reference: str | None) -> list[Path]:
    """The figures of one analysis or training run's results, drawn into ``out``."""
    curves, barriers = (read_results(results / name) for name in RESULT_FILES)
    summary = _summary(results)
    training = "step" in barriers[0]
    if training:
        reference = reference or _logged_reference(summary) or "midpoint"
    if reference is not None:
        _check_reference(reference, barriers, results / "barriers.csv")
    from lwlc.results import draw
    from lwlc.results.style import pairing_text

    measures = read_csv(results / "measures.csv") if (results / "measures.csv").exists() else []
    if training:
        pairing = pairing_text(summary)
        drawn = draw.save_training_figures(out, curves, barriers, reference, pairing)
        return drawn + draw.save_distances(out, measures, pairing)
    return draw.draw_figures(out, curves, barriers, summary, reference, measures)


def _is_pairwise(run_dir: Path) -> bool:
    """Whether ``run_dir`` is the ``--out`` of ``lwlc analyze --ckpt m1 m2 ...``: all pairs'
    barriers.csv and no curves.csv (those are in the pairs' folders)."""
    return (run_dir / "barriers.csv").is_file() and not (run_dir / "curves.csv").exists()


def _redraw_pairs(run_dir: Path, out: Path, reference: str | None) -> list[Path]:
    """The pairwise matrices of several checkpoints, then each pair's own figures."""
    from lwlc.results.draw import pairwise_figures
    from lwlc.results.files import PAIR_COLUMNS

    rows = read_results(run_dir / "barriers.csv", PAIR_COLUMNS)
    pairs = list(dict.fromkeys(f"{r['model_a']}~{r['model_b']}" for r in rows))
    missing = [p for p in pairs if not all((run_dir / p / n).is_file() for n in RESULT_FILES)]
    if missing:
        raise LwlcError(
            f"{run_dir}/barriers.csv holds the pair {missing[0]}, but {run_dir / missing[0]} has "
            "no curves.csv and barriers.csv: give the whole folder lwlc analyze --ckpt m1 m2 ... "
            "wrote"
        )
    if reference is not None:
        _check_reference(reference, rows, run_dir / "barriers.csv")
        rows = [r for r in rows if r["reference"] == reference]
    for pair in pairs:  # every pair's CSVs are checked before anything is drawn
        _, barriers = (read_results(run_dir / pair / name) for name in RESULT_FILES)
        if reference is not None:
            _check_reference(reference, barriers, run_dir / pair / "barriers.csv")
    written = pairwise_figures(out, rows)
    for pair in pairs:
        written += _redraw(run_dir / pair, check_out(out / pair), reference)
    return written


def run(argv: Sequence[str]) -> list[Path]:
    """Parse ``argv``, redraw the figures and return the files written."""
    try:
        args = build_parser().parse_args(list(argv))
    except Exception as err:  # jsonargparse's ArgumentError and type errors
        raise argument_error(err, "plot") from None
    run_dir = Path(args.run_dir)
    if _is_pairwise(run_dir):
        out = lock.claim(check_out(args.out or run_dir), "lwlc plot")
        return _redraw_pairs(run_dir, out, args.reference)
    results = find_results(run_dir)
    return _redraw(results, lock.claim(check_out(args.out or results), "lwlc plot"), args.reference)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point used by ``lwlc plot`` (the CLI turns LwlcError into one line)."""
    for path in run(sys.argv[1:] if argv is None else argv):
        print(path)
