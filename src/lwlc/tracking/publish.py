"""What the barrier Callback shows on its loggers: scalars after every evaluation (W&B and
TensorBoard plot each natively); on its media schedule (every ``media_every`` evaluations, and the
last one always) the heatmaps as W&B HTML tables (string formatting: cheap, live); and after the
last evaluation (end of fit or an interrupt) W&B's line charts of every layer's barrier over
training (full model and every single layer on one chart), and, on TensorBoard, the heatmap PNGs
and the last interpolation curves.

The charts come once because W&B serialises each chart's table twice, cell by cell: about 5 ms a
chart and 0.08 ms a row, as much as a whole digits sweep per refresh (benchmarks/RESULTS.md);
for the same reason W&B gets no chart of the last curves (``lwlc analyze`` and ``lwlc plot``
draw them). Nothing is drawn with matplotlib for W&B (``lwlc.tracking.wandb_heatmap``).

One unit per name everywhere (CSV, scalars, charts): a loss barrier is in nats, an error barrier
a fraction of the samples (0.01 = one percentage point), as ``barriers.csv`` holds it; each
evaluation is logged at the CSVs' step with their epoch (completed epochs) as ``barrier/epoch``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from lwlc.core.barriers import METRICS
from lwlc.core.sweep import Rows
from lwlc.results.sinks import log_to_tensorboard, log_to_wandb
from lwlc.tracking.history import History
from lwlc.tracking.wandb_heatmap import html_heatmaps

UNITS = {"loss": "nats", "error": "fraction of samples"}


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


def scalars(barriers: Rows, splits: Sequence[str]) -> dict[str, float]:
    """The scalars of barrier rows, every reference, in the CSV's units; the first split is
    logged without a split in the name."""
    out: dict[str, float] = {}
    for row in barriers:
        with_split = row["split"] != splits[0]
        for metric in METRICS:
            out[metric_name(row, metric, with_split)] = float(row[f"{metric}_barrier"])
    return out


def log_scalars(
    trainer: pl.Trainer, barriers: Rows, measures: Rows, splits: Sequence[str], seconds: float
) -> None:
    """One evaluation's scalars on every logger, at its step, with the CSVs' epoch as
    ``barrier/epoch`` (completed epochs) and ``epoch`` as Lightning logs it with every metric
    (the running epoch's index: another clock, under its own name)."""
    metrics = {
        **scalars(barriers, splits),
        **{measure_metric_name(r): float(r["value"]) for r in measures},
        "barrier/seconds": seconds,
        "barrier/epoch": int(barriers[0]["epoch"]),
        "epoch": trainer.current_epoch,
    }
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=int(barriers[0]["step"]))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def layer_charts(history: Rows, splits: Sequence[str], reference: str) -> dict[str, Any]:
    """W&B line plots of the full model's and every single layer's barrier over the steps, per
    split, at ``reference``, in the scalars' units."""
    import wandb

    payload: dict[str, Any] = {}
    for split in splits:
        wanted = {(split, reference, plan) for plan in ("full", "single")}
        rows = [r for r in history if (r["split"], r["reference"], r["plan"]) in wanted]
        steps = sorted({int(r["step"]) for r in rows})
        for metric in METRICS:
            series: dict[str, dict[int, float | None]] = {}
            for r in rows:
                value = _finite(float(r[f"{metric}_barrier"]))
                series.setdefault(path_label(r), {})[int(r["step"])] = value
            payload[f"barrier_layers/{split}/{metric}"] = wandb.plot.line_series(
                xs=steps,
                ys=[[line.get(step) for step in steps] for line in series.values()],
                keys=list(series),
                title=f"{metric} barrier ({UNITS[metric]}): full model and single layers "
                f"({split}, {reference} reference)",
                xname="step",
            )
    return payload


@dataclass
class Media:
    """The media of a run's loggers and the history revision they show (nothing is logged
    twice for the same history)."""

    reference: str
    splits: Sequence[str]
    shown: int | None = None
    final: int | None = None

    def refresh(
        self,
        trainer: pl.Trainer,
        history: History,
        info: Mapping[str, Any],
        heatmaps: Sequence[Path] | None = None,
    ) -> None:
        """Log the heatmaps to W&B; with ``heatmaps`` (the PNGs of the last evaluation, given at
        the end of a run, possibly none) also W&B's charts and TensorBoard's images; nothing the
        loggers show already."""
        revision = history.revision
        final = heatmaps is not None and self.final != revision
        if self.shown == revision and not final:
            return
        step = int(history.barriers[-1]["step"])
        build = self._wandb(history, info, heatmaps=self.shown != revision, charts=final)
        log_to_wandb(trainer.loggers, build, step)
        self.shown = revision
        if final:
            tensorboard = self._tensorboard(history, heatmaps or [], info)
            log_to_tensorboard(trainer.loggers, tensorboard, step)
            self.final = revision

    def _wandb(
        self, history: History, info: Mapping[str, Any], heatmaps: bool, charts: bool
    ) -> Callable[[], dict[str, Any]]:
        def build() -> dict[str, Any]:
            import wandb

            from lwlc.results.words import pairing_text

            payload: dict[str, Any] = {}
            if heatmaps:
                pairing = pairing_text(info)
                pages = html_heatmaps(history.barriers, self.splits, self.reference, pairing)
                payload |= {key: wandb.Html(page, inject=False) for key, page in pages.items()}
            if charts:
                payload |= layer_charts(history.barriers, self.splits, self.reference)
            return payload

        return build

    def _tensorboard(
        self, history: History, heatmaps: Sequence[Path], info: Mapping[str, Any]
    ) -> Callable[[], dict[str, Any]]:
        def build() -> dict[str, Any]:
            from lwlc import figures

            payload: dict[str, Any] = {
                f"barrier_heatmap/{p.stem.removeprefix('heatmap_')}": p for p in heatmaps
            }
            latest, pairing = history.latest_curves(), figures.pairing_text(info)
            for split in self.splits:  # matplotlib figures: drawn once, for the last evaluation
                figure = figures.interpolation_curves(latest, split, pairing=pairing)
                payload[f"barrier_curves/{split}"] = figure
            return payload

        return build
