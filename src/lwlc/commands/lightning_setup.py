"""Checks and settings of ``lwlc fit|validate|test|predict`` made before Lightning starts.

Plain functions over the parsed config, used by :mod:`lwlc.commands.lightning_cli`: the
machine (CUDA, bf16 on a CPU), the data (found before any logger starts), a config-less
evaluation of a checkpoint, what a failed or interrupted fit leaves behind and says.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import shlex
import warnings
from typing import Any

from lwlc.commands.errors import one_line
from lwlc.core.errors import LwlcError

OVERWRITE_FLAG = "--overwrite"
OVERWRITE_HELP = (
    f"{OVERWRITE_FLAG}: a folder (trainer.default_root_dir) holds one run; lwlc fit refuses one "
    "that holds an earlier run's files (checkpoints, barriers, logs, wandb, config.yaml) unless it "
    f"continues that run (--ckpt_path inside the folder). {OVERWRITE_FLAG} removes those files "
    "first (only those) and trains anew."
)
CPU_HALF = ("bf16-mixed", "bf16")  # Lightning's names of bf16 mixed precision


def logger_specs(value: Any) -> list[Any]:
    """The ``class_path``/``init_args`` entries of a parsed ``trainer.logger`` (one or a list;
    ``true``/``false`` have none)."""
    specs = value if isinstance(value, list) else [value]
    return [s for s in specs if getattr(s, "class_path", None) and s.get("init_args") is not None]


def forget_failed_start(trainer: Any, new_root: str | None = None) -> None:
    """After a fit into a fresh folder failed before its first optimizer step (a setting that
    does not work, a data set missing, Ctrl-C), remove what it wrote there (its W&B run, logs,
    config), so that the folder is fresh again for the corrected command, and the folder itself
    if the command created it (``new_root``) and it is empty. Best effort: the failure itself is
    what the user must see."""
    from lwlc.commands import rundir

    with contextlib.suppress(OSError):
        if trainer is not None and trainer.global_step == 0:
            rundir.remove(rundir.run_files(trainer), trainer.default_root_dir)
        if new_root is not None and os.path.isdir(new_root) and not os.listdir(new_root):
            os.rmdir(new_root)


def _on_cpu(accelerator: object) -> bool:
    """Whether Lightning's ``accelerator`` setting runs on the CPU on this machine."""
    import torch

    if accelerator == "cpu":
        return True
    mps = getattr(torch.backends, "mps", None)
    gpu = torch.cuda.is_available() or bool(mps and mps.is_available())
    return accelerator in (None, "auto") and not gpu


def check_accelerator(accelerator: object) -> None:
    """A GPU accelerator on a machine without CUDA is a one-line user error, not a traceback."""
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise LwlcError(
            f"--trainer.accelerator {accelerator} requested but CUDA is not available on this "
            "machine: use --trainer.accelerator cpu (or auto)"
        )


def cpu_precision(trainer: Any) -> None:
    """bf16 mixed precision asked for a run on a CPU becomes 32-bit, with one line saying so:
    the configs choose bf16 for GPUs, where it is faster; on a CPU it is slower."""
    if str(trainer.precision) in CPU_HALF and _on_cpu(trainer.accelerator):
        print(
            f"lwlc: no GPU here: training in 32-bit precision instead of the config's "
            f"{trainer.precision} (set --trainer.precision 32-true to silence this line)"
        )
        trainer.precision = "32-true"


def check_data(datamodule: Any) -> None:
    """Find an lwlc data module's files now, before any logger starts or folder is written,
    and name the option that points at them when they are missing. Downloads are left to
    Lightning (``prepare_data`` runs on one process per node there)."""
    from lwlc.data.base import TensorDataModule

    if not isinstance(datamodule, TensorDataModule) or getattr(datamodule, "download", False):
        return
    try:
        datamodule.prepare_data()
    except LwlcError as err:
        root = getattr(datamodule, "root", None)
        if root is None or "--data.init_args.root" in str(err):
            raise
        raise LwlcError(
            f"{err}; or point --data.init_args.root (now {root!r}) at the folder that holds it"
        ) from None


def resume_hint(argv: list[str], dirpath: str) -> str:
    """The line printed after Ctrl-C during ``lwlc fit``: the exact command that resumes."""
    last = os.path.join(dirpath, "last.ckpt")
    if not os.path.isfile(last):
        return (
            "lwlc: interrupted before the first checkpoint; nothing to resume: run "
            f"`lwlc {shlex.join(argv)}` again with {OVERWRITE_FLAG}"
        )
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip or arg.startswith("--ckpt_path="):
            skip = False
            continue
        skip = arg == "--ckpt_path"
        if not skip:
            kept.append(arg)
    return f"lwlc: interrupted; resume with: lwlc {shlex.join([*kept, '--ckpt_path', last])}"


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def silence_upstream_noise() -> None:
    """Drop three messages of Lightning that tell a user nothing: an advert, the deprecation of
    a torch API that Lightning itself calls, and that a config's ``optimizer:`` replaces the
    module's default optimizer (which is what that key is for)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*configure_optimizers` will be overridden by.*")


def model_class(config: Any) -> type:
    """The LightningModule class the user's config names (their own choice: importing it is
    theirs)."""
    module, _, name = config.model.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def state_dict_error(message: str) -> str | None:
    """torch's load_state_dict error (a --ckpt_path of other shapes or layers) as one line."""
    if "Error(s) in loading state_dict" not in message:
        return None
    size = re.search(
        r"size mismatch for (\S+): copying a param with shape torch.Size\(\[([^\]]*)\]\) from "
        r"checkpoint, the shape in current model is torch.Size\(\[([^\]]*)\]\)",
        message,
    )
    if size:
        key, theirs, ours = size.groups()
        what = f"{key} is ({theirs}) in the checkpoint and ({ours}) in the model"
    else:
        keys = re.search(r'(Missing|Unexpected) key\(s\) in state_dict: "([^"]+)"', message)
        where = "the model" if keys and keys.group(1) == "Missing" else "the checkpoint"
        what = f"{keys.group(2)} is only in {where}" if keys else one_line(message)[:200]
    return (
        f"--ckpt_path does not fit the model of your config: {what}; use the config the "
        "checkpoint was trained with (its hparams.yaml or config.yaml)"
    )


def _class_config(hparams: Any, drop: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A checkpoint's saved ``{_class_path, **init_args}`` as ``{class_path, init_args}``."""
    if not isinstance(hparams, dict) or "_class_path" not in hparams:
        return None
    init = {k: v for k, v in hparams.items() if not k.startswith("_") and k not in drop}
    return {"class_path": hparams["_class_path"], "init_args": init}


def _option(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``args`` (the last one given)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
    return value


def from_checkpoint(args: list[str]) -> list[str]:
    """``validate``/``test``/``predict --ckpt_path X.ckpt`` without a config: add ``--model``
    and ``--data`` from the configs the checkpoint saved (vouched for by lwlc's reader first:
    only lwlc/torch/torchvision classes), so any lwlc checkpoint evaluates as it is."""
    given = ("-c", "--config", "--model", "--data")
    if args[:1] not in (["validate"], ["test"], ["predict"]) or any(
        a.split("=")[0].split(".")[0] in given for a in args
    ):
        return args
    path = _option(args, "--ckpt_path")
    if path is None or not os.path.isfile(path):
        return args
    from lwlc.formats.checkpoints import check_lightning_checkpoint
    from lwlc.formats.io import load_file

    check_lightning_checkpoint(path)
    saved = load_file(path)
    model = _class_config(saved.get("hyper_parameters"))
    data = _class_config(saved.get("datamodule_hyper_parameters"), drop=("order_seeds",))
    missing = [what for what, cfg in (("--model", model), ("--data", data)) if cfg is None]
    if missing:
        raise LwlcError(
            f"{path} does not record its {' and '.join(missing)} config: give "
            f"--config config.yaml (the run's) or {' and '.join(missing)}"
        )
    return [*args, "--model", json.dumps(model), "--data", json.dumps(data)]


def duration(seconds: float) -> str:
    """``seconds`` for a person: ``42 s``, ``17 min``, ``3.5 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
