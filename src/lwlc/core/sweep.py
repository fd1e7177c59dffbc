"""A connectivity sweep: paths x alphas x splits -> interpolation curves and barriers.

The single entry point shared by ``lwlc analyze``, the barrier Callback and the experiments.
Paths are evaluated in chunks; each finished chunk is handed to ``on_rows`` (``analyze`` writes
it to disk at once, so an interrupted sweep keeps every finished path). Every distinct model is
evaluated once per split: the whole models A and B (for the ``models`` reference) and models
repeated across plans are looked up in a cache keyed by their coefficients (``MetricsCache``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from lwlc.core.barriers import METRICS, REFERENCES, barriers_of_curve
from lwlc.core.engine import Coefficients, Evaluator, Metrics
from lwlc.core.interpolation import InterpolationPath, check_alphas, coefficients
from lwlc.core.spec import BATCH_SIZE, CHUNK_SIZE

Rows = list[dict[str, object]]
Data = Mapping[str, tuple[Tensor, Tensor]]


@dataclass
class SweepResult:
    """Tidy rows (one dict per observation) of curves and barriers, plus the endpoint metrics."""

    curves: Rows = field(default_factory=list)
    barriers: Rows = field(default_factory=list)
    endpoints: dict[str, dict[str, float]] = field(default_factory=dict)


def path_key(row: Mapping[str, object]) -> tuple[str, str, str]:
    """The identity of a path in result rows: (plan, group, rest_from)."""
    return (str(row["plan"]), str(row["group"]), str(row["rest_from"]))


def curve_barrier_rows(
    path: InterpolationPath,
    split: str,
    alphas: Sequence[float],
    metrics: Sequence[Metrics],
    ends: tuple[Metrics, Metrics],
) -> tuple[Rows, Rows]:
    """Curve rows and barrier rows (every reference) of one path on one split."""
    base = {"plan": path.plan, "group": path.group, "rest_from": path.rest_from, "split": split}
    curves = [
        {**base, "alpha": t, "loss": m.loss, "accuracy": m.accuracy}
        for t, m in zip(alphas, metrics, strict=True)
    ]
    found = {
        name: barriers_of_curve(
            [value(m.loss, m.accuracy) for m in metrics],
            alphas,
            *(value(end.loss, end.accuracy) for end in ends),
        )
        for name, value in METRICS.items()
    }
    barriers = [
        {**base, "reference": ref, **{f"{name}_barrier": b[ref] for name, b in found.items()}}
        for ref in REFERENCES
        if ref != "midpoint" or 0.5 in alphas
    ]
    return curves, barriers


class MetricsCache:
    """The metrics of each distinct model (its coefficients) on each split, evaluated once: the
    whole models A and B and models repeated across plans are looked up, not re-evaluated."""

    def __init__(
        self, evaluator: Evaluator, data: Data, batch_size: int, calibration: Tensor | None
    ) -> None:
        self.evaluator, self.data = evaluator, data
        self.batch_size, self.calibration = batch_size, calibration
        self.found: dict[str, dict[Coefficients, Metrics]] = {split: {} for split in data}

    def __call__(self, split: str, models: Sequence[Coefficients]) -> list[Metrics]:
        """The metrics of ``models`` on ``split``, evaluating (together) those not seen yet."""
        cache = self.found[split]
        todo = list(dict.fromkeys(m for m in models if m not in cache))
        if todo:
            inputs, targets = self.data[split]
            found = self.evaluator.evaluate(
                todo, inputs, targets, batch_size=self.batch_size, calibration=self.calibration
            )
            cache.update(zip(todo, found, strict=True))
        return [cache[m] for m in models]


def sweep(
    evaluator: Evaluator,
    paths: Sequence[InterpolationPath],
    alphas: Sequence[float],
    data: Data,
    *,
    calibration: Tensor | None = None,
    batch_size: int = BATCH_SIZE,
    chunk_size: int = CHUNK_SIZE,
    on_rows: Callable[[Rows, Rows], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """Evaluate every path at every alpha on every split and compute its barriers.

    ``progress`` is called with the number of paths finished in each chunk.
    """
    alphas = check_alphas(alphas)
    keys = evaluator.keys
    measure = MetricsCache(evaluator, data, batch_size, calibration)
    result = SweepResult()
    whole: list[Coefficients] = [(0.0,) * len(keys), (1.0,) * len(keys)]  # A and B
    ends = {split: tuple(measure(split, whole)) for split in data}
    for split, (ma, mb) in ends.items():
        result.endpoints[split] = {
            "loss_a": ma.loss,
            "acc_a": ma.accuracy,
            "loss_b": mb.loss,
            "acc_b": mb.accuracy,
        }

    for start in range(0, len(paths), chunk_size):
        chunk = paths[start : start + chunk_size]
        models = {
            p: [coefficients(p, t, keys, evaluator.float_keys) for t in alphas] for p in chunk
        }
        curves: Rows = []
        barriers: Rows = []
        for split in data:
            found = measure(split, [m for ms in models.values() for m in ms])
            for i, p in enumerate(chunk):
                c, b = curve_barrier_rows(
                    p, split, alphas, found[i * len(alphas) : (i + 1) * len(alphas)], ends[split]
                )
                curves += c
                barriers += b
        result.curves += curves
        result.barriers += barriers
        if on_rows is not None:
            on_rows(curves, barriers)
        if progress is not None:
            progress(len(chunk))
    return result
