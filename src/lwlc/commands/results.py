"""Reading back a results folder that an earlier, perhaps killed, run left behind.

``--resume`` trusts nothing it reads: every CSV must have its columns, full rows and numbers that
are finite or ``nan``, and ``summary.json`` must be a JSON object. A row cut short at the end of
a file (a write that never finished) is dropped, so its path is computed again; any other damage
is one line saying what is wrong and to use ``--overwrite``. Temporary files of a killed write
(``.<name>.<random>.tmp``, see :func:`lwlc.formats.io.atomic_file`) are removed.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lwlc.core.errors import LwlcError
from lwlc.formats.io import TEXT_COLUMNS

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


def remove_temporaries(folder: Path, names: Sequence[str]) -> list[Path]:
    """Delete the temporary files a killed write of ``names`` left in ``folder``."""
    stray = [p for name in names for p in folder.glob(f".{name}.*.tmp") if p.is_file()]
    for p in stray:
        p.unlink(missing_ok=True)
    return stray
