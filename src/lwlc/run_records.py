"""What lwlc records on a run's loggers: the resolved config, the environment and lwlc's info.

Stored as the hyper-parameter ``lwlc`` (W&B: the run's config key), so that a run can be
reproduced from its dashboard alone.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from lwlc.loggers import WandbLogger
from lwlc.notices import first_line, warn


def cli_config(trainer: pl.Trainer) -> dict[str, Any] | None:
    """The resolved ``lwlc fit`` config (from LightningCLI's SaveConfigCallback) as plain data."""
    from lightning.pytorch.cli import SaveConfigCallback

    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            try:
                return saved_config(callback) or dumped_config(callback)
            except Exception:  # an undumpable config is not worth failing a run over
                return None
    return None


def saved_config(callback: Any) -> dict[str, Any] | None:
    """The config file the callback wrote in the log directory at setup, read back (a second
    dump takes 20 times longer); None when there is none (no log directory, another node).
    The path is the one lwlc's SaveConfig noted at setup: ``Trainer.log_dir`` broadcasts, and
    this runs on rank 0 alone."""
    path = getattr(callback, "config_path", None)
    if not callback.save_to_log_dir or callback.multifile or path is None:
        return None
    if not os.path.isfile(path):
        return None
    import yaml

    with open(path) as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def dumped_config(callback: Any) -> dict[str, Any]:
    """The config dumped from the parser: every option, None included, as JSON (which reads back
    faster than YAML), not validated again (jsonargparse >= 4.35): it was when parsed."""
    dump = callback.parser.dump
    accepted = inspect.signature(dump).parameters
    options = {"skip_unset" if "skip_unset" in accepted else "skip_none": False}
    if "skip_validation" in accepted:
        options["skip_validation"] = True
    return json.loads(dump(callback.config, format="json", **options))


def environment(trainer: pl.Trainer) -> dict[str, Any]:
    """Versions, devices and parallelism of this run, for reproducing it."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": str(torch.__version__),  # a str subclass YAML would tag as a Python object
        **{package: installed(package) for package in ("lightning", "lwlc", "wandb")},
        "accelerator": type(trainer.accelerator).__name__,
        "cuda_devices": devices,
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "precision": str(trainer.precision),
    }


def record_run_info(
    trainer: pl.Trainer, info: Mapping[str, Any], dashboards_only: bool = False
) -> None:
    """Record ``info``, the config and the environment as hyper-parameters ``lwlc.<key>`` (each
    call records all of them: a later call replaces the key ``lwlc`` with a superset). With
    ``dashboards_only``, only on lwlc's W&B logger: for info that a file beside the run holds
    already (a file logger's hparams.yaml is rewritten with the whole config on each call)."""
    record = {**info, "config": cli_config(trainer), "environment": environment(trainer)}
    for logger in trainer.loggers:
        if dashboards_only and not isinstance(logger, WandbLogger):
            continue
        try:
            if isinstance(logger, WandbLogger):
                logger.log_run_info(record)
            else:
                logger.log_hyperparams({"lwlc": record})
        except Exception as err:  # a logger that cannot store nested data must not stop training
            warn(f"{type(logger).__name__} could not record the run info ({first_line(err)})")
