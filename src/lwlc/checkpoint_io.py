"""Lightning checkpoints written like every other lwlc file: atomically, beside their target.

Lightning's own ``TorchCheckpointIO`` writes a local checkpoint to a temporary file in the system's
temporary directory and moves it; across file systems the move truncates the target first, so a
full disk during ``lwlc fit`` destroyed the previous good ``last.ckpt`` or left a 0-byte
``best-*.ckpt``. :class:`AtomicCheckpointIO` writes through
:func:`lwlc.formats.io.atomic_file` instead, and lwlc's LightningCLI installs it (:func:`install`).
"""

from __future__ import annotations

from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
from lightning.pytorch.strategies import Strategy

from lwlc.formats.io import save_torch


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves go to a temporary file in the checkpoint's own
    directory, synced, then renamed over the target: a failed save (a full disk: one line naming
    the file) leaves the old checkpoint intact and no temporary file. Remote paths (``s3://``,
    ...) are saved by Lightning as before."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically (``storage_options`` refused, as upstream)."""
        fs, local = url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_torch(checkpoint, local)


def install(strategy: Strategy) -> None:
    """Make ``strategy`` save through :class:`AtomicCheckpointIO` where it would use Lightning's
    plain ``TorchCheckpointIO`` (the default, also under DDP, or as the base of an
    ``AsyncCheckpointIO``); a CheckpointIO of the user's own choosing is kept."""
    current = strategy.checkpoint_io
    if type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    elif isinstance(current, AsyncCheckpointIO):
        if type(current.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AsyncCheckpointIO(AtomicCheckpointIO())
