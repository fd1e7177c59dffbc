"""``lwlc plot RUN_DIR``: redraw the figures of an analysis or of a training run from its CSVs.

RUN_DIR is an ``lwlc analyze`` results directory, a barrier Callback directory, or a run
directory holding one in ``barriers/``. Results with ``epoch``/``step`` columns (training-time)
also get the layers x epochs heatmaps.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lwlc.errors import LwlcError
from lwlc.io import read_csv

RESULT_FILES = ("curves.csv", "barriers.csv")


def build_parser() -> Any:
    """The ``lwlc plot`` argument parser."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="lwlc plot", description=__doc__.splitlines()[0], exit_on_error=False)
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
        help="barrier reference to draw: path, models or midpoint (default: the one logged)",
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


def _logged_reference(results: Path) -> str | None:
    """The reference the Callback logged with (recorded in its summary.json), if any."""
    try:
        return json.loads((results / "summary.json").read_text())["options"]["reference"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(argv: Sequence[str]) -> list[Path]:
    """Parse ``argv``, redraw the figures and return the files written."""
    try:
        args = build_parser().parse_args(list(argv))
    except Exception as err:  # jsonargparse's ArgumentError and type errors
        raise LwlcError(f"{str(err).strip().splitlines()[0]} (see lwlc plot --help)") from None
    results = find_results(Path(args.run_dir))
    out = Path(args.out) if args.out else results
    curves, barriers = (read_csv(results / name) for name in RESULT_FILES)
    if not barriers:
        raise LwlcError(f"{results}/barriers.csv holds no results yet: nothing to draw")
    from lwlc import plots

    if "step" in barriers[0]:
        reference = args.reference or _logged_reference(results) or "midpoint"
        return plots.save_training_figures(out, curves, barriers, reference)
    return plots.save_analysis_figures(out, curves, barriers, args.reference or "path")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point used by ``lwlc plot`` (the CLI turns LwlcError into one line)."""
    for path in run(sys.argv[1:] if argv is None else argv):
        print(path)
