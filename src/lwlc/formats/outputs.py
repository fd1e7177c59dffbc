"""The one check of an output path (``--out``) that every lwlc command runs before any work.

A path lwlc writes to is refused, with one line, when it could never be created: it lies below a
regular file, or it goes through a symbolic link that loops or points nowhere. Symbolic links to
existing folders are followed, as the operating system does: ``--out`` may be, or lie below, a
link to the folder where the results belong. The check only reads the file system, so a refused
command leaves everything as it was.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from lwlc.core.errors import LwlcError


def check_out(path: str | os.PathLike[str], flag: str = "--out", is_file: bool = False) -> Path:
    """``path`` as a ``Path`` once every existing part of it is a folder (or a link to one).

    ``is_file``: the path names a file to create (its last part may exist; whether that is
    allowed is the command's own rule), otherwise a folder, whose last part must not be a file.
    Raises LwlcError naming the part that is in the way and what to do.
    """
    out = Path(path)
    where = f"cannot write to {flag} {out}"
    parts = out.parts
    for depth in range(1, len(parts) + 1):
        part = Path(*parts[:depth])
        last = depth == len(parts)
        try:
            mode = os.stat(part).st_mode  # follows links, as writing there would
        except FileNotFoundError:
            if part.is_symlink():
                target = os.readlink(part)
                raise LwlcError(
                    f"{where}: {part} is a symbolic link to {target}, which does not exist: "
                    "remove the link or choose another path"
                ) from None
            return out  # the rest does not exist yet and will be created
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise LwlcError(
                    f"{where}: {part} is a symbolic link that loops back on itself: "
                    "remove the link or choose another path"
                ) from None
            raise LwlcError(f"{where}: {part}: {err.strerror}: choose another path") from None
        if stat.S_ISDIR(mode) or (last and is_file):
            continue
        if last:
            raise LwlcError(f"{where}: it is a file, not a folder: choose another path")
        raise LwlcError(
            f"{where}: {part} is a file, not a folder: choose a path that is not below it"
        )
    return out
