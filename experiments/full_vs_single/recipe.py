"""Experiment 1: full-model vs single-layer barriers at the end of training.

Trains two pairs of the same network: the paper's default (one shared initialisation,
different data order) and fully independent runs (different initialisation too), then
measures the barrier of the full interpolation and of every single-layer one (rest from A and
from B) with ``lwlc analyze``. Headline values use the paper's heatmap reference (the midpoint
against the mean of the two whole models); the ``models`` reference (the largest excess over
the line between the whole models) and the ``path`` reference (over the path's own ends) are
reported alongside. Scales: smoke, quick (digits), fmnist (the paper's MNIST network on the
real Fashion-MNIST, 10 epochs on a CPU), fmnist_resnet (the paper's no-norm ResNet-18 at width 8
on the real Fashion-MNIST, three pairings x three seeds), full (CIFAR-10, GPU).
"""

from __future__ import annotations

from pathlib import Path

from lwlc import figures, recipes

CLAIM = (
    "Averaging a single layer of two trained networks barely changes their loss, while "
    "averaging all layers (the full model) does: the full barrier is large, every single-layer "
    "barrier near zero."
)
SCALES = ("smoke", "quick", "fmnist", "fmnist_resnet", "full")
REFERENCES = ("midpoint", "models", "path")
ANALYZE = ["--plans", "full,single", "--splits", "test", "--rest-from", "a,b", "--no-plots"]
SMOKE_ANALYZE = ["--max-samples", "100", "--num-alphas", "3"]
# The ResNet on all 10000 test images: the midpoint grid (alphas 0, 0.5, 1), the paper's value.
SCALE_ANALYZE = {"smoke": SMOKE_ANALYZE, "fmnist_resnet": ["--num-alphas", "3"]}


def run(out: Path, scale: str) -> dict[str, float | str]:
    """Train both pairings of each network of ``scale``; compare full and single-layer barriers."""
    result: dict[str, float | str] = {}
    setups = recipes.pair_setups(scale)
    for setup in setups:
        name = setup.name
        root = out / setup.key
        options = ANALYZE + SCALE_ANALYZE.get(scale, [])
        curves, barriers = recipes.analyze(setup.fit(root), root / "analysis", options)
        figure_dir = out / "figures"
        figures.save_figure(
            figures.layer_barriers(barriers, "midpoint", pairing=setup.description),
            figure_dir / f"{name}_barriers.png",
        )
        figures.save_figure(
            figures.interpolation_curves(curves, pairing=setup.description),
            figure_dir / f"{name}_curves.png",
        )
        prefix = f"{setup.key}/"
        setup.describe(result)
        result.update({prefix + k: v for k, v in recipes.accuracies(curves).items()})
        for reference in REFERENCES:
            numbers = recipes.full_vs_layers(barriers, reference)
            result.update({f"{prefix}{reference}/{k}": v for k, v in numbers.items()})
    return result
