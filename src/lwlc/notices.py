"""One-line warnings in lwlc's ``lwlc: warning: ...`` style, that never stop training."""

from __future__ import annotations

import sys

from lightning.pytorch.utilities.rank_zero import rank_zero_only


@rank_zero_only
def warn(message: str) -> None:
    """One line on stderr, once per process group (rank 0)."""
    print(f"lwlc: warning: {message}", file=sys.stderr, flush=True)


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line warnings."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__
