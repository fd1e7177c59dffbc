"""``LayerwiseBarrierCallback``: layer-wise barriers between two networks while they train.

At the moments its schedule names, the Callback measures the two current networks with the
engine of ``lwlc analyze`` (``lwlc.tracking.measure``), keeps the rows as one history (saved in
every checkpoint, so a resumed run goes on without gaps or duplicates), appends them to
``curves.csv``/``barriers.csv`` in its directory and logs scalars to every logger; every few
evaluations, and after the last one (at the end of fit or an interrupt), it refreshes W&B's
heatmaps (HTML tables), and after the last it logs W&B's line charts (nothing is drawn for
W&B); with ``figures`` (or TensorBoard) it draws the heatmap PNGs from ``barriers.csv`` once,
after the last evaluation (``lwlc.tracking.publish``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from lwlc.core.barriers import REFERENCES
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import REST_FROM
from lwlc.core.spec import MeasureSpec
from lwlc.notices import first_line, warn
from lwlc.results.sinks import has_media, has_tensorboard
from lwlc.run_records import record_run_info
from lwlc.tracking.files import OUTPUTS, ResultFiles
from lwlc.tracking.history import History
from lwlc.tracking.measure import Measurement, reference_network, split_tensors
from lwlc.tracking.publish import Media, log_scalars
from lwlc.tracking.schedule import Schedule

# What analyze measures, on the first 1000 samples: an evaluation every epoch must stay cheap.
DEFAULT_SPEC = MeasureSpec(max_samples=1000)


class LayerwiseBarrierCallback(Callback):
    r"""Measure full-model and layer-wise barriers between two networks during training.

    Compares ``net_a`` and ``net_b`` of a :class:`~lwlc.training.PairedModule`, or the ``net`` of a
    single-network module (A) with the network in ``reference_ckpt`` (B).

    Args:
        spec: the measurement, a :class:`lwlc.MeasureSpec` (in a config, one key per field under
            ``spec:``); default: analyze's, on the first 1000 samples of each split.
        every_n_epochs: evaluate after every n-th completed epoch, epoch 0 (the initialisation)
            included; None: never.
        every_n_steps: evaluate every n optimizer steps; None: never.
        at_epochs: also evaluate after these completed epochs (0 = before training).
        at_fit_end: also evaluate when training ends.
        reference: barrier reference of the heatmaps and charts: ``midpoint`` (the paper's, needs
            0.5 among the alphas), ``path`` or ``models``; the CSVs and scalars hold all of them.
        max_batches: evaluate on at most this many batches of ``spec.batch_size`` samples.
        reference_ckpt: checkpoint (or state dict / safetensors) to compare a single network with.
        reference_member: the member (``a`` or ``b``) to use when ``reference_ckpt`` is a pair.
        dirpath: where the CSVs and figures go; default ``<default_root_dir>/barriers``.
        media_every: refresh W&B's heatmaps (HTML tables) every n evaluations; the last
            evaluation is always shown, at the end of fit or an interrupt, with W&B's line chart
            of the full model's and every single layer's barrier (a table W&B serialises cell
            by cell).
        figures: draw the heatmap PNGs into ``dirpath`` at the end of fit (and after an
            interrupt), from ``barriers.csv``; with TensorBoard they are always drawn (it shows
            them). Without, ``lwlc plot <dirpath>`` draws them from the CSVs later.

    Subclasses may override :meth:`should_evaluate` for any other schedule.
    """

    def __init__(
        self,
        spec: MeasureSpec = DEFAULT_SPEC,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        at_epochs: list[int] | tuple[int, ...] = (),
        at_fit_end: bool = True,
        reference: str = "midpoint",
        max_batches: int | None = None,
        reference_ckpt: str | None = None,
        reference_member: str = "a",
        dirpath: str | None = None,
        media_every: int = 5,
        figures: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(spec, MeasureSpec):
            raise LwlcError(f"LayerwiseBarrierCallback spec must be a MeasureSpec, got {spec!r}")
        self.spec = spec
        self.schedule = Schedule(
            every_n_epochs, every_n_steps, list(at_epochs), at_fit_end, media_every
        )
        _check_choice("reference", reference, REFERENCES)
        _check_choice("reference_member", reference_member, REST_FROM)
        if reference == "midpoint" and 0.5 not in spec.grid:
            raise LwlcError(
                f"LayerwiseBarrierCallback reference='midpoint' needs 0.5 among the alphas, got "
                f"{spec.grid}: add 0.5 or use reference='path'"
            )
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise LwlcError(f"LayerwiseBarrierCallback max_batches={max_batches!r} must be >= 1")
        self.reference, self.max_batches = reference, max_batches
        self.reference_ckpt, self.reference_member = reference_ckpt, reference_member
        self.dirpath, self.figures = dirpath, figures
        self.history = History()
        self.measurement: Measurement | None = None
        self.files = ResultFiles(Path(dirpath or "barriers"), bool(spec.measures))
        self.media = Media(reference, spec.splits)
        self.info: dict[str, Any] = {}
        self.show_media = False
        self.drawn: tuple[int | None, list[Path]] = (None, [])  # history revision, PNGs

    def should_evaluate(self, step: int | None = None, epoch: int | None = None) -> bool:
        """Whether to evaluate after optimizer step ``step`` or after ``epoch`` completed epochs
        (called with one of them, as Lightning's ``WeightAveraging.should_update``)."""
        return self.schedule.should_evaluate(step=step, epoch=epoch)

    @property
    def sample_budget(self) -> int | None:
        """Samples evaluated per split: ``max_samples`` or ``max_batches`` batches, the smaller."""
        batches = self.max_batches * self.spec.batch_size if self.max_batches else None
        budgets = [n for n in (self.spec.max_samples, batches) if n]
        return min(budgets) if budgets else None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(reference_ckpt=self.reference_ckpt, dirpath=self.dirpath)

    def output_dir(self, trainer: pl.Trainer) -> Path:
        """``dirpath``, else ``<default_root_dir>/barriers``."""
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "barriers"

    def run_files(self, trainer: pl.Trainer) -> list[Path]:
        """The files an earlier run left in the Callback's directory (lwlc.commands.rundir asks)."""
        return sorted({p for pattern in OUTPUTS for p in self.output_dir(trainer).glob(pattern)})

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Resolve the pair, the data and the paths, once fit starts."""
        if stage != "fit":
            return
        member = self.reference_member
        net, pairing, state = reference_network(pl_module, self.reference_ckpt, member)
        data = split_tensors(trainer, self.spec, self.sample_budget)
        self.measurement = found = Measurement.build(self.spec, net, pl_module, data, state)
        self.files = ResultFiles(self.output_dir(trainer), bool(self.spec.measures))
        options = {"reference": self.reference, "max_batches": self.max_batches}
        options |= {**self.spec.as_dict(), **asdict(self.schedule)}
        self.info = {"pairing": pairing, **found.describe(), "options": options}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        barriers = self.files.directory / "barriers.csv"
        if trainer.is_global_zero and not self.history.barriers and barriers.exists():
            warn(
                f"{self.files.directory} holds an earlier run's barriers; this run replaces "
                "them (set the Callback's dirpath to keep both)"
            )
        # summary.json holds the info; a file logger's hparams.yaml has the config from the CLI.
        record_run_info(trainer, {"barriers": self.info}, dashboards_only=True)
        self._write_summary(trainer, "running")
        self.show_media = has_media(trainer.loggers)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Fresh run: the initialisation (epoch 0). Resumed run: an evaluation the checkpoint missed.
        self._at_epoch(trainer, pl_module, trainer.current_epoch)
        step = trainer.global_step
        if self.should_evaluate(step=step) and not self.history.recorded(step):
            self._evaluate(trainer, pl_module, trainer.current_epoch)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if self.should_evaluate(step=step) and not self.history.recorded(step):
            # After an epoch's last batch the weights are those of the completed epoch.
            last = batch_idx + 1 >= trainer.num_training_batches
            self._evaluate(trainer, pl_module, trainer.current_epoch + int(last))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        completed = trainer.current_epoch + 1
        self.history.relabel(trainer.global_step, completed)
        self._at_epoch(trainer, pl_module, completed)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.at_fit_end and not self.history.recorded(trainer.global_step):
            self._evaluate(trainer, pl_module, trainer.current_epoch)
        self._finish(trainer, "complete")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """An interrupt (Ctrl-C) or a failure: bring the CSVs, figures and summary up to date."""
        if self.measurement is not None:
            self._finish(trainer, "interrupted")

    # ------------------------------------------------------------ evaluation
    def _at_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, completed: int) -> None:
        """Evaluate after ``completed`` epochs when scheduled, once even across a resume."""
        if completed not in self.history.done_epochs and self.should_evaluate(epoch=completed):
            self.history.done_epochs.add(completed)
            if not self.history.recorded(trainer.global_step):
                self._evaluate(trainer, pl_module, completed)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        """Measure, record, and on rank 0 write, log and (on the media schedule) draw."""
        assert self.measurement is not None, "setup() runs before any evaluation"
        started = time.perf_counter()
        curves, barriers, extras = self.measurement.evaluate(
            trainer, pl_module, f"barriers (epoch {epoch})"
        )
        barriers = self.history.add(epoch, trainer.global_step, curves, barriers, extras)
        if not trainer.is_global_zero:
            return
        self.files.write(self.history)
        measured = self.history.measures[len(self.history.measures) - len(extras) :]
        log_scalars(trainer, barriers, measured, self.spec.splits, time.perf_counter() - started)
        evaluations = len(self.history.evaluations())
        if self.show_media and self.schedule.should_draw(evaluations):
            self.media.refresh(trainer, self.history, self.info)

    def _finish(self, trainer: pl.Trainer, status: str) -> None:
        """The CSVs, every figure and the summary, up to date with the whole history (rank 0)."""
        if not trainer.is_global_zero:
            return
        if self.history.barriers:
            self.files.write(self.history)
            heatmaps = self._draw(trainer)
            if self.show_media:
                self.media.refresh(trainer, self.history, self.info, heatmaps)
        self._write_summary(trainer, status)

    def _draw(self, trainer: pl.Trainer) -> list[Path]:
        """The heatmap PNGs (and ``distances.png``) of the whole history, drawn once per
        history from the CSVs, when ``figures`` is set or TensorBoard shows them; a figure that
        cannot be drawn warns, and the run ends as it would."""
        if not (self.figures or has_tensorboard(trainer.loggers)):
            return []
        if self.drawn[0] == self.history.revision:
            return self.drawn[1]
        distances = self.figures and "weights" in self.spec.measures
        try:
            paths = self.files.draw(self.reference, self.info, distances=distances)
        except Exception as err:  # a view: never worth losing a run's end for
            warn(f"could not draw the barrier heatmaps ({first_line(err)})")
            paths = []
        self.drawn = (self.history.revision, paths)
        return paths

    def _write_summary(self, trainer: pl.Trainer, status: str) -> None:
        if trainer.is_global_zero:  # the memory plan: the last evaluation's
            memory = self.measurement.memory if self.measurement else {}
            self.files.write_summary(self.info, status, self.history, memory)

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The history, for the checkpoint."""
        return self.history.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.load_state_dict(state_dict)


def _check_choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise LwlcError(
            f"LayerwiseBarrierCallback got unknown {name} value {value!r}; "
            f"choose from {', '.join(choices)}"
        )
