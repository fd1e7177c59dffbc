"""Where ``lwlc analyze`` writes: the results directory, refused before any work if it would
overwrite results unasked, and proven writable before the measurement starts."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lwlc.core.errors import LwlcError
from lwlc.formats import lock, outputs
from lwlc.formats.checkpoints import Checkpoint
from lwlc.results.files import OTHER_RESULTS, RESULT_FILES, remove_results, remove_temporaries


def out_path(args: Any, cks: Sequence[Checkpoint]) -> Path:
    """The results directory, refused (before any work) if it would overwrite results unasked."""
    if args.out:
        out = Path(args.out)
    else:
        src = Path(cks[0].path).resolve().parent
        out = (src.parent if src.name == "checkpoints" else src) / "analysis"
    outputs.check_out(out)
    lock.check_free(out)  # another run writing there is named first, with or without --resume
    if lock.holds_files(out) and not (args.overwrite or args.resume):
        raise LwlcError(
            f"--out {out} exists and is not empty: pass --overwrite to replace it "
            "or --resume to continue it"
        )
    return out


def prepare_out(out: Path, args: Any) -> None:
    """Create ``out`` and prove it writable; with --overwrite, drop the previous results and
    their figures."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise LwlcError(
            f"cannot write to --out {out} ({err.strerror}): choose a writable directory"
        ) from None
    if args.overwrite and not args.resume:
        remove_results(out)
    for stray in remove_temporaries(out, (*RESULT_FILES, *OTHER_RESULTS)):
        print(f"removed {stray}, left by an earlier run that was stopped", file=sys.stderr)
