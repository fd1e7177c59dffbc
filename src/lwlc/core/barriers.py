"""Barriers of interpolation curves (science.md section 4): pure functions over floats.

A barrier is the largest excess of a curve f(alpha) over a straight reference line. Two
references exist: ``path`` (the line between the curve's own endpoints) and ``models`` (the
line between the whole models A and B). ``midpoint`` is the paper's heatmap value, the
``models`` excess at alpha = 0.5 alone. Barriers may be negative and are never clipped; a NaN
anywhere on the curve makes the barrier NaN, so a broken model is never averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

REFERENCES = ("path", "models", "midpoint")


def loss_metric(loss: float, accuracy: float) -> float:
    """The loss itself."""
    return loss


def error_metric(loss: float, accuracy: float) -> float:
    """The error rate, ``1 - accuracy`` (a fraction; figures show percent)."""
    return 1.0 - accuracy


# The metrics whose barriers are measured (barrier column ``<name>_barrier``), each computed from
# a model's mean loss and accuracy; every result, figure and logger names them so.
METRICS: dict[str, Callable[[float, float], float]] = {"loss": loss_metric, "error": error_metric}

# The columns of the result rows, in every CSV and table: a curve's point, and a path's barrier.
CURVE_COLUMNS = ("plan", "group", "rest_from", "split", "alpha", "loss", "accuracy")
BARRIER_COLUMNS = (
    "plan",
    "group",
    "rest_from",
    "split",
    "reference",
    *(f"{metric}_barrier" for metric in METRICS),
)


def barrier(values: Sequence[float], alphas: Sequence[float], start: float, end: float) -> float:
    """Max over the grid of ``values[i] - ((1 - alphas[i]) * start + alphas[i] * end)``."""
    if len(values) != len(alphas) or not values:
        raise ValueError(
            f"need one value per alpha, got {len(values)} values, {len(alphas)} alphas"
        )
    excess = [v - ((1.0 - t) * start + t * end) for v, t in zip(values, alphas, strict=True)]
    if any(math.isnan(e) for e in excess):
        return math.nan
    return max(excess)


def path_barrier(values: Sequence[float], alphas: Sequence[float]) -> float:
    """Barrier against the line between the curve's own endpoints (alpha_0 and alpha_m)."""
    return barrier(values, alphas, values[0], values[-1])


def midpoint_barrier(
    values: Sequence[float], alphas: Sequence[float], start: float, end: float
) -> float:
    """The paper's heatmap value ``f(0.5) - (start + end) / 2``; NaN when 0.5 is not on the grid."""
    for v, t in zip(values, alphas, strict=True):
        if abs(t - 0.5) < 1e-12:
            return v - 0.5 * (start + end)
    return math.nan


def barriers_of_curve(
    values: Sequence[float], alphas: Sequence[float], value_a: float, value_b: float
) -> dict[str, float]:
    """All three references for one curve; ``value_a``/``value_b`` are f at the whole models."""
    return {
        "path": path_barrier(values, alphas),
        "models": barrier(values, alphas, value_a, value_b),
        "midpoint": midpoint_barrier(values, alphas, value_a, value_b),
    }
