"""Reading back a results folder that an earlier, perhaps killed, run left behind (``--resume``).

``--resume`` trusts nothing it reads: every CSV must have its columns, full rows and numbers that
are finite or ``nan``, and ``summary.json`` must be a JSON object. A row cut short at the end of
a file (a write that never finished) is dropped, so its path is computed again; any other damage
is one line saying what is wrong and to use ``--overwrite``. A resume continues only results
made with the same checkpoints, model, data, layers, alphas and samples.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lwlc.core.barriers import BARRIER_COLUMNS, CURVE_COLUMNS, REFERENCES
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import InterpolationPath
from lwlc.core.sweep import path_key
from lwlc.formats.io import TEXT_COLUMNS, as_json

Rows = list[dict[str, Any]]
REMEDY = "use --overwrite to start again (or another --out)"


def damaged(path: Path, what: str) -> LwlcError:
    """The one-line error for a damaged results file."""
    return LwlcError(f"--resume: {path} is damaged ({what}): {REMEDY}")


def read_summary(path: Path) -> dict[str, Any]:
    """``summary.json`` as a dict, or a one-line error naming what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise damaged(path, f"not UTF-8 text at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise damaged(path, f"not JSON: {err.msg} at line {err.lineno}") from None
    except OSError as err:
        raise damaged(path, f"unreadable: {err.strerror}") from None
    if not isinstance(data, dict):
        raise damaged(path, f"a JSON {type(data).__name__}, not an object")
    for key, kind in (("checkpoints", list), ("options", dict)):
        if key in data and not isinstance(data[key], kind):
            raise damaged(path, f"'{key}' is a {type(data[key]).__name__}")
    if not all(isinstance(c, dict) for c in data.get("checkpoints", [])):
        raise damaged(path, "'checkpoints' holds something other than objects")
    return data


def _parse(row: list[str], header: list[str]) -> dict[str, Any] | str:
    """One CSV row as a dict (numbers as floats), or what is wrong with it."""
    if len(row) != len(header):
        return f"a row of {len(row)} fields under a header of {len(header)}"
    parsed: dict[str, Any] = {}
    for key, value in zip(header, row, strict=True):
        if key in TEXT_COLUMNS:
            parsed[key] = value
            continue
        try:
            number = float(value)
        except ValueError:
            return f"{key} is {value!r}, not a number"
        if math.isinf(number):
            return f"{key} is {value}, neither finite nor nan"
        parsed[key] = number
    return parsed


def read_rows(path: Path, columns: Sequence[str]) -> Rows:
    """The rows of a results CSV, validated; a torn last row is dropped (with a note)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise damaged(path, f"not UTF-8 text at byte {err.start}") from None
    except OSError as err:
        raise damaged(path, f"unreadable: {err.strerror}") from None
    lines = list(csv.reader(text.splitlines()))
    if not lines:
        raise damaged(path, "empty, not even a header")
    header, body = lines[0], lines[1:]
    missing = [c for c in columns if c not in header]
    if missing:
        raise damaged(path, f"no column {', '.join(missing)}")
    if body and not text.endswith("\n"):  # the last row was cut short while being written
        print(
            f"lwlc: warning: {path} ends in a row cut short (line {len(lines)}); "
            "its path is computed again",
            file=sys.stderr,
        )
        body = body[:-1]
    rows: Rows = []
    for number, row in enumerate(body, start=2):
        parsed = _parse(row, header)
        if isinstance(parsed, str):
            raise damaged(path, f"line {number}: {parsed}")
        rows.append(parsed)
    return rows


def identity(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What determines the numbers of a results directory; a resume must agree on all of it."""
    options = summary.get("options") or {}
    return as_json(
        {
            "checkpoints": [c.get("sha256") for c in summary.get("checkpoints", [])],
            **{
                k: summary.get(k)
                for k in ("model", "data", "layers", "alphas", "samples", "bn_calibration_samples")
            },
            **{k: options.get(k) for k in ("bn", "splits")},
            # the calibration batch size sets the statistics only where there are any
            "bn_batch_size": options.get("bn_batch_size")
            if summary.get("bn_calibration_samples")
            else None,
        }
    )


def finished(curves: Rows, barriers: Rows, splits: Sequence[str], alphas: Sequence[float]) -> set:
    """The paths (``path_key``) whose every split has every alpha and every reference."""
    points: dict[tuple[str, str, str], set[tuple[str, float]]] = {}
    for r in curves:
        points.setdefault(path_key(r), set()).add((str(r["split"]), float(r["alpha"])))
    refs: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
    for r in barriers:
        refs.setdefault(path_key(r), set()).add((str(r["split"]), str(r["reference"])))
    references = [r for r in REFERENCES if r != "midpoint" or 0.5 in alphas]
    wanted_points = {(s, float(a)) for s in splits for a in alphas}
    wanted_refs = {(s, r) for s in splits for r in references}
    return {k for k in refs if refs[k] >= wanted_refs and points.get(k, set()) >= wanted_points}


def resume(
    out: Path,
    summary: Mapping[str, Any],
    paths: Sequence[InterpolationPath],
    splits: Sequence[str],
    alphas: Sequence[float],
) -> tuple[Rows, Rows, list[InterpolationPath]]:
    """The finished rows in ``out`` and the paths still to do; refuse results of another setup."""
    files = [out / name for name in ("curves.csv", "barriers.csv", "summary.json")]
    if not any(f.exists() for f in files):
        return [], [], list(paths)
    if not files[2].exists():
        raise LwlcError(
            f"--resume: {out} has results but no summary.json to check them against: "
            "use --overwrite or another --out"
        )
    old, new = identity(read_summary(files[2])), identity(summary)
    differ = [k for k in new if old.get(k) != new[k]]
    if differ:
        raise LwlcError(
            f"--resume: the results in {out} were made with different {', '.join(differ)}: "
            "rerun with the original options, or use --overwrite or another --out"
        )
    curves = read_rows(files[0], CURVE_COLUMNS) if files[0].exists() else []
    barriers = read_rows(files[1], BARRIER_COLUMNS) if files[1].exists() else []
    done = finished(curves, barriers, splits, alphas)
    todo = [p for p in paths if (p.plan, p.group, p.rest_from) not in done]
    print(
        f"resuming: {len(paths) - len(todo)} of {len(paths)} paths already in {out}",
        file=sys.stderr,
    )
    return (
        [r for r in curves if path_key(r) in done],
        [r for r in barriers if path_key(r) in done],
        todo,
    )
