"""Experiment 3: cumulative averaging from the front, from the back and in other orders.

Averages the first k layers (``cumulative_front``), the last k (``cumulative_back``), the
first k of a random order, and the first k of an outer-first order (the first m and last m
layers, then the middle ones; the paper: first 5 + last 5 of ResNet-18), k = 1..n, rest from A.
Front and back are measured through training by the barrier Callback (heatmaps over k and
epochs); the other orders at the end of training with ``lwlc analyze``'s custom plan. Values
are the paper's midpoint barriers against the two whole models; the full model's barrier is
also reported against the ``models`` and ``path`` references.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from lwlc import figures, recipes
from lwlc.formats.io import read_csv

CLAIM = (
    "Averaging layers cumulatively from the front or from the back shows no barrier until the "
    "middle layers are included: the barrier-prone layers sit in the middle of the network."
)
SCALES = ("smoke", "quick", "fmnist", "fmnist_resnet", "full")
CALLBACK = {
    "smoke": "experiments/cumulative/smoke.yaml",
    "quick": "experiments/cumulative/quick.yaml",
    "fmnist": "experiments/cumulative/fmnist.yaml",
    "fmnist_resnet": "experiments/cumulative/fmnist_resnet.yaml",
    "full": "experiments/cumulative/full.yaml",
}
ORDER_SEED = 0
ANALYZE = ["--plans", "full", "--splits", "test", "--rest-from", "a", "--no-plots"]
SMOKE_ANALYZE = ["--max-samples", "100", "--num-alphas", "3"]
SCALE_ANALYZE = {"smoke": SMOKE_ANALYZE, "fmnist_resnet": ["--num-alphas", "3"]}
TIME_COLUMNS = ("epoch", "step")


def random_order(layers: Sequence[str], seed: int = ORDER_SEED) -> list[str]:
    """The layers in a seeded random order."""
    order = list(layers)
    random.Random(seed).shuffle(order)
    return order


def outer_first_order(layers: Sequence[str]) -> list[str]:
    """The first m and the last m layers, then the middle ones in forward order.

    m = 5 as in the paper for deep networks, fewer for shallow ones so that a middle of at
    least a third of the layers remains.
    """
    m = max(1, min(5, (len(layers) - 1) // 3))
    outer = [*layers[:m], *layers[-m:]]
    return outer + [name for name in layers if name not in outer]


def custom_sets(orders: dict[str, list[str]]) -> list[str]:
    """``lwlc analyze --custom`` specs: ``<order>_<k>`` = the first k layers of each order."""
    return [
        f"{label}_{k}={','.join(order[:k])}"
        for label, order in orders.items()
        for k in range(1, len(order) + 1)
    ]


def profiles(
    final: recipes.Rows, orders: dict[str, list[str]], layers: Sequence[str]
) -> dict[str, list[tuple[str, float]]]:
    """For each order, (layer added at step k, midpoint loss barrier of the first k), k = 1..n."""
    rows = recipes.rows_where(final, reference="midpoint")

    def barrier(**match: object) -> float:
        return recipes.value(rows, "loss_barrier", **match)

    result = {
        "front": [(name, barrier(plan="cumulative_front", group=name)) for name in layers],
        "back": [(name, barrier(plan="cumulative_back", group=name)) for name in reversed(layers)],
    }
    for label, order in orders.items():
        result[label] = [
            (name, barrier(plan="custom", group=f"{label}_{k}"))
            for k, name in enumerate(order, start=1)
        ]
    return result


def onset(profile: Sequence[tuple[str, float]], full: float) -> str:
    """The layer whose addition first lifts the barrier above half the full model's (if any)."""
    if not full > 0:
        return "none"
    return next((name for name, value in profile if value > 0.5 * full), "none")


def run(out: Path, scale: str) -> dict[str, float | str]:
    """Train every pair of ``scale`` with the Callback, then measure the other orders."""
    result: dict[str, float | str] = {}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for setup in recipes.pair_setups(scale):
        name = setup.name
        root = out / setup.key
        ckpt = setup.fit(root, [CALLBACK[scale]])
        summary = json.loads((root / "barriers" / "summary.json").read_text())
        layers = [layer["name"] for layer in summary["layers"]]
        orders = {"random": random_order(layers), "outer_first": outer_first_order(layers)}
        options = ANALYZE + [f"--custom={spec}" for spec in custom_sets(orders)]
        curves, custom = recipes.analyze(
            ckpt, root / "analysis", options + SCALE_ANALYZE.get(scale, [])
        )
        history = read_csv(root / "barriers" / "barriers.csv")
        last = max(float(r["epoch"]) for r in history)  # type: ignore[arg-type]
        final = [
            {k: v for k, v in r.items() if k not in TIME_COLUMNS}
            for r in recipes.rows_where(history, epoch=last)
        ] + [r for r in custom if r["plan"] == "custom"]
        figure = figures.layer_barriers(final, "midpoint", pairing=setup.description)
        figures.save_figure(figure, out / "figures" / f"{name}_orders.png")
        for plan in ("cumulative_front", "cumulative_back"):  # the Callback drew them
            heatmap = figures.heatmap_name("test", plan, "loss")
            shutil.copyfile(root / "barriers" / heatmap, out / "figures" / f"{name}_{heatmap}")
        full = recipes.value(final, "loss_barrier", plan="full", reference="midpoint")
        prefix = f"{setup.key}/"
        setup.describe(result)
        result.update({prefix + k: v for k, v in recipes.accuracies(curves).items()})
        result[f"{prefix}full_loss_barrier"] = full
        for reference in ("models", "path"):
            result[f"{prefix}{reference}/full_loss_barrier"] = recipes.value(
                final, "loss_barrier", plan="full", reference=reference
            )
        for label, profile in profiles(final, orders, layers).items():
            result[f"{prefix}{label}/order"] = ",".join(name for name, _ in profile)
            result[f"{prefix}{label}/loss_barriers"] = ",".join(f"{v:.3f}" for _, v in profile)
            result[f"{prefix}{label}/onset_layer"] = onset(profile, full)
    return result
