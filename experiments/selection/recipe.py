"""Experiment 9: choose which layers to average, and check the choice on held-out data.

The paper's practical payoff: if single layers (or groups) can be averaged where the whole
network cannot, a merge can average just those. For each pair this recipe runs ``lwlc merge
--groups auto`` (the largest set of layer groups, by parameter count, whose average keeps the
selection split's loss within ``--budget`` nats of the better member; ``lwlc.core.selection``) at
budgets 0.01, 0.05 and 0.1 nats, without and with weight-matching alignment, and reads back each
``merged.ckpt.selection.json``: the chosen groups, the share of parameters averaged, and the
loss and accuracy of the chosen model, both members and the full average on the selection split
(``val``) and on the held-out ``test`` split, which the choice never sees. Pairs: two
independently trained digits MLPs (quick); two independently trained Fashion-MNIST MLPs (fmnist);
a shared-init pair of the paper's no-norm ResNet-18 at width 8 with a full-model barrier
(fmnist_resnet); each with several seeds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lwlc import recipes

CLAIM = (
    "Averaging chosen layers keeps a model within a small loss budget of the better network "
    "where averaging the whole network does not, and the choice holds on held-out data."
)
SCALES = ("smoke", "quick", "fmnist", "fmnist_resnet")
BUDGETS = (0.01, 0.05, 0.1)
ALIGNS = ("none", "weight-matching")
SEEDS = {"smoke": (0,), "quick": (0, 1, 2), "fmnist": (0, 1, 2), "fmnist_resnet": (0, 1, 2)}
# network -> (pairing, configs, extra fit arguments, budgets); seeds as recipes makes them.
PAIRS: dict[str, dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[float, ...]]]] = {
    "smoke": {
        "mlp": ("independent", ("configs/digits_mlp.yaml",), recipes.SMOKE_TRAINING, (0.05,))
    },
    "quick": {"mlp": ("independent", ("configs/digits_mlp.yaml",), (), BUDGETS)},
    "fmnist": {
        # The paper's MNIST-sized MLP config (784-512x3-10) for 3 epochs: minutes per pair.
        "mlp": (
            "independent",
            ("configs/fashion_mnist_mlp.yaml",),
            ("--trainer.max_epochs=3", "--num_threads=1"),
            BUDGETS,
        ),
    },
    "fmnist_resnet": {
        # The no-norm ResNet-18 (width 8) for 2 epochs: a full-model barrier of about 1.5 nats
        # (shared init); 10% of the training images held out as the selection split. Its 21
        # groups take the greedy search (about 60 models on 16000 images each, about 8 minutes
        # of one CPU core): one budget.
        "resnet18": (
            "shared_init",
            ("configs/paper_fmnist_resnet18.yaml",),
            ("--trainer.max_epochs=2", "--data.init_args.val_size=0.1"),
            (0.05,),
        ),
    },
}
MODELS = ("chosen", "member_a", "member_b", "full_average")
FIGURE_BUDGET = 0.05


def select(ckpt: Path, out: Path, align: str, budget: float) -> dict:
    """``lwlc merge --groups auto`` on the pair into a fresh ``out``; its selection report."""
    if out.exists():  # the recipe's own folder from an earlier run of it
        shutil.rmtree(out)
    out.mkdir(parents=True)
    options = ["--budget", str(budget), "--align", align]
    with recipes.torch_threads(1):  # small models on a shared CPU: one thread is fastest
        return recipes.select_layers(ckpt, out / "merged.ckpt", options)


def record(result: recipes.Result, prefix: str, report: dict) -> None:
    """The report's headline numbers under ``prefix`` (``net/pairing/seed<s>/align/budget/``)."""
    result[prefix + "search"] = report["search"]
    result[prefix + "chosen"] = ", ".join(report["chosen"]) or "(none)"
    result[prefix + "fraction"] = report["fraction"]
    result[prefix + "reference"] = report["reference"]
    result[prefix + "limit"] = report["limit"]
    for model in MODELS:
        for split, numbers in report["models"][model].items():
            for metric in ("loss", "accuracy"):
                result[f"{prefix}{model}/{split}/{metric}"] = numbers[metric]


def run(out: Path, scale: str) -> recipes.Result:
    """Train each pair of ``scale`` with several seeds and choose its layers at each budget."""
    result: recipes.Result = {}
    seeds = recipes.SEEDS.get() or SEEDS[scale]
    for network, (pairing, configs, extra, budgets) in PAIRS[scale].items():
        description = recipes.PAIRINGS[pairing][0]
        result[f"{network}/{pairing}/budgets"] = ",".join(map(str, budgets))
        for seed in seeds:
            overrides = (*recipes.seeded(pairing, seed), *extra)
            setup = recipes.PairSetup(network, pairing, description, configs, overrides, seed)
            root = out / setup.key
            ckpt = setup.fit(root)
            setup.describe(result)
            for align in ALIGNS:
                for budget in budgets:
                    folder = root / "selection" / f"{align}_{budget}"
                    report = select(ckpt, folder, align, budget)
                    record(result, f"{setup.key}/{align}/{budget}/", report)
                    if seed == seeds[0] and budget == FIGURE_BUDGET:
                        figure = out / "figures" / f"{setup.name}_{align}_budget{budget}.png"
                        figure.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(folder / "merged.ckpt.selection.png", figure)
    return result
