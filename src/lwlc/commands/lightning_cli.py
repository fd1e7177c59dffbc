"""``lwlc fit|validate|test|predict``: lwlc's LightningCLI and its config saver.

Imported by the dispatcher (``lwlc.commands.cli``) only for those four commands, since
importing Lightning takes seconds. Checkpoints go to ``<default_root_dir>/checkpoints/``,
written atomically (``lwlc.checkpoint_io``); the folder holds one run (``lwlc.commands.rundir``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lwlc import checkpoint_io
from lwlc.commands import lightning_cache, rundir
from lwlc.commands.errors import one_line, short_help
from lwlc.commands.lightning_setup import (
    OVERWRITE_FLAG,
    OVERWRITE_HELP,
    check_accelerator,
    check_data,
    cpu_precision,
    duration,
    forget_failed_start,
    from_checkpoint,
    logger_specs,
    model_class,
    resume_hint,
    silence_upstream_noise,
    state_dict_error,
)
from lwlc.core.errors import LwlcError
from lwlc.data import import_all
from lwlc.formats.checkpoints import check_lightning_run
from lwlc.loggers import WandbLogger, check_logger_packages, folder_run_id, own_checkpoint
from lwlc.run_records import record_run_info
from lwlc.training import PairedModule
from lwlc.training.schedules import RunSchedule, lightning_entry


def order_seeds(order_seed_a: int, order_seed_b: int) -> list[int]:
    """The data module's order seeds for a pair: one stream per distinct seed."""
    return [order_seed_a] if order_seed_a == order_seed_b else [order_seed_a, order_seed_b]


class SaveConfig(SaveConfigCallback):
    """Lightning's config saver, for one run per folder: a fit replaces the config of the run it
    continues (lwlc fit refused any other run's folder before), validate, test and predict keep
    the fit's; the fit's config is also recorded once, as ``lwlc.config``."""

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


class ResumeHint(Callback):
    """After Ctrl-C during fit, print the command that resumes the run from its last.ckpt."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, err: BaseException
    ) -> None:
        if isinstance(err, KeyboardInterrupt) and trainer.is_global_zero:
            print(resume_hint(sys.argv[1:], self.dirpath), file=sys.stderr)


class EpochEstimate(Callback):
    """After the first epoch of a fit, one line estimating how long the whole run takes (200
    epochs on a CPU take days: better to know after one)."""

    def __init__(self) -> None:
        self.started: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.started is None or self.started < 0:
            return
        took, self.started = time.monotonic() - self.started, -1.0
        left = trainer.max_epochs - trainer.current_epoch - 1 if trainer.max_epochs else 0
        if left > 0 and trainer.is_global_zero:
            print(
                f"lwlc: epoch {trainer.current_epoch + 1} of {trainer.max_epochs} took "
                f"{duration(took)}: the {left} left take about {duration(took * left)}"
            )


class LwlcCLI(LightningCLI):
    """LightningCLI with lwlc's checkpoints and the pair's order-seed link.

    Checkpoints go to ``<default_root_dir>/checkpoints/``: ``last.ckpt`` after every epoch and
    ``best-epoch=E-step=S.ckpt`` by ``a/val/acc`` (pairs) or ``val/acc``. The folder holds one
    run: a fit into another run's folder is refused unless ``overwrite``; loggers without a
    save_dir write there, and every later command there continues the run's W&B run.
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
        """Parse, then make checkpoint loading safe before Lightning reads ``--ckpt_path``;
        the options are recorded first, for answers without Lightning (lightning_cache)."""
        lightning_cache.record_options(parser)
        super().parse_arguments(parser, args)
        if self.config.get("subcommand"):
            # fit continues training, so the checkpoint must hold what the config trains;
            # validate/test/predict evaluate the checkpoint's own model (e.g. a merge output)
            subcommand = self.config.subcommand
            config = self.config[subcommand]
            paired = issubclass(model_class(config), PairedModule)
            check_lightning_run(config, paired if subcommand == "fit" else None)

    def before_instantiate_classes(self) -> None:
        """Check the machine and settings; default the checkpoint directory and best's metric."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_accelerator(config.trainer.accelerator)
        cpu_precision(config.trainer)
        check_logger_packages(config.trainer.logger)
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        root = config.trainer.default_root_dir or os.getcwd()
        if not os.path.exists(root):
            self.started["new_root"] = root  # removed again if the command fails while empty
        for checkpoint in (config.checkpoint, config.best_checkpoint):
            if checkpoint.dirpath is None:
                checkpoint.dirpath = os.path.join(root, "checkpoints")
        self._default_loggers(config, root)
        data_args = getattr(config.get("data"), "init_args", None) or {}
        if config.best_checkpoint.monitor is None and data_args.get("val_size", 0.1) == 0:
            # No validation split (the paper configs train on all 50k): nothing to rank a
            # best checkpoint by, so only last.ckpt is kept (no warning every epoch).
            config.best_checkpoint.save_top_k = 0
        elif config.best_checkpoint.monitor is None:
            paired = issubclass(model_class(config), PairedModule)
            config.best_checkpoint.monitor = "a/val/acc" if paired else "val/acc"

    def _default_loggers(self, config: Any, root: str) -> None:
        """Loggers without a save_dir write into the run's folder; a command continuing a run
        (not a fresh fit) continues its W&B run."""
        loggers = logger_specs(config.trainer.logger)
        for spec in loggers:
            if "save_dir" in spec.init_args and spec.init_args.save_dir is None:
                spec.init_args.save_dir = root
        dirs = [config.checkpoint.dirpath, config.best_checkpoint.dirpath]
        self.continues = rundir.continues(root, dirs, config.ckpt_path)
        # W&B: a resumed fit, or a validate/test/predict of the run's own checkpoint, goes on
        # in the folder's run; anything else (a merged checkpoint) starts a run of its own.
        fit = self.subcommand == "fit"
        same = self.continues if fit else own_checkpoint(config.ckpt_path, dirs)
        if same:
            for spec in loggers:
                if spec.class_path == "lwlc.loggers.WandbLogger" and not spec.init_args.version:
                    spec.init_args.version = folder_run_id(spec.init_args.save_dir or ".")

    @staticmethod
    def configure_optimizers(
        lightning_module: LightningModule, optimizer: Any, lr_scheduler: Any = None
    ) -> Any:
        """Lightning's, but an lwlc schedule (``RunSchedule``) spans this run: its length is the
        trainer's optimizer steps (unless its total_steps is set), stepped after each of them."""
        if not isinstance(lr_scheduler, RunSchedule):
            return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)
        schedule = lightning_entry(lr_scheduler, lightning_module.trainer)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def instantiate_trainer(self, **kwargs: object) -> Trainer:
        """Lightning's Trainer, once the data is found (before any logger starts), saving its
        checkpoints atomically beside their target (also with the user's own plugins and under
        DDP; a CheckpointIO the user chose is kept)."""
        check_data(self.datamodule)
        trainer = super().instantiate_trainer(**kwargs)
        checkpoint_io.install(trainer.strategy)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # SaveConfig records the whole config
                logger.lightning_hparams = False
        if self.subcommand == "fit":
            trainer.callbacks += [ResumeHint(self.config.fit.checkpoint.dirpath), EpochEstimate()]
        if self.subcommand == "fit" and rank_zero_only.rank == 0:
            self._claim_folder(trainer)
        return trainer

    def _claim_folder(self, trainer: Trainer) -> None:
        """Make the fit's folder hold this run only: refuse an earlier run's files, or remove
        them with ``overwrite``; a resume continues the run already there."""
        root, ckpt_path = trainer.default_root_dir, self.config.fit.ckpt_path
        from lwlc.formats import lock

        lock.acquire(root, "lwlc fit")
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
    """Run ``lwlc <fit|validate|test|predict> ...`` (``args`` starts with the subcommand)."""
    silence_upstream_noise()
    # --overwrite is a flag of this command, not a config key (a saved config must never carry
    # it into the next run), and the DDP ranks Lightning starts do not need it.
    overwrite = args[:1] == ["fit"] and OVERWRITE_FLAG in args
    args = [a for a in args if a != OVERWRITE_FLAG] if overwrite else from_checkpoint(args)
    # LightningCLI reads sys.argv, and so does Lightning's DDP launcher when it starts the other
    # ranks: both must see exactly these arguments (in-process callers pass others).
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], *args]
    try:
        _run_cli(overwrite)
    except MisconfigurationException as err:  # Lightning's word for a setting that can't work
        raise LwlcError(one_line(str(err))) from err
    except RuntimeError as err:
        reason = state_dict_error(str(err))
        if reason is None:
            raise
        raise LwlcError(reason) from err
    finally:
        sys.argv = saved_argv


def _run_cli(overwrite: bool) -> None:
    """LwlcCLI on ``sys.argv``; a fit that fails before its first step leaves no run behind."""
    started: dict[str, Any] = {}
    import_all()  # LightningCLI knows the data modules by short name (--data DigitsDataModule)
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
        forget_failed_start(started.get("fresh"), started.get("new_root"))
        raise
