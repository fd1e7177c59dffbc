"""``LayerwiseBarrierCallback``: layer-wise barriers between two networks while they train.

At scheduled moments the Callback hands the two current state dicts to the engine
(``lwlc.core.sweep``, the same computation as ``lwlc analyze``), stamps the result rows with the
epoch and step, keeps them as its history (saved in every checkpoint, so a resumed run goes on
without gaps or duplicates), appends them to ``curves.csv``/``barriers.csv`` in its directory
and logs scalars to every logger; with W&B it also refreshes curve plots, a table and the
layers x epochs heatmaps (at most every ``media_interval_s`` seconds, and at the end of fit
unless nothing changed since the last refresh).

Epochs are counted as *completed* epochs: epoch 0 is the initialisation (before any step),
epoch 1 the end of the first epoch, and so on, which is how the paper's heatmaps are labelled.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from tqdm import tqdm

from lwlc.core import layers
from lwlc.core.barriers import METRICS, REFERENCES
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import REST_FROM, InterpolationPath
from lwlc.core.measurement import ALIGNED, measure_extras, plan_paths, prepare
from lwlc.core.measures import MEASURE_COLUMNS
from lwlc.core.spec import MeasureSpec
from lwlc.core.sweep import BARRIER_COLUMNS, CURVE_COLUMNS, Rows, path_key
from lwlc.formats.checkpoints import read_checkpoint
from lwlc.formats.io import append_csv, write_csv, write_json
from lwlc.loggers import has_media, log_to_tensorboard, log_to_wandb, record_run_info, warn

# Everything the Callback (and ``lwlc plot`` of its folder) writes in its directory: the CSVs,
# the summary, the figures and the temporary files of an interrupted write.
FIGURES = ("heatmap_*.png", "curves_*.png", "barriers_*.png", "distances.png")
OUTPUTS = ("curves.csv", "barriers.csv", "measures.csv", "summary.json", *FIGURES, ".*.tmp")

TIME_COLUMNS = ("epoch", "step")
HISTORY_CURVE_COLUMNS = TIME_COLUMNS + CURVE_COLUMNS
HISTORY_BARRIER_COLUMNS = TIME_COLUMNS + BARRIER_COLUMNS
HISTORY_MEASURE_COLUMNS = TIME_COLUMNS + MEASURE_COLUMNS
# An evaluation that lasts longer than this shows a progress line.
PROGRESS_AFTER_S = 1.0
Data = dict[str, tuple[Tensor, Tensor]]


@contextmanager
def progress_line(description: str, total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm line on stderr that appears once the block has run ``PROGRESS_AFTER_S`` (a timer
    shows it even before the first update) and is erased when it ends; yields its update."""
    bar = tqdm(
        total=total,
        desc=description,
        unit="path",
        delay=PROGRESS_AFTER_S,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not show,
    )
    timer = threading.Timer(PROGRESS_AFTER_S, bar.refresh)
    timer.daemon = True
    if show:
        timer.start()
    try:
        yield bar.update
    finally:
        timer.cancel()
        if show:
            timer.join()
        bar.close()


def path_label(row: Mapping[str, Any]) -> str:
    """A path's short name: ``full``, ``single/<layer>``, ``single/<layer>/rest_b``."""
    parts = [str(row["plan"])]
    if row["plan"] != "full":
        parts.append(str(row["group"]))
    if row["rest_from"] == "b":
        parts.append("rest_b")
    return "/".join(parts)


def metric_name(row: Mapping[str, Any], metric: str, with_split: bool) -> str:
    """``barrier/<reference>/full/loss``, ``barrier/midpoint/single/<layer>/error``,
    ``barrier/<reference>/<split>/...``: the name says against what the barrier is taken."""
    split = f"{row['split']}/" if with_split else ""
    return f"barrier/{row['reference']}/{split}{path_label(row)}/{metric}"


def measure_metric_name(row: Mapping[str, Any]) -> str:
    """``measure/l2_distance/a-b/fc1``, ``measure/agreement/a-b/all/test``,
    ``measure/random_loss/a/fc1/test/alpha_0.5``."""
    name = f"measure/{row['measure']}/{row['between']}/{row['group']}"
    if row["split"]:
        name += f"/{row['split']}"
    if row["alpha"] not in ("", None):
        name += f"/alpha_{float(row['alpha']):g}"
    return name


def _check_positive(name: str, value: int | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        none = " or None" if allow_none else ""
        raise LwlcError(f"LayerwiseBarrierCallback {name}={value!r} must be an integer >= 1{none}")


def _check_choices(name: str, values: Sequence[str], choices: Sequence[str]) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    if not values:
        raise LwlcError(
            f"LayerwiseBarrierCallback {name} is empty; choose from {', '.join(choices)}"
        )
    bad = [v for v in values if v not in choices]
    if bad:
        raise LwlcError(
            f"LayerwiseBarrierCallback got unknown {name} value {bad[0]!r}; "
            f"choose from {', '.join(choices)}"
        )
    return list(dict.fromkeys(values))


class LayerwiseBarrierCallback(Callback):
    r"""Measure full-model and layer-wise barriers between two networks during training.

    Compares ``net_a`` and ``net_b`` of a :class:`~lwlc.training.PairedModule`, or the ``net`` of a
    single-network module (A) with the network in ``reference_ckpt`` (B).

    Args:
        every_n_epochs: evaluate after every n-th completed epoch, epoch 0 (the initialisation)
            included; None: never.
        every_n_steps: evaluate every n optimizer steps; None: never.
        at_epochs: also evaluate after these completed epochs (0 = before training), e.g.
            ``[0, 1, ..., 9]``.
        at_fit_end: also evaluate when training ends.
        The measurement options (``plans`` to ``align``, except ``reference`` and
        ``max_batches``) are :class:`lwlc.MeasureSpec`'s, with its defaults and checks, so the
        Callback measures what ``lwlc analyze`` measures (test split, rest from A and from B,
        every reference in the CSVs and in W&B); only ``max_samples`` differs (1000: an
        evaluation every epoch must stay cheap; None measures the whole split).

        plans: interpolation plans among ``full, single, cumulative_front, cumulative_back``.
        custom: named layer sets for the ``custom`` plan, e.g. ``{"body": ["features.*"]}``.
        groups: merge the layers matching each glob (or ``re:`` regex) into one group.
        group_depth: group layers by the first N parts of their module path (1: top-level blocks).
        alphas: the interpolation grid (must contain 0 and 1); default ``num_alphas`` even points.
        num_alphas: points of the default grid.
        splits: data splits to evaluate on (``train``, ``val``, ``test``); the first one is logged
            without a split prefix (``barrier/path/full/loss``), the others with it
            (``barrier/path/train/full/loss``).
        rest_from: where the layers that are not interpolated come from: ``a``, ``b`` or both.
        reference: barrier reference of the heatmaps: ``midpoint`` (the paper's heatmap value,
            needs 0.5 among the alphas), ``path`` or ``models``; the CSVs and W&B hold all of them,
            each metric named for its reference (``barrier/midpoint/single/fc1/loss``).
        bn: BatchNorm statistics of interpolated models: ``keep`` (interpolated) or ``reset``
            (recomputed).
        bn_samples: the first N training samples, in order, recompute BatchNorm statistics for
            ``bn="reset"``.
        bn_batch_size: their batch size (it sets the statistics, as ``lwlc analyze
            --bn-batch-size``; ``batch_size`` does not).
        max_samples: evaluate on the first N samples of each split (None: the whole split).
        max_batches: or on the first N evaluation batches (``batch_size`` samples each); with
            both, the smaller budget wins.
        batch_size: evaluation batch size (lowered to fit ``memory_budget``).
        chunk_size: paths evaluated together.
        memory_budget: GiB an evaluation may use (None: 80% of the free memory of the device).
        precision: ``fp32`` (exact), ``tf32`` or ``bf16``.
        align: also measure every path after permuting B's units to A's: ``weight-matching``.
        measures: also log, at every evaluation, ``weights`` (per-layer L2 distance and cosine
            similarity between A and B and from each to its weights when fit began),
            ``agreement`` of their predictions, ``robustness`` (A's loss along random
            directions); ``measures.csv`` and ``measure/...`` scalars; ``distances.png`` at
            the end of fit with ``figures``.
        robustness_seeds: random directions averaged per layer for ``robustness``.
        reference_ckpt: checkpoint (or state dict / safetensors) to compare a single network with.
        reference_member: the member (``a`` or ``b``) to use when ``reference_ckpt`` is a pair.
        dirpath: where the CSVs and figures go; default ``<default_root_dir>/barriers``.
        media_interval_s: with W&B, refresh the curve plots, the loss heatmap and the table
            after an evaluation when this many seconds have passed since the last refresh (or the
            start; 0: after every evaluation); at the end of fit, log those and the error heatmap
            unless already up to date. Scalars are logged after every evaluation; a refresh costs
            a few tenths of a second of drawing.
        figures: draw the heatmaps (loss, error) into ``dirpath`` at the end of fit, with or
            without W&B; ``lwlc plot`` draws them, and the curves and bars, at any time.

    Example::

        callback = LayerwiseBarrierCallback(at_epochs=range(10), every_n_epochs=20)
        trainer = Trainer(callbacks=[callback])
    """

    def __init__(
        self,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        at_epochs: Sequence[int] = (),
        at_fit_end: bool = True,
        plans: Sequence[str] = ("full", "single"),
        custom: Mapping[str, Sequence[str]] | None = None,
        groups: Sequence[str] = (),
        group_depth: int | None = None,
        alphas: Sequence[float] | None = None,
        num_alphas: int = MeasureSpec.num_alphas,
        splits: Sequence[str] = ("test",),
        rest_from: Sequence[str] = ("a", "b"),
        reference: str = "midpoint",
        bn: str = "keep",
        bn_samples: int = MeasureSpec.bn_samples,
        bn_batch_size: int = MeasureSpec.bn_batch_size,
        max_samples: int | None = 1000,
        max_batches: int | None = None,
        batch_size: int = MeasureSpec.batch_size,
        chunk_size: int = MeasureSpec.chunk_size,
        memory_budget: float | None = None,
        precision: str = "fp32",
        align: str = "none",
        measures: Sequence[str] = (),
        robustness_seeds: int = MeasureSpec.robustness_seeds,
        reference_ckpt: str | None = None,
        reference_member: str = "a",
        dirpath: str | None = None,
        media_interval_s: float = 30.0,
        figures: bool = True,
    ) -> None:
        super().__init__()
        # The measurement itself is lwlc.core.spec.MeasureSpec, checked there as for analyze.
        try:
            self.spec = MeasureSpec(
                plans=plans,
                custom=custom or {},
                group=[groups] if isinstance(groups, str) else list(groups),
                group_depth=group_depth,
                rest_from=rest_from,
                splits=splits,
                alphas=alphas,
                num_alphas=num_alphas,
                bn=bn,
                bn_samples=bn_samples,
                bn_batch_size=bn_batch_size,
                max_samples=max_samples,
                batch_size=batch_size,
                chunk_size=chunk_size,
                memory_budget=memory_budget,
                precision=precision,
                align=align,
                measures=measures,
                robustness_seeds=robustness_seeds,
            )
        except LwlcError as err:
            raise LwlcError(f"LayerwiseBarrierCallback {err}") from None
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("every_n_steps", every_n_steps),
            ("max_batches", max_batches),
        ):
            _check_positive(name, value)
        bad_epochs = [
            e for e in at_epochs if not isinstance(e, int) or isinstance(e, bool) or e < 0
        ]
        if bad_epochs:
            raise LwlcError(
                f"LayerwiseBarrierCallback at_epochs holds {bad_epochs[0]!r}; give counts of "
                "completed epochs >= 0 (0 = before training)"
            )
        if not (every_n_epochs or every_n_steps or at_epochs or at_fit_end):
            raise LwlcError(
                "LayerwiseBarrierCallback has nothing scheduled: set every_n_epochs, "
                "every_n_steps, at_epochs or at_fit_end"
            )
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.at_epochs = sorted(set(at_epochs))
        self.at_fit_end = at_fit_end
        self.alphas = self.spec.grid
        self.splits = list(self.spec.splits)
        self.reference = _check_choices("reference", [reference], REFERENCES)[0]
        if reference == "midpoint" and 0.5 not in self.alphas:
            raise LwlcError(
                f"LayerwiseBarrierCallback reference='midpoint' needs 0.5 among the alphas, got "
                f"{self.alphas}: add 0.5 or use reference='path'"
            )
        self.max_batches = max_batches
        self.reference_ckpt = reference_ckpt
        self.reference_member = _check_choices("reference_member", [reference_member], REST_FROM)[0]
        self.dirpath = dirpath
        if media_interval_s < 0:
            raise LwlcError(
                f"LayerwiseBarrierCallback media_interval_s={media_interval_s} must be >= 0"
            )
        self.media_interval_s = media_interval_s
        self.figures = figures

        self.curves: Rows = []
        self.barriers: Rows = []
        self.measures: Rows = []
        self._groups: list[layers.Group] = []
        self._init: tuple[dict[str, Tensor] | None, dict[str, Tensor] | None] = (None, None)
        self._done_epochs: set[int] = set()
        self._info: dict[str, Any] = {}
        self._template: nn.Module | None = None
        self._reference_state: dict[str, Tensor] | None = None
        self._paths: list[InterpolationPath] = []
        self._data: Data = {}
        self._calibration: Tensor | None = None
        self._memory: dict[str, Any] = {}  # the last evaluation's memory plan
        self._dir = Path(dirpath) if dirpath else Path("barriers")
        self._media = False
        self._last_media = -math.inf
        # Rows of each history already in its CSV file (none: rewrite the file), and changes of
        # the history (evaluations, relabelled epochs) to tell whether W&B media are out of date.
        self._in_files: dict[str, int] = {}
        self._revision = 0
        self._media_revision: int | None = None
        self._drawn: dict[str, int] = {}

    @property
    def sample_budget(self) -> int | None:
        """Samples evaluated per split: ``max_samples`` or ``max_batches`` batches, the smaller."""
        batches = self.max_batches * self.spec.batch_size if self.max_batches else None
        budgets = [n for n in (self.spec.max_samples, batches) if n]
        return min(budgets) if budgets else None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(reference_ckpt=self.reference_ckpt, dirpath=self.dirpath)

    # ----------------------------------------------------------------- setup
    def _networks(self, pl_module: pl.LightningModule) -> tuple[nn.Module, dict[str, Any]]:
        """The network to use as architecture template, and how the compared pair was made."""
        net_a, net_b, net = (getattr(pl_module, n, None) for n in ("net_a", "net_b", "net"))
        if isinstance(net_a, nn.Module) and isinstance(net_b, nn.Module):
            if self.reference_ckpt:
                raise LwlcError(
                    f"reference_ckpt={self.reference_ckpt!r} compares one network with a file, "
                    f"but {type(pl_module).__name__} trains a pair (net_a, net_b): drop "
                    "reference_ckpt to compare the pair"
                )
            pairing = pl_module.pairing() if hasattr(pl_module, "pairing") else {}
            return net_a, {"mode": "pair", "a": "net_a", "b": "net_b", **pairing}
        if not isinstance(net, nn.Module):
            raise LwlcError(
                "LayerwiseBarrierCallback needs a module with net_a and net_b (a pair) or net "
                f"(one network); {type(pl_module).__name__} has neither"
            )
        if not self.reference_ckpt:
            raise LwlcError(
                f"{type(pl_module).__name__} trains one network: set LayerwiseBarrierCallback "
                "reference_ckpt to the checkpoint to compare it with (e.g. its spawn point or an "
                "independent run)"
            )
        ck = read_checkpoint(self.reference_ckpt)
        member = self.reference_member if ck.paired else "model"
        self._reference_state = ck.members[member]
        layers.check_compatible(net.state_dict(), self._reference_state)
        pairing = {
            "mode": "reference",
            "a": "net (being trained)",
            "b": f"{self.reference_ckpt} [{member}]",
            "reference_sha256": ck.sha256,
            "reference_pairing": ck.pairing,
        }
        return net, pairing

    def _load_data(self, trainer: pl.Trainer) -> None:
        datamodule = trainer.datamodule
        if not callable(getattr(datamodule, "tensors", None)):
            raise LwlcError(
                "LayerwiseBarrierCallback needs a data module with tensors(split, max_samples) "
                f"(lwlc's data modules have it), got {type(datamodule).__name__}"
            )
        self._data = {s: datamodule.tensors(s, self.sample_budget) for s in self.splits}
        empty = [s for s, (_, y) in self._data.items() if len(y) == 0]
        if empty:
            raise LwlcError(
                f"LayerwiseBarrierCallback split {empty[0]!r} is empty (val_size=0?): evaluate on "
                "another split, e.g. splits: [test]"
            )
        self._calibration = (
            datamodule.tensors("train", self.spec.bn_samples)[0]
            if self.spec.bn == "reset"
            else None
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        net, pairing = self._networks(pl_module)
        self._load_data(trainer)
        self._template = copy.deepcopy(net).eval()
        example = next(iter(self._data.values()))[0][:2].to(next(net.parameters()).device)
        groups, paths = plan_paths(self.spec, self._template, example)
        self._paths = paths
        self._groups = groups
        if "weights" in self.spec.measures:  # the weights before training (and before a resume
            # restores the checkpoint's): what the distances "to the initialisation" start from
            init = [getattr(pl_module, n, None) for n in ("net_a", "net_b")]
            init = init if self._reference_state is None else [net, None]
            self._init = tuple(  # type: ignore[assignment]
                {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} if m else None
                for m in init
            )
        if self.spec.align != "none":
            self._paths = paths + [replace(p, plan=ALIGNED + p.plan) for p in paths]
        self._dir = self.output_dir(trainer)
        self._in_files = {}
        self._info = {
            "pairing": pairing,
            "layers": [{"name": g.name, "keys": list(g.keys)} for g in groups],
            "alphas": self.alphas,
            "samples": {s: len(y) for s, (_, y) in self._data.items()},
            "options": {
                **self.spec.as_dict(),
                "reference": self.reference,
                "max_batches": self.max_batches,
                "every_n_epochs": self.every_n_epochs,
                "every_n_steps": self.every_n_steps,
                "at_epochs": self.at_epochs,
                "at_fit_end": self.at_fit_end,
            },
        }

    def output_dir(self, trainer: pl.Trainer) -> Path:
        """``dirpath``, else ``<default_root_dir>/barriers``."""
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "barriers"

    def run_files(self, trainer: pl.Trainer) -> list[Path]:
        """The files an earlier run left in the Callback's directory (lwlc.commands.rundir asks)."""
        return sorted({p for pattern in OUTPUTS for p in self.output_dir(trainer).glob(pattern)})

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not self.barriers and (self._dir / "barriers.csv").exists():
            warn(
                f"{self._dir} holds an earlier run's barriers; this run replaces them "
                "(set the Callback's dirpath to keep both)"
            )
        record_run_info(trainer, {"barriers": self._info})
        self._write_summary(trainer, "running")
        self._media = has_media(trainer.loggers)
        self._last_media = time.monotonic()

    # -------------------------------------------------------------- schedule
    def _epoch_due(self, completed: int) -> bool:
        if completed in self._done_epochs:
            return False
        every = self.every_n_epochs
        return completed in self.at_epochs or bool(every and completed % every == 0)

    def _step_due(self, step: int) -> bool:
        return bool(self.every_n_steps and step % self.every_n_steps == 0)

    def _recorded(self, step: int) -> bool:
        return any(r["step"] == step for r in self.barriers)

    def _at_epoch_boundary(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, completed: int
    ) -> None:
        """Evaluate after ``completed`` epochs when scheduled, once even across a resume."""
        if self._epoch_due(completed):
            self._done_epochs.add(completed)
            if not self._recorded(trainer.global_step):
                self._evaluate(trainer, pl_module, completed)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Fresh run: the initialisation (epoch 0). Resumed run: an evaluation the checkpoint missed.
        self._at_epoch_boundary(trainer, pl_module, trainer.current_epoch)
        if self._step_due(trainer.global_step) and not self._recorded(trainer.global_step):
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
        if self._step_due(step) and not self._recorded(step):
            self._evaluate(trainer, pl_module, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        completed, step = trainer.current_epoch + 1, trainer.global_step
        # An evaluation at the epoch's last step saw the weights after the epoch: label it so.
        for row in (*self.curves, *self.barriers, *self.measures):
            if row["step"] == step and row["epoch"] != completed:
                row["epoch"] = completed
                self._changed(rewrite=True)
        self._at_epoch_boundary(trainer, pl_module, completed)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_fit_end and not self._recorded(trainer.global_step):
            self._evaluate(trainer, pl_module, trainer.current_epoch)
        if trainer.is_global_zero and self.barriers:
            self._write_csvs()
            if has_media(trainer.loggers):  # draws every heatmap into dirpath too
                self._refresh_media(trainer, METRICS)
            elif self.figures:
                from lwlc import figures

                pairing = figures.pairing_text(self._info)
                figures.save_heatmaps(self._dir, self.barriers, self.reference, pairing=pairing)
            if self.figures and "weights" in self.spec.measures:
                self._draw_distances()
        self._write_summary(trainer, "complete")

    def _draw_distances(self) -> None:
        """``distances.png``: the weight measures of the last evaluation, as ``lwlc analyze``."""
        from lwlc import figures

        figures.save_distances(self._dir, self.measures, figures.pairing_text(self._info))

    # ------------------------------------------------------------ evaluation
    def _states(self, pl_module: pl.LightningModule) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if self._reference_state is not None:
            return pl_module.net.state_dict(), self._reference_state
        return pl_module.net_a.state_dict(), pl_module.net_b.state_dict()

    def _gather(self, trainer: pl.Trainer, rows: tuple[Rows, Rows]) -> tuple[Rows, Rows]:
        """Every rank's rows on every rank, in path order (as one process would give them)."""
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            everyone: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(everyone, rows)
            rows = ([r for c, _ in everyone for r in c], [r for _, b in everyone for r in b])
        order = {(p.plan, p.group, p.rest_from): i for i, p in enumerate(self._paths)}
        split_order = {s: i for i, s in enumerate(self.splits)}

        def key(row: Mapping[str, Any]) -> tuple[int, int]:
            return order[path_key(row)], split_order[str(row["split"])]

        return sorted(rows[0], key=key), sorted(rows[1], key=key)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        """Measure this rank's share of the paths, share the rows, record them, publish (rank 0)."""
        started = time.perf_counter()
        state_a, state_b = self._states(pl_module)
        assert self._template is not None, "setup() runs before any evaluation"
        shard = self._paths[trainer.global_rank :: trainer.world_size]
        # Lightning's bar stands still meanwhile: say what runs (rank 0, where bars are shown).
        show = trainer.is_global_zero and trainer.progress_bar_callback is not None
        with progress_line(f"barriers (epoch {epoch})", len(shard), show) as progress:
            base = [replace(p, plan=p.plan.removeprefix(ALIGNED)) for p in shard]
            measurement = prepare(
                self.spec,
                self._template,
                state_a,
                state_b,
                list(dict.fromkeys(base)),
                self._data,
                self._calibration,
                pl_module.device,
            )
            result = measurement.run(set(shard), progress=progress)
            self._memory = measurement.sizes.as_dict()
        rows = (result.curves, result.barriers)
        curves, barriers = self._gather(trainer, rows)
        stamp = {"epoch": epoch, "step": trainer.global_step}
        curves = [{**stamp, **r} for r in curves]
        barriers = [{**stamp, **r} for r in barriers]
        self.curves += curves
        self.barriers += barriers
        if self.spec.measures and trainer.is_global_zero:
            init = tuple(
                None if s is None else {k: v.to(pl_module.device) for k, v in s.items()}
                for s in self._init
            )
            extras = measure_extras(
                self.spec, self._template, self._groups, state_a, state_b, self._data, init
            )
            self.measures += [{**stamp, **r} for r in extras]
        self._changed()
        if trainer.is_global_zero:
            self._publish(trainer, barriers, time.perf_counter() - started)

    # ------------------------------------------------------------ publishing
    def _changed(self, rewrite: bool = False) -> None:
        """Note a change of the history; ``rewrite``: rows already in the CSV files changed."""
        self._revision += 1
        if rewrite:
            self._in_files = {}

    def _write_csvs(self) -> None:
        """Bring the CSV files up to date: append new rows, rewrite them after other changes.

        Rewritten CSVs no longer match the figures drawn from the earlier ones (an earlier run's,
        or before a relabelling): those are removed, and drawn again from the new rows."""
        if not self._in_files:
            for figure in (p for pattern in FIGURES for p in self._dir.glob(pattern)):
                figure.unlink(missing_ok=True)
        for name, rows, columns in (
            ("curves.csv", self.curves, HISTORY_CURVE_COLUMNS),
            ("barriers.csv", self.barriers, HISTORY_BARRIER_COLUMNS),
            ("measures.csv", self.measures, HISTORY_MEASURE_COLUMNS),
        ):
            if name == "measures.csv" and not self.spec.measures:
                continue
            done = self._in_files.get(name)
            if done is None:
                write_csv(self._dir / name, rows, columns)
            elif done < len(rows):
                append_csv(self._dir / name, rows[done:], columns)
            self._in_files[name] = len(rows)

    def _write_summary(self, trainer: pl.Trainer, status: str) -> None:
        if trainer.is_global_zero:
            evaluations = sorted(
                {(int(r["epoch"]), int(r["step"])) for r in self.barriers}, key=lambda t: t[1]
            )
            summary = {
                **self._info,
                "status": status,
                "evaluations": [{"epoch": e, "step": s} for e, s in evaluations],
                "memory": self._memory,
            }
            write_json(self._dir / "summary.json", summary)

    def scalars(self, barriers: Rows) -> dict[str, float]:
        """The scalars logged for barrier rows, every reference:
        ``barrier/<reference>/<plan>[/<layer>]/loss|error``."""
        with_split = len(self.splits) > 1
        out: dict[str, float] = {}
        for row in barriers:
            for metric in METRICS:
                out[metric_name(row, metric, with_split and row["split"] != self.splits[0])] = (
                    float(row[f"{metric}_barrier"])
                )
        return out

    def _publish(self, trainer: pl.Trainer, barriers: Rows, seconds: float) -> None:
        self._write_csvs()
        # "epoch" as Lightning logs it with every metric: the index of the running epoch.
        step = trainer.global_step
        measured = [r for r in self.measures if r["step"] == step]
        metrics = {
            **self.scalars(barriers),
            **{measure_metric_name(r): float(r["value"]) for r in measured},
            "barrier/seconds": seconds,
            "epoch": trainer.current_epoch,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if self._media and time.monotonic() - self._last_media >= self.media_interval_s:
            self._last_media = time.monotonic()
            self._refresh_media(trainer, ("loss",))

    def _refresh_media(self, trainer: pl.Trainer, metrics: Sequence[str]) -> None:
        """Log to W&B and TensorBoard what the last refresh did not show of the history as it is
        now: the curves of the latest evaluation, the full model and every single layer over
        the steps and the table (W&B), and the heatmaps of ``metrics`` (drawn into dirpath)."""
        revision = self._revision
        fresh = self._media_revision != revision
        metrics = [m for m in metrics if self._drawn.get(m) != revision]
        if not (fresh or metrics):
            return
        history = [dict(r) for r in self.barriers]
        latest = [r for r in self.curves if r["step"] == self.curves[-1]["step"]]
        drawn: list[Path] | None = None

        def heatmaps() -> dict[str, Path]:
            """The heatmaps of ``metrics``, drawn once for every logger that shows them."""
            nonlocal drawn
            if drawn is None:
                from lwlc import figures

                pairing = figures.pairing_text(self._info)
                drawn = figures.save_heatmaps(self._dir, history, self.reference, metrics, pairing)
            return {f"barrier_heatmap/{p.stem.removeprefix('heatmap_')}": p for p in drawn}

        def wandb_media() -> dict[str, Any]:
            import wandb

            caption = f"through epoch {history[-1]['epoch']}"
            payload: dict[str, Any] = {
                tag: wandb.Image(str(p), caption=caption) for tag, p in heatmaps().items()
            }
            if fresh:
                columns = list(HISTORY_BARRIER_COLUMNS)
                rows = [[r[c] for c in columns] for r in history]
                payload |= {
                    **self._curve_plots(latest),
                    **self._layer_charts(history),
                    "barrier_table": wandb.Table(columns=columns, data=rows),
                }
            return payload

        def tensorboard_media() -> dict[str, Any]:
            payload: dict[str, Any] = dict(heatmaps())
            if fresh:
                from lwlc import figures

                pairing = figures.pairing_text(self._info)
                for split in self.splits:
                    figure = figures.interpolation_curves(latest, split, pairing=pairing)
                    payload[f"barrier_curves/{split}"] = figure
            return payload

        log_to_wandb(trainer.loggers, wandb_media, trainer.global_step)
        log_to_tensorboard(trainer.loggers, tensorboard_media, trainer.global_step)
        self._media_revision = revision
        self._drawn |= dict.fromkeys(metrics, revision)

    def _layer_charts(self, history: Rows) -> dict[str, Any]:
        """W&B line plots of the full model's and every single layer's barrier over the steps,
        per split (loss in nats, error in percentage points), at the logged reference."""
        import wandb

        payload: dict[str, Any] = {}
        for split in self.splits:
            rows = [
                r
                for r in history
                if r["split"] == split
                and r["reference"] == self.reference
                and r["plan"] in ("full", "single")
            ]
            steps = sorted({int(r["step"]) for r in rows})
            for metric, scale, unit in (("loss", 1.0, "nats"), ("error", 100.0, "points")):
                series: dict[str, dict[int, float | None]] = {}
                for r in rows:
                    value = float(r[f"{metric}_barrier"]) * scale
                    series.setdefault(path_label(r), {})[int(r["step"])] = (
                        value if math.isfinite(value) else None
                    )
                payload[f"barrier_layers/{split}/{metric}"] = wandb.plot.line_series(
                    xs=steps,
                    ys=[[line.get(step) for step in steps] for line in series.values()],
                    keys=list(series),
                    title=f"{metric} barrier ({unit}): full model and single layers ({split}, "
                    f"{self.reference} reference)",
                    xname="step",
                )
        return payload

    def _curve_plots(self, curves: Rows) -> dict[str, Any]:
        """W&B line plots of one evaluation's interpolation curves (loss and error per split)."""
        import wandb

        payload: dict[str, Any] = {}
        for split in self.splits:
            rows = [r for r in curves if r["split"] == split]
            for metric in METRICS:
                series: dict[str, list[float | None]] = {}
                for r in rows:
                    value = float(r["loss"]) if metric == "loss" else 1.0 - float(r["accuracy"])
                    series.setdefault(path_label(r), []).append(
                        value if math.isfinite(value) else None
                    )
                payload[f"barrier_curves/{split}/{metric}"] = wandb.plot.line_series(
                    xs=self.alphas,
                    ys=list(series.values()),
                    keys=list(series),
                    title=f"{metric} along the paths ({split}, epoch {rows[0]['epoch']})",
                    xname="alpha",
                )
        return payload

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The history (as JSON text) and the epochs done, for the checkpoint.

        As text because torch.save inspects every object it pickles: row by row, every number of
        the history made each checkpoint slower to write.
        """
        return {
            "curves": json.dumps(self.curves, default=float),
            "barriers": json.dumps(self.barriers, default=float),
            "measures": json.dumps(self.measures, default=float),
            "done_epochs": sorted(self._done_epochs),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curves = _saved_rows(state_dict.get("curves", []))
        self.barriers = _saved_rows(state_dict.get("barriers", []))
        self.measures = _saved_rows(state_dict.get("measures", []))
        self._done_epochs = set(state_dict.get("done_epochs", []))
        self._changed(rewrite=True)


def _saved_rows(saved: str | Rows) -> Rows:
    """History rows from a checkpoint: JSON text, or a list of rows (earlier checkpoints)."""
    return [dict(r) for r in (json.loads(saved) if isinstance(saved, str) else saved)]
