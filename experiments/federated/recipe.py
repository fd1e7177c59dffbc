"""Experiment 7: federated learning with full (FedAvg) vs partial (layer-wise) averaging.

Two clients (``CLIENTS``) start from one initialisation and train locally; every
``local_epochs`` epochs the server averages, weighted by data size, either every layer (FedAvg),
every layer but the head (the head stays personal), one middle layer only, or nothing (local
training). The training data is split iid, non-iid (label shards) or extremely non-iid (one
label shard per client: disjoint halves of the classes). Reported per round: each client's
accuracy on its own task (test accuracy per class weighted by its label distribution, the
authors' per-client test sets) and on the whole test set. Simulated with
``lwlc.training.federated`` on Lightning (see its docstring for why not Flower).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import seaborn as sns
import torch
from lightning.pytorch.loggers import CSVLogger
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from lwlc import figures
from lwlc.core.layers import default_groups
from lwlc.data import CIFAR10DataModule, DigitsDataModule
from lwlc.data.base import TensorDataModule
from lwlc.formats.io import write_csv
from lwlc.models import MLP, ResNet18
from lwlc.training.federated import FederatedDataModule, FederatedModule

CLAIM = (
    "Averaging only some layers (personalised federated learning) does not beat averaging "
    "all layers (FedAvg) except when the clients' data is extremely non-iid."
)
CLIENTS = 2
SETUP = {
    # epochs, local_epochs, splits, lr, lr_schedule
    "smoke": (2, 1, ("iid", "extreme"), 0.05, "constant"),
    "quick": (20, 2, ("iid", "non-iid", "extreme"), 0.02, "constant"),
    # The authors' scripts: 100 epochs, 10 local epochs, SGD 0.01 with cosine annealing.
    "full": (100, 10, ("iid", "non-iid", "extreme"), 0.01, "cosine"),
}
METRICS = {"clients/local_acc": "accuracy on own task", "clients/acc": "accuracy on all classes"}
COLUMNS = ("split", "averaging", "round", "epoch", "clients/local_acc", "clients/acc", "global/acc")


def network(scale: str) -> tuple[nn.Module, TensorDataModule]:
    """The paper's networks: ResNet-18 without normalisation on CIFAR-10 (full); else an MLP
    with 3 hidden layers (the paper's MNIST net) on the embedded digits."""
    if scale == "full":
        return ResNet18(num_classes=10, norm="none"), CIFAR10DataModule(
            batch_size=64, augment=True, num_workers=4
        )
    return MLP(in_features=64, num_classes=10, width=64, depth=3), DigitsDataModule(batch_size=32)


def schemes(model: nn.Module, scale: str) -> dict[str, str | list[str]]:
    """What the server averages: all layers, all but the head, one middle layer, nothing."""
    names = [g.name for g in default_groups(model)]
    head, middle = names[-1], names[len(names) // 2]
    found: dict[str, str | list[str]] = {
        "all (FedAvg)": "all",
        f"all but {head}": [f"re:(?!{head}$).*"],
    }
    if scale != "smoke":
        found[f"only {middle}"] = [middle]
        found["none (local)"] = "none"
    return found


def simulate(
    scale: str, split: str, average: str | list[str], logs: Path
) -> list[dict[str, float]]:
    """One federated run; its per-round history."""
    epochs, local_epochs, _, lr, schedule = SETUP[scale]
    model, data = network(scale)
    clients = FederatedDataModule(
        data, num_clients=CLIENTS, split=split, split_seed=0, order_seed=0
    )
    module = FederatedModule(
        model,
        num_clients=CLIENTS,
        local_epochs=local_epochs,
        average=average,
        init_seed=0,
        lr=lr,
        lr_schedule=schedule,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        check_val_every_n_epoch=local_epochs,
        num_sanity_val_steps=0,
        accelerator="auto" if scale == "full" else "cpu",
        logger=CSVLogger(logs.parent, name=logs.name),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=3 if scale == "smoke" else None,
    )
    trainer.fit(module, clients)
    return module.history


def run(out: Path, scale: str) -> dict[str, float | str]:
    """Every split x averaging scheme; the clients' accuracies per round and at the end."""
    if scale != "full":
        torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rows: list[dict[str, object]] = []
    for split in SETUP[scale][2]:
        for label, average in schemes(network(scale)[0], scale).items():
            slug = re.sub(r"\W+", "_", label).strip("_")
            history = simulate(scale, split, average, out / "logs" / split / slug)
            rows += [{"split": split, "averaging": label, **r} for r in history]
    write_csv(out / "history.csv", rows, COLUMNS)
    df = pd.DataFrame(rows)
    figures.save_figure(figure(df), out / "figures" / "federated_accuracy.png")
    return summary(df)


def summary(df: pd.DataFrame) -> dict[str, float | str]:
    """Final accuracies per split and scheme, and the best partial scheme's gain over FedAvg."""
    last = df[df["round"] == df["round"].max()]
    result: dict[str, float | str] = {"pairing": f"{CLIENTS} clients from one initialisation"}
    for (split, label), row in last.set_index(["split", "averaging"]).iterrows():
        result[f"{split}/{label}/local_acc"] = float(row["clients/local_acc"])
        result[f"{split}/{label}/acc"] = float(row["clients/acc"])
    for split, group in last.groupby("split", sort=False):
        fedavg = group[group["averaging"] == "all (FedAvg)"]["clients/local_acc"].iloc[0]
        partial = group[~group["averaging"].isin(["all (FedAvg)", "none (local)"])]
        best = partial.loc[partial["clients/local_acc"].idxmax()]
        result[f"{split}/best_partial_minus_fedavg_local_acc"] = float(
            best["clients/local_acc"] - fedavg
        )
        result[f"{split}/best_partial"] = str(best["averaging"])
    return result


def figure(df: pd.DataFrame) -> Figure:
    """Mean client accuracy (%) over rounds: one panel per split, own task (top) and all classes,
    each on one y axis across splits."""
    splits = list(dict.fromkeys(df["split"]))
    df = df.assign(**{metric: 100.0 * df[metric] for metric in METRICS})
    schemes = list(dict.fromkeys(df["averaging"]))
    with figures.look():
        fig, panels = figures.panel_grid(
            len(splits), 3.4, 2.4, len(METRICS), figures.legend_width(schemes)
        )
        for panel, split in zip(panels, splits, strict=True):
            for ax, (metric, label) in zip(panel, METRICS.items(), strict=True):
                sns.lineplot(
                    data=df[df["split"] == split],
                    x="round",
                    y=metric,
                    hue="averaging",
                    hue_order=schemes,
                    marker="o",
                    markersize=3,
                    ax=ax,
                    legend=ax is panels[0][0],
                )
                ax.set_ylabel(f"{label} (%)" if ax.get_subplotspec().is_first_col() else "")
                ax.set_xlabel("round" if ax is panel[-1] else "")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            panel[0].set_title(f"split: {split}")
        figures.legend_from(fig, panels[0][0], "server averages")
        fig.suptitle(
            f"federated learning, {CLIENTS} clients from one initialisation: mean client test "
            "accuracy per round",
            wrap=True,
        )
    return fig
