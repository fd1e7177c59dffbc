"""lwlc's loggers: a Weights & Biases logger that never stops training, and a CSV logger.

``WandbLogger`` wraps Lightning's WandbLogger. Without W&B credentials it runs offline (the run
is written under ``<save_dir>/wandb/`` and uploaded later with ``wandb sync``); an online start
that fails or times out falls back to offline; and any other W&B failure (package missing,
service not starting, a failing call) turns W&B off with a one-line warning while training
continues.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lwlc.core.errors import LwlcError
from lwlc.notices import first_line, warn
from lwlc.wandb_auth import choose_mode


class _Off:
    """Stands in for the W&B run once W&B is off: every call and attribute does nothing."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Off:
        return self

    def __getitem__(self, key: Any) -> _Off:
        return self

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class WandbLogger(Logger):
    """Lightning's WandbLogger, offline without credentials and never fatal to training.

    Args:
        name: display name of the run.
        save_dir: where the local run files go (``<save_dir>/wandb/<run>/``): the run directory;
            ``lwlc fit|validate|test|predict`` set it to ``trainer.default_root_dir`` when it is
            not given (elsewhere: the current directory).
        project: W&B project.
        mode: ``online``, ``offline`` or ``disabled``; default ``$WANDB_MODE``, else online when
            credentials are found and offline otherwise. Online without credentials is offline
            (one warning), so that nothing waits at W&B's login prompt.
        init_timeout: seconds to wait for W&B to start before falling back (online) or giving up.
        **kwargs: passed to Lightning's WandbLogger and ``wandb.init`` (``entity``, ``tags``, ...).

    ``lightning_hparams``: whether the hyper-parameters Lightning logs at the start of a stage
    (the module's and data module's) go to the run's config; lwlc's CLI turns it off, since it
    records its whole config under ``lwlc.config`` (``log_run_info``).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        project: str = "lwlc",
        mode: str | None = None,
        version: str | None = None,
        log_model: bool | str = False,
        prefix: str = "",
        init_timeout: float = 20.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if init_timeout <= 0:
            raise LwlcError(f"init_timeout={init_timeout} must be > 0 seconds")
        self._save_dir = os.fspath(save_dir if save_dir is not None else ".")
        self.lightning_hparams = True
        self._version = version
        self._mode = choose_mode(mode)
        self._init = dict(
            name=name,
            save_dir=self._save_dir,
            project=project,
            version=version,
            log_model=log_model,
            prefix=prefix,
            init_timeout=init_timeout,
            **kwargs,
        )
        self._inner: LightningWandbLogger | None = None
        self._live: Any = None
        self._off = _Off()
        if self._mode != "disabled":
            self._inner = self._guard("set up", lambda: self._lightning_logger(self._mode))

    @property
    def mode(self) -> str:
        """The mode W&B runs in (``offline`` after a fallback, ``disabled`` once turned off)."""
        return self._mode

    def _lightning_logger(self, mode: str) -> LightningWandbLogger:
        import wandb

        init = dict(self._init)
        timeout = init.pop("init_timeout")
        settings = init.pop("settings", None) or wandb.Settings(init_timeout=timeout)
        if mode == "offline":
            # W&B's process-wide settings decide its own telemetry: a run offline only by its
            # init argument still builds OpenTelemetry exporters for W&B's server on its first
            # log (0.1-0.2 s of imports, then export attempts). Offline for the process too.
            wandb.setup(settings=wandb.Settings(mode="offline"))
        # W&B looks for the git commit from save_dir, and warns when it does not exist yet.
        os.makedirs(self._save_dir, exist_ok=True)
        logger = LightningWandbLogger(mode=mode, settings=settings, **init)
        # Lightning always passes ``anonymous``, which W&B 0.2x+ ignores with a warning per run.
        logger._wandb_init.pop("anonymous", None)
        return logger

    def turn_off(self, action: str, err: BaseException) -> None:
        """Stop using W&B after ``action`` failed with ``err``, saying so in one line."""
        self._inner = None
        self._mode = "disabled"
        warn(
            f"W&B logging is off ({action} failed: {first_line(err)}); training goes on without it"
        )

    def _guard(self, action: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None with W&B turned off (and one warning) when it raises."""
        try:
            return fn()
        except Exception as err:  # any W&B failure must leave training running
            self.turn_off(action, err)
            return None

    @property
    def run(self) -> Any:
        """The live ``wandb`` run on rank 0 (started if needed); None when W&B is off."""
        if self._inner is None or rank_zero_only.rank != 0:
            return None
        try:
            self._live = self._inner.experiment
            return self._live
        except Exception as err:  # W&B failed to start
            if self._mode != "online":
                self.turn_off("starting the run", err)
                return None
            warn(
                f"W&B could not start online ({first_line(err)}); logging offline instead "
                "(upload later with `wandb sync`)"
            )
            self._mode = "offline"
            self._inner = self._guard("set up", lambda: self._lightning_logger("offline"))
            return self.run

    @property
    def experiment(self) -> Any:
        """The ``wandb`` run, or a stand-in that ignores every call when W&B is off."""
        run = self.run
        return self._off if run is None else run

    def _call(self, action: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.run is None:
            return None
        inner = self._inner
        return self._guard(action, lambda: getattr(inner, method)(*args, **kwargs))

    @property
    def name(self) -> str | None:
        return self._inner.name if self._inner is not None else self._init["project"]

    @property
    def version(self) -> str | None:
        return self._inner.version if self._inner is not None else self._version

    @property
    def save_dir(self) -> str:
        """The run's own files directory once it runs (Lightning saves the config there, so each
        run keeps its own and W&B uploads it with the run); ``save_dir`` as given otherwise."""
        run = self.run
        return str(run.dir) if run is not None and getattr(run, "dir", None) else self._save_dir

    @property
    def log_dir(self) -> str:
        return self.save_dir

    @property
    def root_dir(self) -> str:
        """``save_dir`` as given (W&B writes under ``<root_dir>/wandb/``); never starts the run."""
        return self._save_dir

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._call("logging metrics", "log_metrics", metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's hyper-parameters, unless ``lightning_hparams`` is off."""
        if self.lightning_hparams:
            self._call("logging the config", "log_hyperparams", params)

    @rank_zero_only
    def log_run_info(self, record: Mapping[str, Any]) -> None:
        """lwlc's record of the run (``record_run_info``) as the run's config key ``lwlc``."""
        self._call("logging the config", "log_hyperparams", {"lwlc": dict(record)})

    @rank_zero_only
    def log_table(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        step: int | None = None,
    ) -> None:
        """A ``wandb.Table`` under ``key``."""
        self._call("logging a table", "log_table", key, columns=columns, data=data, step=step)

    @rank_zero_only
    def log_image(
        self, key: str, images: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        """Images (paths, arrays or PIL images) under ``key``."""
        self._call("logging an image", "log_image", key, images, step=step, **kwargs)

    def log_graph(self, model: pl.LightningModule, input_array: Any = None) -> None:
        pass

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._inner is not None:
            self._guard(
                "uploading a checkpoint",
                lambda: self._inner.after_save_checkpoint(checkpoint_callback),
            )

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Finish the run, so that its files are complete when the stage ends; a later stage
        (``trainer.test`` after ``trainer.fit``) resumes it under the same id."""
        inner, run = self._inner, self._live
        if inner is None or run is None:
            return
        self._live = None
        self._guard("finishing the run", lambda: inner.finalize(status))
        self._guard("finishing the run", lambda: run.finish(exit_code=int(status != "success")))
        if self._inner is not None:
            self._init["version"] = run.id
            self._inner = self._guard("set up", lambda: self._lightning_logger(self._mode))


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, writing ``<save_dir>/logs/version_N/metrics.csv``; ``lwlc
    fit|validate|test|predict`` set ``save_dir`` to ``trainer.default_root_dir`` when it is not
    given (elsewhere: the current directory)."""

    def __init__(
        self,
        save_dir: str | None = None,
        name: str = "logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        root = save_dir if save_dir is not None else "."
        super().__init__(root, name, version, prefix, flush_logs_every_n_steps)


def folder_run_id(save_dir: str) -> str | None:
    """The id of the W&B run whose files lie in ``<save_dir>/wandb/`` (the latest started, when
    an older folder holds several), or None."""
    files = pathlib.Path(save_dir, "wandb").glob("*run-*/run-*.wandb")
    latest = max(files, key=lambda f: f.parent.name.split("run-", 1)[1], default=None)
    return latest.stem.removeprefix("run-") if latest is not None else None


def wandb_run(logger: Logger) -> Any:
    """The live ``wandb`` run of ``logger`` (lwlc or Lightning WandbLogger) on rank 0, or None."""
    if isinstance(logger, WandbLogger):
        return logger.run
    if isinstance(logger, LightningWandbLogger) and rank_zero_only.rank == 0:
        return logger.experiment
    return None


def has_wandb(loggers: list[Logger]) -> bool:
    """Whether any of ``loggers`` logs to W&B (without starting a run)."""
    return any(
        isinstance(lg, LightningWandbLogger)
        or (isinstance(lg, WandbLogger) and lg.mode != "disabled")
        for lg in loggers
    )


def check_logger_packages(logger_config: Any) -> None:
    """A TensorBoardLogger among the configured loggers needs ``tensorboard`` (or tensorboardX):
    without it, one line naming the extra, before anything is set up (Lightning's own error is a
    traceback through the config parser)."""
    import importlib
    import importlib.util

    configs = logger_config if isinstance(logger_config, list) else [logger_config]
    for config in configs:
        class_path = getattr(config, "class_path", None) or ""
        module, _, name = class_path.rpartition(".")
        if not module:
            continue
        chosen = getattr(importlib.import_module(module), name, None)  # the user's own choice
        if not (isinstance(chosen, type) and issubclass(chosen, TensorBoardLogger)):
            continue
        if not any(importlib.util.find_spec(p) for p in ("tensorboard", "tensorboardX")):
            raise LwlcError(
                f"--trainer.logger {class_path} needs the tensorboard package, which is not "
                "installed: pip install 'lwlc[tensorboard]' (or choose another logger)"
            )


def own_checkpoint(ckpt_path: object, checkpoint_dirs: list[str]) -> bool:
    """Whether ``ckpt_path`` is a checkpoint the folder's fit wrote (``last``/``hpc``, or a file
    in its checkpoint folders that no ``lwlc merge`` wrote): only then does a validate or test
    of it log into the fit's W&B run, whose history it then belongs to."""
    if ckpt_path is None:
        return False
    if str(ckpt_path) in ("last", "hpc"):
        return True
    path = pathlib.Path(os.fspath(ckpt_path)).resolve()
    if not any(path.is_relative_to(pathlib.Path(d).resolve()) for d in checkpoint_dirs):
        return False
    import torch

    try:
        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # unreadable here: Lightning says why when it loads it
        return False
    return isinstance(saved, dict) and "lwlc_merge" not in saved
