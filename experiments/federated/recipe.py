"""Experiment 7: federated learning with full (FedAvg) vs partial (layer-wise) averaging.

Clients start from one initialisation and train locally; every ``local_epochs`` epochs the
server averages, weighted by data size, either every layer (FedAvg), every layer but the head
(the head stays personal), one middle layer only, or nothing (local training). The partitions
(``PARTITIONS``): 2 clients with the training data split iid, non-iid (label shards) or
extremely non-iid (one label shard per client: disjoint halves of the classes), each tested on
the test split divided like its training data; the authors' 20 clients on a Dirichlet(0.01)
label split with a minimum client size, each client's data cut 75/25 into train and test
(PFL-Non-IID); at full scale also the authors' 100 CIFAR-100 clients of 10 label shards each.
Where the network is the authors' ResNet-18, the server also averages the authors' 9 tensors
weighted by training batches (``authors_resnet18``) on the Dirichlet clients. Reported per
round: each client's accuracy on its own test set and on every client's test set together.
Simulated with ``lwlc.training.federated`` on Lightning (see its docstring for why not Flower).
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
from lwlc.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule
from lwlc.data.base import TensorDataModule
from lwlc.formats.io import write_csv
from lwlc.models import MLP, MobileNet, ResNet18
from lwlc.training.federated import AVERAGING_SCHEMES, FederatedDataModule, FederatedModule

CLAIM = (
    "Averaging only some layers (personalised federated learning) does not beat averaging "
    "all layers (FedAvg) except when the clients' data is extremely non-iid."
)
# How each partition divides the data among clients (FederatedDataModule's arguments) and which
# data set it needs at full scale; the digits stand in for both data sets at smaller scales.
PARTITIONS: dict[str, dict[str, object]] = {
    "iid": {"num_clients": 2, "split": "iid", "test_sets": "matched"},
    "non-iid": {"num_clients": 2, "split": "non-iid", "test_sets": "matched"},
    "extreme": {"num_clients": 2, "split": "extreme", "test_sets": "matched"},
    # The authors' CIFAR-10 clients (PFL-Non-IID, ``fed20_noniid0.01``): Dirichlet(0.01) over
    # the pooled train and test splits, every client at least ``min_size`` (PFL-Non-IID's
    # least_samples = 10 / (1 - 0.75) = 40 at full scale, 10 on the 1797 digits), then 75/25.
    "dirichlet": {
        "num_clients": 20,
        "split": "dirichlet",
        "concentration": 0.01,
        "min_size": 10,
        "test_sets": "split",
    },
    # The authors' CIFAR-100 clients (create_cifar100_shards.py): 100 clients of 10 shards.
    "cifar100-shards": {
        "num_clients": 100,
        "split": "shards",
        "shards_per_client": 10,
        "test_sets": "matched",
        "data": "cifar100",
    },
}
FULL_MIN_SIZE = 40
SETUP = {
    # epochs, local_epochs, partitions, lr, lr_schedule
    "smoke": (2, 1, ("iid", "extreme"), 0.05, "constant"),
    "quick": (20, 2, ("iid", "non-iid", "dirichlet", "extreme"), 0.02, "constant"),
    # The authors' scripts: 100 epochs, 10 local epochs, SGD 0.01 with cosine annealing.
    "full": (
        100,
        10,
        ("iid", "non-iid", "dirichlet", "cifar100-shards", "extreme"),
        0.01,
        "cosine",
    ),
}
METRICS = {"clients/local_acc": "accuracy on own task", "clients/acc": "accuracy on all test sets"}
COLUMNS = (
    "split",
    "clients",
    "averaging",
    "round",
    "epoch",
    "clients/local_acc",
    "clients/acc",
    "global/acc",
    "global/local_acc",
)


def network(scale: str, partition: str) -> tuple[nn.Module, TensorDataModule]:
    """The authors' networks at full scale: ResNet-18 without normalisation (no conv biases,
    Kaiming init) on CIFAR-10, MobileNet on CIFAR-100; else an MLP with 3 hidden layers (the
    paper's MNIST net) on the embedded digits."""
    if scale != "full":
        return MLP(in_features=64, num_classes=10, width=64, depth=3), DigitsDataModule(
            batch_size=32
        )
    if PARTITIONS[partition].get("data") == "cifar100":
        return MobileNet(num_classes=100), CIFAR100DataModule(
            batch_size=64, augment=True, num_workers=4
        )
    return ResNet18(num_classes=10, norm="none", conv_bias=False, init="torchvision"), (
        CIFAR10DataModule(batch_size=64, augment=True, num_workers=4)
    )


def schemes(model: nn.Module, scale: str, partition: str) -> dict[str, str | list[str]]:
    """What the server averages: all layers, all but the head, one middle layer, nothing; on the
    authors' Dirichlet clients also the authors' 9 tensors when the network has them."""
    names = [g.name for g in default_groups(model)]
    head, middle = names[-1], names[len(names) // 2]
    found: dict[str, str | list[str]] = {
        "all (FedAvg)": "all",
        f"all but {head}": [f"re:(?!{head}$).*"],
    }
    if scale != "smoke":
        found[f"only {middle}"] = [middle]
        found["none (local)"] = "none"
    authors = set(AVERAGING_SCHEMES["authors_resnet18"][0])
    if partition == "dirichlet" and authors <= set(model.state_dict()):
        found["authors' 9 tensors"] = "authors_resnet18"
    return found


def clients_of(scale: str, partition: str, data: TensorDataModule) -> FederatedDataModule:
    """The partition's clients over ``data`` (seeded)."""
    options = {k: v for k, v in PARTITIONS[partition].items() if k != "data"}
    if scale == "full" and "min_size" in options:
        options["min_size"] = FULL_MIN_SIZE
    return FederatedDataModule(data, split_seed=0, order_seed=0, **options)  # type: ignore[arg-type]


def simulate(
    scale: str, partition: str, average: str | list[str], logs: Path
) -> list[dict[str, float]]:
    """One federated run; its per-round history."""
    epochs, local_epochs, _, lr, schedule = SETUP[scale]
    model, data = network(scale, partition)
    clients = clients_of(scale, partition, data)
    module = FederatedModule(
        model,
        num_clients=clients.num_clients,
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
        clients = PARTITIONS[split]["num_clients"]
        for label, average in schemes(network(scale, split)[0], scale, split).items():
            slug = re.sub(r"\W+", "_", label).strip("_")
            history = simulate(scale, split, average, out / "logs" / split / slug)
            rows += [{"split": split, "clients": clients, "averaging": label, **r} for r in history]
    write_csv(out / "history.csv", rows, COLUMNS)
    df = pd.DataFrame(rows)
    figures.save_figure(figure(df), out / "figures" / "federated_accuracy.png")
    return summary(df)


def summary(df: pd.DataFrame) -> dict[str, float | str]:
    """Final accuracies per split and scheme, and the best partial scheme's gain over FedAvg."""
    last = df[df["round"] == df["round"].max()]
    counts = ", ".join(
        f"{split} {int(n)}"
        for split, n in df.groupby("split", sort=False)["clients"].first().items()
    )
    result: dict[str, float | str] = {
        "pairing": f"clients from one initialisation ({counts}), each on its own test set"
    }
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
    clients = df.groupby("split", sort=False)["clients"].first()
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
            panel[0].set_title(f"split: {split} ({int(clients[split])} clients)")
        figures.legend_from(fig, panels[0][0], "server averages")
        fig.suptitle(
            "federated learning, clients from one initialisation: mean client accuracy on its "
            "own test set per round",
            wrap=True,
        )
    return fig
