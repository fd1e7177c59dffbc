"""Weights & Biases for lwlc runs: a logger that never stops training, and what to record on a run.

``WandbLogger`` wraps Lightning's WandbLogger. Without W&B credentials it runs offline (the run
is written under ``<save_dir>/wandb/`` and uploaded later with ``wandb sync``); an online start
that fails or times out falls back to offline; and any other W&B failure (package missing,
service not starting, a failing call) turns W&B off with a one-line warning while training
continues.
"""

from __future__ import annotations

import configparser
import inspect
import json
import netrc
import os
import pathlib
import platform
import sys
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lwlc.core.errors import LwlcError

MODES = ("online", "offline", "disabled")
DEFAULT_HOST = "https://api.wandb.ai"


@rank_zero_only
def warn(message: str) -> None:
    """One line on stderr, once per process group (rank 0), in lwlc's ``lwlc: ...`` style."""
    print(f"lwlc: warning: {message}", file=sys.stderr, flush=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__


def _settings_files() -> list[pathlib.Path]:
    """W&B's settings files, global then workspace (the later one wins), as ``wandb`` reads them."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb"
    workspace = pathlib.Path(os.environ.get("WANDB_DIR") or ".", "wandb", "settings")
    return [pathlib.Path(config_dir, "settings").expanduser(), workspace.expanduser()]


def _file_settings() -> dict[str, str]:
    """The ``[default]`` section of W&B's settings files; unreadable files count as empty."""
    merged: dict[str, str] = {}
    for path in _settings_files():
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
            merged.update(parser.items("default"))
        except (OSError, configparser.Error):
            continue
    return merged


def _netrc_path() -> pathlib.Path:
    """The netrc file W&B reads: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return pathlib.Path(os.environ["NETRC"]).expanduser()
    unix = pathlib.Path("~/.netrc").expanduser()
    windows = pathlib.Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def has_credentials() -> bool:
    """Whether W&B finds credentials without asking, from the sources it reads before it would
    prompt: ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE``, an ``api_key`` in its settings
    files, or the netrc entry of the W&B host (``WANDB_BASE_URL``, the settings' ``base_url`` or
    api.wandb.ai). Nothing here prompts or touches the network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    settings = _file_settings()
    if settings.get("api_key"):
        return True
    host = os.environ.get("WANDB_BASE_URL") or settings.get("base_url") or DEFAULT_HOST
    try:
        entry = netrc.netrc(_netrc_path()).authenticators(urlparse(host).netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def choose_mode(mode: str | None) -> str:
    """``mode``, else ``$WANDB_MODE``, else online with credentials and offline without.

    Online without credentials would stop at W&B's login prompt under a terminal (no timeout
    applies there), so it becomes offline with one warning saying how to log in.
    """
    chosen = mode or os.environ.get("WANDB_MODE") or ("online" if has_credentials() else "offline")
    chosen = {"dryrun": "offline", "run": "online"}.get(chosen, chosen)
    if chosen not in MODES:
        raise LwlcError(f"unknown W&B mode {chosen!r}; choose from {', '.join(MODES)}")
    if chosen == "online" and not has_credentials():
        warn(
            "W&B mode is online but no W&B credentials were found (WANDB_API_KEY, ~/.netrc); "
            "logging offline instead, without waiting for a login prompt: run `wandb login` "
            "once (or set WANDB_API_KEY), and upload this run later with `wandb sync`"
        )
        return "offline"
    return chosen


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
            f"W&B logging is off ({action} failed: {_first_line(err)}); training goes on without it"
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
                f"W&B could not start online ({_first_line(err)}); logging offline instead "
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


def log_to_wandb(loggers: list[Logger], build: Callable[[], dict[str, Any]], step: int) -> None:
    """Log ``build()`` (tables, plots, images) to every W&B run, building it only if there is one.

    Nothing here propagates: a failing drawing warns, a failing W&B call turns lwlc's logger off
    (one warning); media are a view and training goes on.
    """
    targets = [(lg, run) for lg in loggers if (run := wandb_run(lg)) is not None]
    if not targets:
        return
    try:
        payload = build()
    except Exception as err:  # a figure that cannot be drawn must not stop training
        warn(f"could not draw the barrier plots for W&B ({_first_line(err)}); training continues")
        return
    for logger, run in targets:
        try:
            run.log({**payload, "trainer/global_step": step})
        except Exception as err:  # W&B failing must not stop training
            if isinstance(logger, WandbLogger):
                logger.turn_off("logging barrier plots", err)
            else:
                warn(f"could not log barrier plots to W&B ({_first_line(err)}); training continues")


def has_media(loggers: list[Logger]) -> bool:
    """Whether any of ``loggers`` shows figures: W&B or TensorBoard."""
    return has_wandb(loggers) or any(isinstance(lg, TensorBoardLogger) for lg in loggers)


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


def figure_pixels(figure: Any) -> Any:
    """An RGB uint8 array (height x width x 3) of a matplotlib Figure or of a PNG file."""
    import numpy as np

    if isinstance(figure, (str, os.PathLike)):
        from matplotlib.image import imread

        pixels = imread(os.fspath(figure))
        if pixels.dtype != np.uint8:
            pixels = (pixels * 255).round().astype(np.uint8)
        return pixels[..., :3]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_to_tensorboard(
    loggers: list[Logger], build: Callable[[], Mapping[str, Any]], step: int
) -> None:
    """Add ``build()`` (tag -> matplotlib Figure or PNG path) as images to every TensorBoard
    logger (rank 0), building them only if there is one. Nothing here propagates: figures are a
    view, and training goes on (one warning) when drawing or writing them fails."""
    if rank_zero_only.rank != 0:
        return
    writers = [lg.experiment for lg in loggers if isinstance(lg, TensorBoardLogger)]
    if not writers:
        return
    try:
        images = {tag: figure_pixels(figure) for tag, figure in build().items()}
    except Exception as err:  # a figure that cannot be drawn must not stop training
        warn(f"could not draw the barrier plots for TensorBoard ({_first_line(err)})")
        return
    for writer in writers:
        try:
            for tag, pixels in images.items():
                writer.add_image(tag, pixels, global_step=step, dataformats="HWC")
            writer.flush()
        except Exception as err:  # TensorBoard failing must not stop training
            warn(f"could not log barrier plots to TensorBoard ({_first_line(err)})")

def cli_config(trainer: pl.Trainer) -> dict[str, Any] | None:
    """The resolved ``lwlc fit`` config (from LightningCLI's SaveConfigCallback) as plain data."""
    from lightning.pytorch.cli import SaveConfigCallback

    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            try:
                return _saved_config(trainer, callback) or _dumped_config(callback)
            except Exception:  # an undumpable config is not worth failing a run over
                return None
    return None


def _saved_config(trainer: pl.Trainer, callback: Any) -> dict[str, Any] | None:
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


def _dumped_config(callback: Any) -> dict[str, Any]:
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


def record_run_info(trainer: pl.Trainer, info: Mapping[str, Any]) -> None:
    """Record ``info``, the config and the environment as hyper-parameters ``lwlc.<key>`` (each
    call records all of them: a later call replaces the key ``lwlc`` with a superset)."""
    record = {**info, "config": cli_config(trainer), "environment": environment(trainer)}
    for logger in trainer.loggers:
        try:
            if isinstance(logger, WandbLogger):
                logger.log_run_info(record)
            else:
                logger.log_hyperparams({"lwlc": record})
        except Exception as err:  # a logger that cannot store nested data must not stop training
            warn(f"{type(logger).__name__} could not record the run info ({_first_line(err)})")
