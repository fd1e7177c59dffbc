"""One writer per folder: a lock file naming the process that writes there.

``lwlc analyze --out``, ``lwlc plot --out``, ``lwlc merge --out`` and ``lwlc fit``'s run folder
are each written by one process at a time: two writers would interleave their rows, or a
``--resume`` would recompute paths another run is writing. :func:`acquire` creates
``.lwlc.lock`` (for a file target, ``.<name>.lwlc.lock`` beside it) holding the writer's pid,
host and command, complete from its first byte (written aside, then hard-linked into place, which
fails if it exists). A lock whose process is gone (same host, pid no longer running) is taken
over; any other is refused in one line naming its holder. :func:`release_held` removes this
process's locks (and a folder that only the lock had created); ``lwlc.commands.cli.main`` calls it
when a command ends, however it ends.

The lock file also keeps :data:`RESERVE` bytes of room that :func:`free_reserve` gives back, so a
command that met a full disk can still record its failure; and a folder held by this process has
no live temporary file of another, so :func:`claim` removes those a killed writer left.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from lwlc.core.errors import LwlcError

LOCK_NAME = ".lwlc.lock"
# room the lock file keeps after its record, given back by free_reserve: on a full disk the
# command can still record its failure (analyze's summary.json)
RESERVE = 256 * 1024
# this process's locks, with the folder each created (None if it existed), for release_held
_HELD: dict[Path, Path | None] = {}


def lock_path(target: str | os.PathLike[str], is_file: bool = False) -> Path:
    """The lock file of a folder (``target/.lwlc.lock``) or of a file (``.<name>.lwlc.lock``)."""
    target = Path(target)
    return target.parent / f".{target.name}{LOCK_NAME}" if is_file else target / LOCK_NAME


def _job() -> str | None:
    """The distributed job this process belongs to (torchrun's run id, or Slurm's job step):
    its processes write one folder together, rank 0 holding the lock."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun:{os.environ['TORCHELASTIC_RUN_ID']}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm:{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '')}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _holder(path: Path) -> dict[str, object] | None:
    """The lock's record, or None if it is gone; a record that cannot be read is ``{}``."""
    try:
        record = json.loads(path.read_bytes().split(b"\n", 1)[0])
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _stale(record: dict[str, object]) -> bool:
    """Whether a lock's holder is certainly gone: a process of this host that no longer runs."""
    pid = record.get("pid")
    return record.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def _link(path: Path, what: str, reserve: int = RESERVE) -> bool:
    """Create ``path`` with this process's record, complete; False if it already exists.

    The record is followed by ``reserve`` random bytes (see :data:`RESERVE`); on a disk too
    full for them, the lock is made without."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "job": _job()}  # fmt: skip
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(record).encode() + b"\n")
            f.write(os.urandom(reserve))  # random: a compressing file system must store it
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if reserve and err.errno in (errno.ENOSPC, errno.EDQUOT):
            os.unlink(tmp)
            tmp = None
            return _link(path, what, 0)
        raise
    finally:
        if tmp is not None:
            os.unlink(tmp)


def acquire(target: str | os.PathLike[str], what: str, is_file: bool = False) -> Path:
    """Make this process the one writer of ``target`` (a folder, or a file with ``is_file``),
    creating the folder if needed; refuse in one line if another live process writes there."""
    path = lock_path(target, is_file)
    folder = path.parent
    created = None if folder.exists() else next(
        (p for p in [folder, *folder.parents] if p.parent.exists()), folder
    )  # fmt: skip
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if _link(path, what):
                _HELD[path] = created
                return path
            record = _holder(path)
            if record is None:
                continue  # released meanwhile
            if not _stale(record):
                raise _busy(Path(target), path, record)
            # a dead process's lock: move it aside (only one taker succeeds), then retry
            try:
                os.rename(path, path.with_name(f"{path.name}.stale.{os.getpid()}"))
                os.unlink(path.with_name(f"{path.name}.stale.{os.getpid()}"))
            except FileNotFoundError:
                pass
    except OSError as err:
        from lwlc.formats.io import disk_full_error  # torch: only where it is needed

        full = disk_full_error(err, path)
        if full is not None:
            raise full from None
        raise LwlcError(f"cannot create the lock file {path} ({err.strerror}): "
                        "choose a writable folder") from None  # fmt: skip
    raise _busy(Path(target), path, _holder(path) or {})


def _busy(target: Path, path: Path, record: dict[str, object]) -> LwlcError:
    who = (
        f"process {record.get('pid')} on {record.get('host')} ({record.get('command')}, since "
        f"{record.get('since')})"
        if record
        else "a process that left an unreadable lock file"
    )
    return LwlcError(
        f"{target} is being written by {who}: wait for it to finish or use another --out; if that "
        f"process is gone, delete {path}"
    )


def claim(folder: Path, what: str, suffixes: tuple[str, ...] = (".png", ".pdf", ".svg")) -> Path:
    """:func:`acquire` ``folder``, then delete the temporaries that killed writers of files with
    ``suffixes`` left under it (``.curves_test.png.*.tmp``): holding the lock, none is live."""
    acquire(folder, what)
    for suffix in suffixes:
        for stray in folder.rglob(f".*{suffix}.*.tmp"):
            stray.unlink(missing_ok=True)
            print(f"removed {stray}, left by an earlier run that was stopped", file=sys.stderr)
    return folder


def check_free(target: str | os.PathLike[str], is_file: bool = False) -> None:
    """Refuse in one line, without taking it, a ``target`` that another live process writes
    (one of this process's own distributed job is no other writer)."""
    path = lock_path(target, is_file)
    record = _holder(path)
    if record is None or _stale(record) or record.get("pid") == os.getpid():
        return
    if record.get("job") is None or record.get("job") != _job():
        raise _busy(Path(target), path, record)


def holds_files(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds anything besides lock files (its own or a dead process's)."""
    folder = Path(folder)
    return folder.is_dir() and any(LOCK_NAME not in p.name for p in folder.iterdir())


def free_reserve(folder: str | os.PathLike[str]) -> None:
    """Give back the room this process's lock on ``folder`` keeps (see :data:`RESERVE`)."""
    path = lock_path(folder)
    record = _holder(path)
    if record and record.get("pid") == os.getpid():
        os.truncate(path, len(path.read_bytes().split(b"\n", 1)[0]) + 1)


def release(path: Path) -> None:
    """Remove the lock ``path`` of this process (and the folders the lock alone created)."""
    created = _HELD.pop(path, None)
    record = _holder(path)
    if record and record.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
    if created is not None:
        for folder in [path.parent, *path.parent.parents]:
            if not folder.is_relative_to(created):
                break
            try:
                folder.rmdir()  # only if empty: anything written there stays
            except OSError:
                break


def release_held() -> None:
    """Release every lock this process holds (at the end of a command, however it ended)."""
    for path in list(_HELD):
        release(path)
