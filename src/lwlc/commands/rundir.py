"""One folder, one run: the files an earlier ``lwlc fit`` left where a new one would write.

A run folder (``trainer.default_root_dir``) describes one run: its checkpoints, the barrier
Callback's CSVs and figures, its loggers' folders (W&B's ``wandb/``, the CSV logger's
``logs/version_N``) and the saved config. ``lwlc fit`` refuses a folder that already holds such
files unless ``--overwrite`` (which removes exactly these, never other files) or unless it
continues that run (``--ckpt_path`` inside the folder).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

from lwlc.loggers import WandbLogger

# What W&B writes in <dir>/wandb/: one folder per run (and stage), a link and its debug logs.
WANDB_ENTRIES = re.compile(r"^((offline-)?run-.+|latest-run|debug(-internal)?\.log)$")
LAST_CHECKPOINTS = ("last", "hpc")


def checkpoint_names(callback: ModelCheckpoint) -> re.Pattern[str]:
    """File names ``callback`` writes: its filename template with any ``{metric}`` filled in,
    the ``-vN`` Lightning adds, ``last`` with ``save_last``, and lwlc's temporary files."""
    templates = [callback.filename or "{epoch}-{step}"]
    if callback.save_last:
        templates.append(callback.CHECKPOINT_NAME_LAST)
    names = "|".join(re.sub(r"\\\{.*?\\\}", ".+", re.escape(t)) for t in templates)
    return re.compile(rf"^\.?({names})(-v\d+)?{re.escape(callback.FILE_EXTENSION)}(\..+\.tmp)?$")


def _children(folder: Path, names: re.Pattern[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if names.match(p.name))


def _config_files(trainer: pl.Trainer, filename: str) -> list[Path]:
    """The config files Lightning's SaveConfigCallback left in ``Trainer.log_dir`` for an earlier
    run: the run folder's own (no logger) or a Lightning WandbLogger's save_dir (a CSV logger's
    versions and lwlc's W&B runs are listed with their folders)."""
    dirs = {Path(trainer.default_root_dir)}
    if trainer.loggers and isinstance(trainer.loggers[0], LightningWandbLogger):
        dirs.add(Path(trainer.loggers[0].save_dir or "."))
    return [d / filename for d in dirs if (d / filename).is_file()]


def run_files(trainer: pl.Trainer, config_filename: str = "config.yaml") -> list[Path]:
    """Every file or folder of an earlier run where ``trainer`` would write its own."""
    root = Path(trainer.default_root_dir)
    found: list[Path] = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            found += _children(Path(callback.dirpath), checkpoint_names(callback))
    for callback in trainer.callbacks:
        outputs = getattr(callback, "run_files", None)
        if callable(outputs):
            found += outputs(trainer)
    for logger in trainer.loggers:
        if isinstance(logger, (CSVLogger, TensorBoardLogger)):
            found += _children(Path(logger.root_dir), re.compile(r"^version_.+$"))
        elif isinstance(logger, WandbLogger):
            found += _children(Path(logger.root_dir, "wandb"), WANDB_ENTRIES)
        elif isinstance(logger, LightningWandbLogger) and logger.save_dir:
            found += _children(Path(logger.save_dir, "wandb"), WANDB_ENTRIES)
    found += _config_files(trainer, config_filename)
    found += _children(root, re.compile(r"^hpc_ckpt_\d+\.ckpt$"))
    return sorted({p.absolute() for p in found})


def continues(root: str, checkpoint_dirs: list[str], ckpt_path: object) -> bool:
    """Whether a fit with ``ckpt_path`` continues the run of ``root``: a checkpoint inside it or
    its checkpoint folders, Lightning's ``last``/``hpc``, or SLURM's requeued job (Lightning
    resumes from ``hpc_ckpt_N.ckpt`` by itself)."""
    if ckpt_path is None:
        return SLURMEnvironment.detect() and any(Path(root).glob("hpc_ckpt_*.ckpt"))
    if str(ckpt_path) in LAST_CHECKPOINTS:
        return True
    path = Path(os.fspath(ckpt_path)).resolve()
    return any(path.is_relative_to(Path(d).resolve()) for d in [root, *checkpoint_dirs])


def remove(paths: list[Path], root: str) -> None:
    """Remove ``paths`` (links as links, folders with what they hold), then the folders they
    leave empty up to ``root``."""
    stop = Path(root).resolve()
    parents = set()
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        parents.add(path.parent)
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        while parent.resolve() != stop and parent.resolve().is_relative_to(stop):
            try:
                parent.rmdir()
            except OSError:  # not empty: a file of the user's, or of another run
                break
            parent = parent.parent


def describe(paths: list[Path], root: str) -> str:
    """The entries of ``root`` that hold ``paths`` (``checkpoints/, wandb/``), or the paths
    themselves where they lie outside it."""
    top = Path(root).absolute()
    names = {}
    for path in paths:
        if not path.absolute().is_relative_to(top):
            names[str(path)] = None
            continue
        first = path.absolute().relative_to(top).parts[0]
        names[first + ("/" if (top / first).is_dir() else "")] = None
    return ", ".join(names)
