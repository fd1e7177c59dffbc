"""Experiment 2: layer-wise barriers through training, as a layers x epochs heatmap.

Trains each pair with lwlc's barrier Callback (``LayerwiseBarrierCallback``), which measures
the full model and every single layer (rest from A and from B, on the test and the training
split, as the authors' heatmaps) at epochs 0-9 and then every k epochs
(the paper: k = 20 over 200 epochs; quick: k = 5 over 30; fmnist: every epoch of 10). The
heatmaps show the paper's value, the midpoint barrier against the two whole models, with the
full model as the first row; the last epoch is also reported against the ``models`` and
``path`` references.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lwlc import figures, recipes
from lwlc.formats.io import read_csv

CLAIM = (
    "Through training, the full model's barrier grows while every single layer's barrier "
    "stays near zero: layers remain linearly connected one at a time at every epoch."
)
SCALES = ("smoke", "quick", "fmnist", "fmnist_resnet", "full")
SPLITS = ("test", "train")  # as the authors' heatmaps; every scale's Callback measures both
CALLBACK = {
    "smoke": "experiments/through_training/smoke.yaml",
    "quick": "experiments/through_training/quick.yaml",
    "fmnist": "experiments/through_training/fmnist.yaml",
    "fmnist_resnet": "experiments/through_training/fmnist_resnet.yaml",
    "full": "experiments/through_training/full.yaml",
}


def run(out: Path, scale: str) -> dict[str, float | str]:
    """Train every pair of ``scale`` with the Callback; heatmaps and the barriers' course."""
    result: dict[str, float | str] = {}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for setup in recipes.pair_setups(scale):
        root = out / setup.key
        setup.fit(root, [CALLBACK[scale]])
        barriers = read_csv(root / "barriers" / "barriers.csv")
        for heatmap in heatmaps(root / "barriers"):  # the Callback drew them at the end of fit
            name = f"{setup.name}_{heatmap.name}"
            shutil.copyfile(heatmap, out / "figures" / name)
        prefix = f"{setup.key}/"
        setup.describe(result)
        result.update({prefix + k: v for k, v in course(barriers).items()})
    return result


def heatmaps(folder: Path) -> list[Path]:
    """The Callback's single-layer heatmaps: test and train, rest from A and from B, loss and
    error (``heatmap_<split>_single[_rest_b]_<metric>.png``)."""
    return [
        folder / figures.heatmap_name(split, "single", metric, rest)
        for split in SPLITS
        for rest in ("a", "b")
        for metric in figures.METRICS
    ]


def course(barriers: recipes.Rows) -> dict[str, float | str]:
    """Midpoint loss barriers on the test split over training: at the last epoch and at the
    full model's peak (single layers: either rest)."""
    barriers = recipes.rows_where(barriers, split="test")
    rows = recipes.rows_where(barriers, reference="midpoint")
    epochs = sorted({int(r["epoch"]) for r in rows})  # type: ignore[call-overload]
    full = {e: recipes.value(rows, "loss_barrier", plan="full", epoch=float(e)) for e in epochs}
    peak = max(epochs, key=lambda e: full[e])
    singles = [float(r["loss_barrier"]) for r in rows if r["plan"] == "single"]  # type: ignore[arg-type]
    final = recipes.rows_where(barriers, epoch=float(epochs[-1]))
    last = recipes.full_vs_layers(final)
    others = {
        f"{reference}/last/{k}": v
        for reference in ("models", "path")
        for k, v in recipes.full_vs_layers(final, reference).items()
    }
    return {
        "epochs": ",".join(map(str, epochs)),
        **{f"last/{k}": v for k, v in last.items()},
        **others,
        "peak_full_loss_barrier": full[peak],
        "peak_full_epoch": float(peak),
        "max_single_loss_barrier_any_epoch": recipes.largest(singles),
    }
