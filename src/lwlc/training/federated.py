"""Federated learning simulated on Lightning: clients train locally, layers are averaged.

N clients start from one initialisation and each trains on its own part of the data; after
every ``local_epochs`` epochs (a *round*) the server replaces the chosen layers of every client
by their mean weighted by the clients' data sizes. Averaging every layer is FedAvg (McMahan et
al. 2017); averaging only some layers (e.g. the body without the head) leaves the others
personal to each client (science.md section 6, experiment 7).

The simulation runs in one process on one Lightning ``Trainer``: the clients are the
sub-networks of one LightningModule, one training batch is ``[batch of client 0, batch of
client 1, ...]``, and the loss is the sum of the clients' losses, which gives each client exactly
the gradient of its own loss (their parameters are disjoint). Why not Flower: its simulation
engine runs clients as Ray actors that exchange weights through messages, which buys nothing
for a single-machine experiment and is not installed; here every client is on the same device
and averaging is a tensor operation.

Data splits (:func:`split_clients`) are seeded partitions of the training labels: ``iid``,
``non-iid`` and ``extreme`` (label shards, as McMahan et al.) and ``dirichlet`` label skew.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor, nn

from lwlc.core import layers
from lwlc.core.errors import LwlcError
from lwlc.data.base import EpochSeededSampler, TensorBatches, TensorDataModule, mix_seed
from lwlc.training.modules import reinitialize

SPLITS = ("iid", "non-iid", "extreme", "dirichlet")
LR_SCHEDULES = ("constant", "cosine")
DIRICHLET_TRIES = 100


def _label_shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Sort by label (classes in random order, ties shuffled), cut equal shards, deal them out."""
    num_classes = int(labels.max()) + 1
    class_rank = rng.permutation(num_classes)[labels]
    order = np.lexsort((rng.permutation(len(labels)), class_rank))
    shards = np.array_split(order, num_clients * shards_per_client)
    deal = rng.permutation(len(shards)).reshape(num_clients, shards_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in deal]


def _dirichlet(
    labels: np.ndarray, num_clients: int, concentration: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each class's samples split among clients in proportions drawn from Dirichlet(alpha)."""
    for _ in range(DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, concentration))
            cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        clients = [np.concatenate(p) for p in parts]
        if all(len(c) for c in clients):
            return clients
    raise LwlcError(
        f"a Dirichlet({concentration}) split left a client without data in "
        f"{DIRICHLET_TRIES} draws: "
        "use fewer clients or a larger concentration"
    )


def split_clients(
    labels: Tensor,
    num_clients: int,
    scheme: str = "iid",
    seed: int = 0,
    shards_per_client: int | None = None,
    concentration: float = 0.5,
) -> list[Tensor]:
    """Disjoint sorted index sets, one per client, that together cover ``range(len(labels))``.

    - ``iid``: a random partition into near-equal parts.
    - ``non-iid``: label shards: the data sorted by label is cut into ``num_clients *
      shards_per_client`` equal shards dealt out at random (default ``shards_per_client`` =
      number of classes, so each client sees most classes in skewed proportions).
    - ``extreme``: label shards with one shard per client: each client holds about
      ``classes / num_clients`` classes (whole classes, except where a shard boundary cuts one).
    - ``dirichlet``: per class, client shares drawn from Dirichlet(``concentration``); small
      concentrations (0.01) give nearly one client per class.
    """
    if scheme not in SPLITS:
        raise LwlcError(f"unknown split {scheme!r}; choose from {', '.join(SPLITS)}")
    n = len(labels)
    if not 1 <= num_clients <= n:
        raise LwlcError(
            f"num_clients={num_clients} must be between 1 and the number of samples ({n})"
        )
    if concentration <= 0:
        raise LwlcError(f"the Dirichlet concentration must be > 0, got {concentration}")
    y = labels.cpu().numpy().astype(np.int64)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)
    elif scheme == "dirichlet":
        parts = _dirichlet(y, num_clients, concentration, rng)
    else:
        per_client = 1 if scheme == "extreme" else shards_per_client or int(y.max()) + 1
        if per_client < 1 or num_clients * per_client > n:
            raise LwlcError(
                f"shards_per_client={per_client} must be >= 1 and leave every shard a sample "
                f"({num_clients} clients, {n} samples)"
            )
        parts = _label_shards(y, num_clients, per_client, rng)
    return [torch.as_tensor(np.sort(p), dtype=torch.long) for p in parts]


def weighted_average(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float], keys: Sequence[str]
) -> dict[str, Tensor]:
    """The ``weights``-weighted mean of ``keys`` over client state dicts (FedAvg's server step)."""
    if len(states) != len(weights) or not states:
        raise LwlcError(
            f"need one weight per client state, got {len(weights)} weights for {len(states)} states"
        )
    total = float(sum(weights))
    if total <= 0:
        raise LwlcError(f"client weights must sum to a positive number, got {list(weights)}")
    mean: dict[str, Tensor] = {}
    for k in keys:
        acc = torch.zeros_like(states[0][k], dtype=torch.float64)
        for state, w in zip(states, weights, strict=True):
            acc += (w / total) * state[k].double()
        mean[k] = acc.to(states[0][k].dtype)
    return mean


def averaged_keys(model: nn.Module, average: str | Sequence[str]) -> list[str]:
    """The state-dict keys to average: ``"all"``, ``"none"`` or layer patterns (as ``analyze``).

    Patterns (glob, or ``re:<regex>``) select default layer groups by name (``fc1``, ``layer1.*``);
    integer buffers are never averaged.
    """
    state = model.state_dict()
    float_keys = [k for k, v in state.items() if torch.is_floating_point(v)]
    if average == "all":
        return float_keys
    if average == "none":
        return []
    patterns = [average] if isinstance(average, str) else list(average)
    if not patterns:
        raise LwlcError("average needs 'all', 'none' or at least one layer pattern")
    chosen = {k for g in layers.select(layers.default_groups(model), patterns) for k in g.keys}
    return [k for k in float_keys if k in chosen]


class FederatedDataModule(pl.LightningDataModule):
    """A data module's training split divided among clients; validation is its whole test split.

    Each client's loader shuffles its own part with its own seed (derived from ``order_seed``);
    an epoch is one pass of every client over its data (clients with less data wait for the
    others, Lightning's ``max_size`` mode yields ``None`` for them).
    """

    def __init__(
        self,
        data: TensorDataModule,
        num_clients: int = 2,
        split: str = "iid",
        split_seed: int = 0,
        shards_per_client: int | None = None,
        concentration: float = 0.5,
        order_seed: int = 0,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise LwlcError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        self.data = data
        self.num_clients = num_clients
        self.split = split
        self.split_seed = split_seed
        self.shards_per_client = shards_per_client
        self.concentration = concentration
        self.order_seed = order_seed
        self._indices: list[Tensor] | None = None

    @property
    def num_classes(self) -> int:
        """The number of classes of the underlying data."""
        return self.data.num_classes

    @property
    def client_indices(self) -> list[Tensor]:
        """Each client's indices into the underlying training split."""
        if self._indices is None:
            labels = self.data.tensors("train")[1]
            self._indices = split_clients(
                labels,
                self.num_clients,
                self.split,
                self.split_seed,
                self.shards_per_client,
                self.concentration,
            )
        return self._indices

    @property
    def sizes(self) -> list[int]:
        """The number of training samples of each client (the averaging weights)."""
        return [len(i) for i in self.client_indices]

    def label_counts(self) -> Tensor:
        """``[clients, classes]``: how many training samples of each class each client holds."""
        labels = self.data.tensors("train")[1]
        return torch.stack(
            [torch.bincount(labels[i], minlength=self.num_classes) for i in self.client_indices]
        )

    def train_dataloader(self) -> CombinedLoader:
        inputs, labels = self.data.tensors("train")
        augment = self.data._train_augment()
        loaders = []
        for client, index in enumerate(self.client_indices):
            seed = mix_seed(self.order_seed, client)
            batches = TensorBatches(inputs[index], labels[index], augment, seed)
            loaders.append(
                self.data._loader(
                    batches, self.data.batch_size, EpochSeededSampler(len(index), seed)
                )
            )
        return CombinedLoader(loaders, mode="max_size")

    def val_dataloader(self) -> Any:
        return self.data.test_dataloader()


class FederatedModule(pl.LightningModule):
    """``num_clients`` copies of ``model`` from one initialisation, averaged every ``local_epochs``.

    ``average``: ``"all"`` (FedAvg), ``"none"`` (local training only) or layer patterns (only the
    matching layers are averaged; the rest stay personal). Averaging weights are the clients'
    data sizes, read from the data module. After every round the test split is evaluated and
    logged: per client ``client{i}/acc`` (whole test set) and ``client{i}/local_acc`` (test
    accuracy per class weighted by the client's own label distribution: its personal task), their
    means ``clients/acc`` and ``clients/local_acc``, and ``global/acc`` of the model whose every
    layer is the weighted mean (what FedAvg would deploy). Rows are also kept in ``history``.
    Each client keeps its own optimizer state (momentum) across rounds. SGD's rate is constant or
    annealed to 0 by a cosine over the run (``lr_schedule="cosine"``, per epoch).
    """

    def __init__(
        self,
        model: nn.Module,
        num_clients: int = 2,
        local_epochs: int = 1,
        average: str | list[str] = "all",
        init_seed: int = 0,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        if num_clients < 1 or local_epochs < 1:
            raise LwlcError(
                f"num_clients={num_clients} and local_epochs={local_epochs} must be >= 1"
            )
        if lr_schedule not in LR_SCHEDULES:
            raise LwlcError(
                f"unknown lr_schedule {lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}"
            )
        self.save_hyperparameters(ignore=["model"])
        self.local_epochs = local_epochs
        self.average_keys = averaged_keys(model, average)
        template = copy.deepcopy(model)
        reinitialize(template, init_seed)
        self.clients = nn.ModuleList(copy.deepcopy(template) for _ in range(num_clients))
        self.global_net = copy.deepcopy(template).requires_grad_(False)
        self.history: list[dict[str, float]] = []
        self._weights: list[float] = []
        self._class_shares = torch.empty(0)
        self._correct = torch.empty(0)
        self._total = torch.empty(0)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        sizes = getattr(data, "sizes", None)
        if sizes is None:
            raise LwlcError(
                "FederatedModule needs a FederatedDataModule (it reads the clients' data sizes)"
            )
        if len(sizes) != len(self.clients):
            raise LwlcError(
                f"the data module has {len(sizes)} clients but the model {len(self.clients)}: "
                "give both the same num_clients"
            )
        self._weights = [float(s) for s in sizes]
        counts = data.label_counts().double()
        self._class_shares = counts / counts.sum(dim=1, keepdim=True)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.clients.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        if hp.lr_schedule == "constant":
            return optimizer
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, self.trainer.max_epochs or 1)
        )
        return {"optimizer": optimizer, "lr_scheduler": cosine}

    def training_step(self, batch: Sequence[Sequence[Tensor] | None], batch_idx: int) -> Tensor:
        total = torch.zeros((), device=self.device)
        for i, (net, part) in enumerate(zip(self.clients, batch, strict=True)):
            if part is None:  # this client has finished its epoch
                continue
            x, y = part
            loss = F.cross_entropy(net(x), y)
            self.log(f"client{i}/train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
            total = total + loss
        return total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        last_batch = batch_idx + 1 == self.trainer.num_training_batches
        if last_batch and (self.current_epoch + 1) % self.local_epochs == 0:
            self.aggregate()

    @torch.no_grad()
    def aggregate(self) -> None:
        """The server step: every client's averaged layers become the weighted mean."""
        if not self.average_keys:
            return
        mean = weighted_average(
            [c.state_dict() for c in self.clients], self._weights, self.average_keys
        )
        for client in self.clients:
            client.load_state_dict(mean, strict=False)

    def on_validation_epoch_start(self) -> None:
        states = [c.state_dict() for c in self.clients]
        floats = [k for k, v in states[0].items() if torch.is_floating_point(v)]
        self.global_net.load_state_dict(
            {**states[0], **weighted_average(states, self._weights, floats)}
        )
        shape = (len(self.clients) + 1, self._class_shares.shape[1])
        self._correct = torch.zeros(shape, dtype=torch.float64)
        self._total = torch.zeros(shape[1], dtype=torch.float64)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        classes = self._total.shape[0]
        self._total += torch.bincount(y.cpu(), minlength=classes).double()
        for m, net in enumerate([*self.clients, self.global_net]):
            hits = y[net(x).argmax(dim=-1) == y]
            self._correct[m] += torch.bincount(hits.cpu(), minlength=classes).double()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        seen = self._total > 0
        per_class = self._correct[:, seen] / self._total[seen]
        acc = self._correct.sum(dim=1) / self._total.sum()
        shares = self._class_shares[:, seen]
        local = (shares * per_class[:-1]).sum(dim=1) / shares.sum(dim=1)
        row = {
            "round": float((self.current_epoch + 1) // self.local_epochs),
            "epoch": float(self.current_epoch + 1),
        }
        for i in range(len(self.clients)):
            row[f"client{i}/acc"] = float(acc[i])
            row[f"client{i}/local_acc"] = float(local[i])
        row["clients/acc"] = float(acc[:-1].mean())
        row["clients/local_acc"] = float(local.mean())
        row["global/acc"] = float(acc[-1])
        self.history.append(row)
        self.log_dict({k: v for k, v in row.items() if "/" in k})
