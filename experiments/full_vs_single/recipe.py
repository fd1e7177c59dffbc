"""Experiment 1: full-model vs single-layer barriers at the end of training.

Trains two pairs of the same network: the paper's default (one shared initialisation,
different data order) and fully independent runs (different initialisation too), then
measures the barrier of the full interpolation and of every single-layer one (rest from A and
from B) with ``lwlc analyze``. Headline values use the paper's heatmap reference (the midpoint
against the mean of the two whole models); the ``path`` reference is reported alongside.
"""

from __future__ import annotations

from pathlib import Path

from lwlc import experiment, plots

CLAIM = (
    "Averaging a single layer of two trained networks barely changes their loss, while "
    "averaging all layers (the full model) does: the full barrier is large, every single-layer "
    "barrier near zero."
)

PAIRINGS = {
    "shared_init": (
        "same initialisation, different data order",
        ["--model.init_args.init_seed_b=0"],
    ),
    "independent": (
        "different initialisation, different data order",
        ["--model.init_args.init_seed_b=1"],
    ),
}
DIGITS = ["configs/digits_mlp.yaml", "experiments/full_vs_single/quick.yaml"]
SETUPS: dict[str, dict[str, list[str]]] = {
    "smoke": {"mlp": DIGITS},
    "quick": {"mlp": DIGITS},
    "full": {"vgg11": ["configs/cifar10_vgg.yaml"], "resnet18": ["configs/cifar10_resnet18.yaml"]},
}
TRAIN = {
    "smoke": ["--trainer.max_epochs=1", "--trainer.limit_train_batches=5"],
    "quick": [],
    "full": [],
}
ANALYZE = {
    "smoke": ["--max-samples", "100", "--num-alphas", "3"],
    "quick": [],
    "full": [],
}
ANALYZE_COMMON = ["--plans", "full,single", "--splits", "test", "--rest-from", "a,b", "--no_plots"]


def run(out: Path, scale: str) -> dict[str, float | str]:
    """Train both pairings of each setup of ``scale``; compare full and single-layer barriers."""
    result: dict[str, float | str] = {}
    for arch, configs in SETUPS[scale].items():
        for key, (label, seeds) in PAIRINGS.items():
            root = out / arch / key
            ckpt = experiment.fit(
                [experiment.config(c) for c in configs], root, [*seeds, *TRAIN[scale]]
            )
            curves, barriers = experiment.analyze(
                ckpt, root / "analysis", [*ANALYZE_COMMON, *ANALYZE[scale]]
            )
            figures = out / "figures"
            plots.save_figure(
                plots.layer_barriers(barriers, "midpoint"), figures / f"{arch}_{key}_barriers.png"
            )
            plots.save_figure(
                plots.interpolation_curves(curves), figures / f"{arch}_{key}_curves.png"
            )
            prefix = f"{arch}/{key}/" if len(SETUPS[scale]) > 1 else f"{key}/"
            result[f"{prefix}pairing"] = label
            result.update({f"{prefix}{k}": v for k, v in experiment.accuracies(curves).items()})
            for reference in ("midpoint", "path"):
                numbers = experiment.full_vs_layers(barriers, reference)
                result.update({f"{prefix}{reference}/{k}": v for k, v in numbers.items()})
    return result
