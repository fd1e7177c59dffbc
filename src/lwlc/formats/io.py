"""Safe checkpoint loading and atomic result files.

Checkpoints may come from strangers: they are read with ``torch.load(weights_only=True)`` or
safetensors, never with an unrestricted unpickler, so loading one cannot run code. Every file
lwlc writes goes to a temporary file beside it, is flushed to the disk and renamed over the old
one, so a crash or a full disk never leaves half a file; a full disk is one line naming the file
and the space left (:func:`disk_full_error`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import traceback
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lwlc.core.errors import LwlcError, readable_bytes

if TYPE_CHECKING:
    from torch import Tensor

# what torch's own and plain-data pickles import (tensors, dtypes, bytes, sets), which torch's
# safe unpickler allows: a refusal names the first other object
TORCH_OWN = (
    "torch.",
    "collections.OrderedDict",
    "collections.Counter",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
)
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


def pickled_imports(path: str | os.PathLike[str]) -> list[str]:
    """The ``module.name`` objects the pickles in ``path`` would import, read from their opcodes
    without running them (a torch zip file's ``*.pkl`` members, or a bare or legacy pickle)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            blobs = [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
    else:
        blobs = [Path(path).read_bytes()]
    found: list[str] = []
    for blob in blobs:
        stream = io.BytesIO(blob)
        while stream.tell() < len(blob):  # a legacy torch file is several pickles, then data
            strings: list[str] = []
            try:
                for op, arg, _ in pickletools.genops(stream):
                    if op.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except (ValueError, pickle.UnpicklingError, UnicodeDecodeError):
                break
    return found


def unpickling_error(path: str | os.PathLike[str], err: pickle.UnpicklingError) -> LwlcError:
    """The one-line error for a file torch's safe unpickler rejected: code-running objects in it
    (refused, named, with what to do) or plain damage."""
    names = re.search(r"GLOBAL (\S+)", str(err))
    if names or "add_safe_globals" in str(err):
        try:  # name what is not torch's own (its tensors pickle through torch functions)
            foreign = [n for n in pickled_imports(path) if not n.startswith(TORCH_OWN)]
        except OSError:
            foreign = []
        named = foreign[0] if foreign else names.group(1) if names else None
        what = f"the Python object {named}" if named else "Python objects"
        return LwlcError(
            f"refusing to load {path}: it holds {what}, which would run code when unpickled; lwlc "
            "loads only tensors and plain data. If you trust the file, re-save it as "
            "torch.save(model.state_dict(), path) or as safetensors"
        )
    return _unreadable(Path(path), err)


def check_weights_file(path: str | os.PathLike[str]) -> None:
    """Refuse in one line a weight file another library will read (transformers): missing,
    empty, or a ``.safetensors`` file whose header is damaged (read without loading tensors)."""
    p = _check_file(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                f.keys()
        except Exception as err:  # safetensors' own error types, OSError, ...
            raise LwlcError(
                f"{p} is not a readable safetensors file ({err}): re-export it"
            ) from None


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
    import torch  # here, not at import: lwlc's help and argument errors never load torch

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


DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def _mount_point(path: Path) -> Path:
    """The existing directory holding ``path``, up to the mount point it lives on."""
    path = path.absolute()
    while not path.is_dir():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def disk_full_error(
    err: BaseException, path: str | os.PathLike[str] | None = None
) -> LwlcError | None:
    """The one-line error for a write that found the disk or the quota full (ENOSPC, EDQUOT),
    naming the file (``path``, else the one the error names) and the space left; else None.

    The one translation of a full disk, used by :func:`atomic_file`, :func:`append_csv` and the
    command line (for writes outside lwlc, e.g. Lightning's logs).
    """
    if not isinstance(err, OSError) or err.errno not in DISK_FULL:
        return None
    named = path or err.filename2 or err.filename or _file_written(err)
    advice = "free some space or write elsewhere (--out, trainer.default_root_dir), then rerun"
    if not isinstance(named, (str, os.PathLike)):
        return LwlcError(f"{DISK_FULL[err.errno]} while writing an unnamed file: {advice}")
    mount = _mount_point(Path(named))
    free = readable_bytes(shutil.disk_usage(mount).free)
    return LwlcError(f"{DISK_FULL[err.errno]} writing {named} ({free} free on {mount}): {advice}")


def _file_written(err: OSError) -> str | None:
    """The file open for writing nearest to where ``err`` was raised: a failed ``f.write`` does
    not name its file (Lightning's logs, jsonargparse's config), the frame holding ``f`` does."""
    for frame, _ in reversed(list(traceback.walk_tb(err.__traceback__))):
        for value in frame.f_locals.values():
            name, mode = getattr(value, "name", None), getattr(value, "mode", "")
            if isinstance(value, io.IOBase) and isinstance(name, str) and isinstance(mode, str):
                if any(c in mode for c in "wax+"):
                    return name
    return None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` once written and synced.

    Readers never see half a file; a crash or a full disk leaves the old one and no temporary
    file (a full disk raises :func:`disk_full_error`'s line). The file gets the usual permissions
    (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        text = {} if "b" in mode else {"newline": "", "encoding": "utf-8"}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        full = disk_full_error(err, path)
        if full is None:
            raise
        raise full from err


def save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_file`.

    Serialised in memory first: torch's writer turns a failed write into a RuntimeError that no
    longer says the disk was full.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_file(path, "wb") as f:
        f.write(buffer.getbuffer())


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
    _atomic_write(Path(path), _csv_text(rows, columns, header=True))


def _csv_text(rows: Iterable[Mapping[str, object]], columns: Sequence[str], header: bool) -> str:
    """The CSV lines of ``rows`` (a missing value empty), with the header line first if asked."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows([_format(row.get(k)) for k in columns] for row in rows)
    return buf.getvalue()


def append_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, object]], columns: Sequence[str]
) -> None:
    """Append rows to a CSV that :func:`write_csv` wrote, in the same format, and sync them.

    A growing history then costs the same per evaluation (a rewrite grows with it). An append
    that fails (a full disk) is cut off again, so the file keeps exactly its earlier rows.
    """
    data = memoryview(_csv_text(rows, columns, header=False).encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except BaseException as err:
            os.ftruncate(fd, size)
            full = disk_full_error(err, path)
            if full is None:
                raise
            raise full from err
    finally:
        os.close(fd)


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
    """Save tensors (``.safetensors``, or torch's format for weights_only) atomically; never
    overwrites."""
    p = Path(path)
    if p.exists():
        raise LwlcError(
            f"{p} already exists: choose another --out (lwlc never overwrites a checkpoint)"
        )
    if p.suffix == ".safetensors":
        from safetensors.torch import save

        data = save(
            {k: v.contiguous() for k, v in state.items()},
            metadata={k: json.dumps(v) for k, v in (meta or {}).items()},
        )
        with atomic_file(p, "wb") as f:
            f.write(data)
    else:
        save_torch({"state_dict": dict(state), **(meta or {})}, p)
