"""Safe checkpoint loading and atomic result files.

Checkpoints may come from strangers: they are read with ``torch.load(weights_only=True)`` or
safetensors, never with an unrestricted unpickler, so loading one cannot run code. Result
files are written to a temporary file and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import pickle
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from lwlc.errors import LwlcError

TEXT_COLUMNS = frozenset({"plan", "group", "rest_from", "split", "reference"})


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise LwlcError(f"checkpoint {p} does not exist: check the path")
    if p.is_dir():
        raise LwlcError(
            f"checkpoint {p} is a directory, not a file: "
            "give the .ckpt/.pt/.safetensors file inside it"
        )
    if p.stat().st_size == 0:
        raise LwlcError(
            f"checkpoint {p} is empty (0 bytes): "
            "the run that wrote it probably failed; use another one"
        )
    return p


def _unreadable(p: Path, err: Exception) -> LwlcError:
    text = str(err).strip()
    msg = text.splitlines()[0] if text else type(err).__name__
    return LwlcError(
        f"{p} is not a readable checkpoint (not a torch or safetensors file, or truncated or "
        f"corrupted): {msg[:200]}"
    )


def unpickling_error(path: str | os.PathLike[str], err: pickle.UnpicklingError) -> LwlcError:
    """The one-line error for a file torch's safe unpickler rejected: code-running objects in it
    (refused, with what to do) or plain damage."""
    names = re.search(r"GLOBAL (\S+)", str(err))
    if names or "add_safe_globals" in str(err):
        what = f"the Python object {names.group(1)}" if names else "Python objects"
        return LwlcError(
            f"refusing to load {path}: it holds {what}, which would run code when unpickled; lwlc "
            "loads only tensors and plain data. If you trust the file, re-save it as "
            "torch.save(model.state_dict(), path) or as safetensors"
        )
    return _unreadable(Path(path), err)


def load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint or state dict without executing code; raise one clear line otherwise."""
    p = _check_file(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(p))
        except Exception as err:  # safetensors' own error types, OSError, ValueError, ...
            raise LwlcError(
                f"{p} is not a readable safetensors file ({err}): re-export it"
            ) from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise unpickling_error(p, err) from None
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise _unreadable(p, err) from None
    if not isinstance(obj, dict):
        raise LwlcError(f"{p} holds a {type(obj).__name__}, not a checkpoint or state dict")
    return obj


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, so results name exactly which checkpoints they came from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` once written.

    Readers never see half a file and a crash leaves the old one; the file gets the usual
    permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def _format(value: object) -> object:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def write_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, object]], columns: Sequence[str]
) -> None:
    """Write rows (floats at full precision, NaN as ``nan``) atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(row.get(k)) for k in columns})
    _atomic_write(Path(path), buf.getvalue())


def append_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, object]], columns: Sequence[str]
) -> None:
    """Append rows to a CSV that :func:`write_csv` wrote, in the same format.

    A growing history then costs the same per evaluation (a rewrite grows with it).
    """
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
        )
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in columns})


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Read a results CSV back, numbers as floats (``alpha``, losses, barriers, ...).

    The columns that name a result (plan, group, ...) stay text even when they look like numbers
    (a layer of an ``nn.Sequential`` is called ``0``), so rows read back match rows computed.
    """
    rows: list[dict[str, object]] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, object] = {}
            for k, v in row.items():
                if k in TEXT_COLUMNS:
                    parsed[k] = v
                    continue
                try:
                    parsed[k] = float(v)
                except (TypeError, ValueError):
                    parsed[k] = v
            rows.append(parsed)
    return rows


def as_json(data: Any) -> Any:
    """``data`` as it reads back from a JSON file (NaN as null, tuples as lists, str keys)."""

    def clean(o: Any) -> Any:
        if isinstance(o, float) and math.isnan(o):
            return None
        if isinstance(o, Mapping):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.loads(json.dumps(clean(data), default=str))


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write JSON atomically (NaN written as null)."""
    _atomic_write(Path(path), json.dumps(as_json(data), indent=2) + "\n")


def save_state_dict(
    path: str | os.PathLike[str], state: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None
) -> None:
    """Save tensors (``.safetensors``, or torch's format for weights_only); never overwrites."""
    p = Path(path)
    if p.exists():
        raise LwlcError(
            f"{p} already exists: choose another --out (lwlc never overwrites a checkpoint)"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(tmp),
            metadata={k: json.dumps(v) for k, v in (meta or {}).items()},
        )
    else:
        torch.save({"state_dict": dict(state), **(meta or {})}, tmp)
    os.replace(tmp, p)
