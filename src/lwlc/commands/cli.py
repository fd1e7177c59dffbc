"""lwlc's command line: LightningCLI for training, lazily imported modules for the other tools.

``lwlc fit|validate|test|predict`` run Lightning's Trainer from a YAML config; ``lwlc analyze``
and the other tools are ``lwlc.<tool>.main(argv)``. Every LwlcError, and every config error,
ends as one line ``lwlc: error: <message>`` and exit code 2; ``--debug`` (or LWLC_DEBUG=1) shows
the traceback instead.
"""

import functools
import importlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

from lwlc.core.errors import LwlcError
from lwlc.lazy import defer_transformers

LIGHTNING_COMMANDS = {
    "fit": "train a model (a pair of networks or one network) from a config",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split",
    "predict": "write the logits of a checkpoint",
}
TOOL_COMMANDS = {
    "analyze": "layer-wise barriers between the two networks of a checkpoint",
    "plot": "draw the figures of an analysis",
    "merge": "average chosen layers of two checkpoints into a new one",
    "experiment": "run one of the paper's experiment recipes",
}
DEBUG_FLAG = "--debug"
OVERWRITE_FLAG = "--overwrite"
OVERWRITE_HELP = (
    f"{OVERWRITE_FLAG}: a folder (trainer.default_root_dir) holds one run; lwlc fit refuses one "
    "that holds an earlier run's files (checkpoints, barriers, logs, wandb, config.yaml) unless it "
    f"continues that run (--ckpt_path inside the folder). {OVERWRITE_FLAG} removes those files "
    "first (only those) and trains anew."
)
KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false"}


def order_seeds(order_seed_a: int, order_seed_b: int) -> list[int]:
    """The data module's order seeds for a pair: one stream per distinct seed."""
    return [order_seed_a] if order_seed_a == order_seed_b else [order_seed_a, order_seed_b]


def _lightning_cli() -> Callable[[list[str]], None]:
    """A runner of lwlc's LightningCLI (built on first use: importing Lightning takes seconds)."""
    import torch
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from lwlc import checkpoint_io
    from lwlc.commands import rundir
    from lwlc.formats.checkpoints import check_lightning_run
    from lwlc.loggers import WandbLogger, check_logger_packages, folder_run_id, record_run_info
    from lwlc.training import PairedModule
    from lwlc.training.schedules import RunSchedule, lightning_entry

    class SaveConfig(SaveConfigCallback):
        """Lightning's config saver, for one run per folder: a fit replaces the config of the
        run it continues (lwlc fit refused any other run's folder before), validate, test and
        predict keep the fit's; the fit's config is also recorded once, as ``lwlc.config``."""

        def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
            self.overwrite = stage == "fit"
            # Trainer.log_dir broadcasts: read it here, on every rank, never in rank 0's
            # save_config (the other ranks would not join and DDP would hang).
            saved = os.path.join(trainer.log_dir or ".", self.config_filename)
            self.config_path = saved
            if self.overwrite or not os.path.isfile(saved):
                super().setup(trainer, pl_module, stage)

        def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
            if stage == "fit":
                record_run_info(trainer, {})

    class LwlcCLI(LightningCLI):
        """LightningCLI with lwlc's checkpoints and the pair's order-seed link.

        Checkpoints go to ``<default_root_dir>/checkpoints/``: ``last.ckpt`` after every epoch
        and ``best-epoch=E-step=S.ckpt`` by ``a/val/acc`` (pairs) or ``val/acc``, each written
        atomically (``lwlc.checkpoint_io``). The folder holds one run
        (``lwlc.commands.rundir``): a fit into another run's folder is refused unless
        ``overwrite``; loggers without a save_dir write there, and every later command
        there continues the run's W&B run.
        """

        def __init__(self, *args: Any, overwrite: bool, started: dict[str, Any], **kwargs: Any):
            self.overwrite = overwrite
            self.started = started  # the trainer of a fit in a fresh folder, for run() to clean
            self.continues = False
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument(
                "--num_threads",
                type=int | None,
                default=None,
                help="CPU threads for torch (torch.set_num_threads); 1 is fastest for tiny "
                "models on a busy machine. Default: torch's choice.",
            )
            # Lightning (2.6) refreshes save_last's last.ckpt only when a top-k checkpoint is
            # saved, i.e. when the monitored metric improves; so last.ckpt is a checkpoint of its
            # own, without monitor, rewritten every epoch, and the best one is another.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.filename": "last", "checkpoint.save_top_k": 1})
            parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
            parser.set_defaults(
                {"best_checkpoint.filename": "best-{epoch}-{step}", "best_checkpoint.mode": "max"}
            )
            parser.link_arguments(
                ("model.init_args.order_seed_a", "model.init_args.order_seed_b"),
                "data.init_args.order_seeds",
                compute_fn=order_seeds,
            )

        def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
            """Parse, then make checkpoint loading safe before Lightning reads ``--ckpt_path``."""
            super().parse_arguments(parser, args)
            if self.config.get("subcommand"):
                # fit continues training, so the checkpoint must hold what the config trains;
                # validate/test/predict evaluate the checkpoint's own model (e.g. a merge output)
                subcommand = self.config.subcommand
                config = self.config[subcommand]
                paired = issubclass(_model_class(config), PairedModule)
                check_lightning_run(config, paired if subcommand == "fit" else None)

        def before_instantiate_classes(self) -> None:
            """Apply num_threads; default the checkpoint directory and best's metric."""
            config = self.config[self.subcommand] if self.subcommand else self.config
            _check_accelerator(config.trainer.accelerator)
            check_logger_packages(config.trainer.logger)
            if config.num_threads is not None:
                torch.set_num_threads(config.num_threads)
            root = config.trainer.default_root_dir or os.getcwd()
            for checkpoint in (config.checkpoint, config.best_checkpoint):
                if checkpoint.dirpath is None:
                    checkpoint.dirpath = os.path.join(root, "checkpoints")
            loggers = _logger_specs(config.trainer.logger)
            for spec in loggers:
                if "save_dir" in spec.init_args and spec.init_args.save_dir is None:
                    spec.init_args.save_dir = root
            dirs = [config.checkpoint.dirpath, config.best_checkpoint.dirpath]
            self.continues = rundir.continues(root, dirs, config.ckpt_path)
            if self.subcommand != "fit" or self.continues:
                for spec in loggers:
                    if spec.class_path == "lwlc.loggers.WandbLogger" and not spec.init_args.version:
                        spec.init_args.version = folder_run_id(spec.init_args.save_dir or ".")
            data_args = getattr(config.get("data"), "init_args", None) or {}
            if config.best_checkpoint.monitor is None and data_args.get("val_size", 0.1) == 0:
                # No validation split (the paper configs train on all 50k): nothing to rank a
                # best checkpoint by, so only last.ckpt is kept (no warning every epoch).
                config.best_checkpoint.save_top_k = 0
            elif config.best_checkpoint.monitor is None:
                paired = issubclass(_model_class(config), PairedModule)
                config.best_checkpoint.monitor = "a/val/acc" if paired else "val/acc"

        @staticmethod
        def configure_optimizers(
            lightning_module: LightningModule, optimizer: Any, lr_scheduler: Any = None
        ) -> Any:
            """Lightning's, but an lwlc schedule (``RunSchedule``) spans this run: its length is
            the trainer's optimizer steps (unless its total_steps is set), and it is stepped
            after each of them."""
            if not isinstance(lr_scheduler, RunSchedule):
                return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)
            schedule = lightning_entry(lr_scheduler, lightning_module.trainer)
            return {"optimizer": optimizer, "lr_scheduler": schedule}

        def instantiate_trainer(self, **kwargs: object) -> Trainer:
            """Lightning's Trainer, saving its checkpoints atomically beside their target (also
            with the user's own plugins and under DDP; a CheckpointIO the user chose is kept)."""
            trainer = super().instantiate_trainer(**kwargs)
            checkpoint_io.install(trainer.strategy)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):  # SaveConfig records the whole config
                    logger.lightning_hparams = False
            if self.subcommand == "fit" and rank_zero_only.rank == 0:
                self._claim_folder(trainer)
            return trainer

        def _claim_folder(self, trainer: Trainer) -> None:
            """Make the fit's folder hold this run only: refuse an earlier run's files, or
            remove them with ``overwrite``; a resume continues the run already there."""
            root, ckpt_path = trainer.default_root_dir, self.config.fit.ckpt_path
            if self.continues:
                if self.overwrite:
                    raise LwlcError(
                        f"{OVERWRITE_FLAG} would remove the run that --ckpt_path {ckpt_path} "
                        f"continues: drop {OVERWRITE_FLAG} to resume it, or copy the checkpoint "
                        "out of the folder to train anew from it"
                    )
                return
            filename = self.save_config_kwargs.get("config_filename", "config.yaml")
            earlier = rundir.run_files(trainer, filename)
            if earlier and not self.overwrite:
                last = os.path.join(self.config.fit.checkpoint.dirpath, "last.ckpt")
                resume = f"resume it with --ckpt_path {last}, " if os.path.isfile(last) else ""
                raise LwlcError(
                    f"{root} holds an earlier run ({rundir.describe(earlier, root)}): {resume}"
                    f"add {OVERWRITE_FLAG} to replace it, or choose another "
                    "--trainer.default_root_dir"
                )
            rundir.remove(earlier, root)
            self.started["fresh"] = trainer

    def run(args: list[str]) -> None:
        _silence_upstream_noise()
        # --overwrite is a flag of this command, not a config key (a saved config must never
        # carry it into the next run), and the DDP ranks Lightning starts do not need it.
        overwrite = args[:1] == ["fit"] and OVERWRITE_FLAG in args
        args = [a for a in args if a != OVERWRITE_FLAG] if overwrite else args
        # LightningCLI reads sys.argv, and so does Lightning's DDP launcher when it starts the
        # other ranks: both must see exactly these arguments (in-process callers pass others).
        saved_argv = sys.argv
        sys.argv = [saved_argv[0], *args]
        started: dict[str, Any] = {}
        try:
            try:
                LwlcCLI(
                    LightningModule,
                    LightningDataModule,
                    subclass_mode_model=True,
                    subclass_mode_data=True,
                    save_config_callback=SaveConfig,
                    parser_class=short_help(LightningArgumentParser),
                    parser_kwargs={"exit_on_error": False, "fit": {"epilog": OVERWRITE_HELP}},
                    overwrite=overwrite,
                    started=started,
                )
            except BaseException:
                _forget_failed_start(started.get("fresh"))
                raise
        except MisconfigurationException as err:  # Lightning's word for a setting that can't work
            raise LwlcError(_one_line(str(err))) from err
        except RuntimeError as err:
            reason = _state_dict_error(str(err))
            if reason is None:
                raise
            raise LwlcError(reason) from err
        finally:
            sys.argv = saved_argv

    return run


def _logger_specs(value: Any) -> list[Any]:
    """The ``class_path``/``init_args`` entries of a parsed ``trainer.logger`` (one or a list;
    ``true``/``false`` have none)."""
    specs = value if isinstance(value, list) else [value]
    return [s for s in specs if getattr(s, "class_path", None) and s.get("init_args") is not None]


def _forget_failed_start(trainer: Any) -> None:
    """After a fit into a fresh folder failed before its first optimizer step (a setting that
    does not work, a data set missing, Ctrl-C), remove what it wrote there (its W&B run, logs,
    config), so that the folder is fresh again for the corrected command. Best effort: the
    failure itself is what the user must see."""
    if trainer is None or trainer.global_step > 0:
        return
    from lwlc.commands import rundir

    try:
        rundir.remove(rundir.run_files(trainer), trainer.default_root_dir)
    except OSError:
        pass


def _check_accelerator(accelerator: object) -> None:
    """A GPU accelerator on a machine without CUDA is a one-line user error, not a traceback."""
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise LwlcError(
            f"--trainer.accelerator {accelerator} requested but CUDA is not available on this "
            "machine: use --trainer.accelerator cpu (or auto)"
        )


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def _silence_upstream_noise() -> None:
    """Drop three messages of Lightning that tell a user nothing: an advert, the deprecation of
    a torch API that Lightning itself calls, and that a config's ``optimizer:`` replaces the
    module's default optimizer (which is what that key is for)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*configure_optimizers` will be overridden by.*")


def _model_class(config: Any) -> type:
    """The LightningModule class the user's config names (their own choice: importing it is
    theirs)."""
    module, _, name = config.model.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _state_dict_error(message: str) -> str | None:
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
        what = f"{keys.group(2)} is only in {where}" if keys else _one_line(message)[:200]
    return (
        f"--ckpt_path does not fit the model of your config: {what}; use the config the "
        "checkpoint was trained with (its hparams.yaml or config.yaml)"
    )


def _tool(name: str) -> Callable[[list[str]], None]:
    """``lwlc.commands.<name>.main``, or a one-line LwlcError when that tool is not installed."""
    try:
        module = importlib.import_module(f"lwlc.commands.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"lwlc.commands.{name}":
            raise
        raise LwlcError(
            f"'lwlc {name}' is not available in this version (no module lwlc.commands.{name})"
        ) from None
    return module.main


def _usage() -> str:
    commands = {**LIGHTNING_COMMANDS, **TOOL_COMMANDS}
    lines = [f"  {name:<11} {text}" for name, text in commands.items()]
    return "\n".join(
        [
            "usage: lwlc <command> [options]   (lwlc <command> --help for its options)",
            "",
            "commands:",
            *lines,
            "",
            f"{DEBUG_FLAG} (or LWLC_DEBUG=1) shows tracebacks instead of one-line errors.",
        ]
    )


def _dispatch(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        _lightning_cli()(argv)
    elif command in TOOL_COMMANDS:
        _tool(command)(rest)
    else:
        available = ", ".join([*LIGHTNING_COMMANDS, *TOOL_COMMANDS])
        raise LwlcError(f"unknown command {command!r}; available: {available}")


def _user_error(err: BaseException) -> LwlcError | None:
    """The LwlcError behind ``err`` (itself or a cause), if any; a full disk met by a write
    outside lwlc.formats.io (Lightning's logs, its config file) is one too."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LwlcError):
            return err
        if isinstance(err, OSError):
            from lwlc.formats.io import (
                disk_full_error,  # imports torch: only where it can be needed
            )

            full = disk_full_error(err)
            if full is not None:
                return full
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _one_line(message: str) -> str:
    """A multi-line message squeezed onto one line."""
    return re.sub(r"\s+", " ", message).strip()


def config_error(message: str) -> str:
    """jsonargparse's error as one short line: the full key at fault and the innermost reason.

    For a subclass-typed key jsonargparse lists why each alternative of ``Union[cls, None]``
    failed; only the class's reason is kept, e.g.
    ``model.init_args.model: Option 'widht' is not accepted``.
    """
    full = _one_line(message)
    text = full.split(" - Expected a <class 'NoneType'>")[0]
    keys = re.findall(r'Parser key "([^"]+)"', text)
    wrong = re.search(r"Expected a <class '(int|float|bool)'>.*?(?:Given|Got) value: (\S+)", full)
    if keys and wrong and "class_path" not in full:
        kind, value = wrong.groups()
        note = (
            " (NaN and infinity are not numbers here)"
            if value.lower().lstrip("+-") in ("nan", "inf", "infinity")
            else ""
        )
        return f"{'.init_args.'.join(keys)}: expected {KINDS[kind]}, got {value!r}{note}"
    reason = re.split(r"Problem with given class_path '[^']*': |Parser key \"[^\"]+\": ", text)[-1]
    reason = reason.split("Errors: - ")[-1]
    return f"{'.init_args.'.join(keys)}: {reason}" if keys else reason


@functools.cache
def short_help(parser_class: type) -> type:
    """``parser_class`` (a jsonargparse parser) whose help leaves out the list of every known
    subclass of a class-typed option (``--model`` listed every ``nn.Module`` in torch, 700 lines
    of ``--help``) and the types beside the defaults. A subclass of the parser, since
    ``--model.help CLASS`` builds a parser of the same type."""
    from jsonargparse import DefaultHelpFormatter

    class ShortHelp(DefaultHelpFormatter):
        def _get_help_string(self, action: Any) -> str:
            text = re.sub(r", known subclasses: [^)]*", "", super()._get_help_string(action))
            return re.sub(r"\(type: .*?, default: ", "(default: ", text)

    class ShortHelpParser(parser_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", ShortHelp)
            super().__init__(*args, **kwargs)

    return ShortHelpParser


def argument_error(err: Exception, command: str) -> LwlcError:
    """A tool's (``lwlc analyze``, ...) jsonargparse error as one line naming the flag."""
    reason = config_error(str(err))
    flag = re.match(r"([\w.]+): ", reason)
    if flag and "." not in flag.group(1):
        reason = f"--{flag.group(1).replace('_', '-')}{reason[flag.end(1) :]}"
    return LwlcError(f"{reason} (see lwlc {command} --help)")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lwlc`` command."""
    defer_transformers()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("LWLC_DEBUG") == "1"
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    from jsonargparse import ArgumentError

    try:
        _dispatch(argv)
    except ArgumentError as err:
        if debug:
            raise
        _fail(f"invalid configuration: {config_error(str(err))}")
    except Exception as err:
        user_error = _user_error(err)
        if debug or user_error is None:
            raise
        _fail(_one_line(str(user_error)))


def _fail(message: str) -> None:
    print(f"lwlc: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
