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
``non-iid`` and ``extreme`` (label shards, as McMahan et al.), ``dirichlet`` label skew with a
minimum client size (PFL-Non-IID, the authors' 20 CIFAR-10 clients) and ``shards`` of distinct
classes (FedBABU, the authors' 100 CIFAR-100 clients). Every client has its own test set
(``FederatedDataModule.test_sets``), and the authors' averaged tensors are a named scheme
(``AVERAGING_SCHEMES``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from lwlc.core import layers
from lwlc.core.errors import LwlcError
from lwlc.data.base import EpochSeededSampler, TensorBatches, TensorDataModule, mix_seed
from lwlc.training.modules import reinitialize

SPLITS = ("iid", "non-iid", "extreme", "dirichlet", "shards")
TEST_SETS = ("matched", "split", "shared")
WEIGHTINGS = ("samples", "batches")
LR_SCHEDULES = ("constant", "cosine")
DIRICHLET_TRIES = 10_000
TRAIN_FRACTION = 0.75  # PFL-Non-IID's train_size: each client's data is 75% train, 25% test

# Named averaging schemes: the exact state-dict keys the server averages and the weighting.
AVERAGING_SCHEMES: dict[str, tuple[tuple[str, ...], str]] = {
    # The authors' personalised ResNet-18 (github.com/link-er/layer-wise-lmc,
    # LLMC/federated_train.py, ``layers_to_agg``): the first block's convolutions of each stage
    # and the head, weighted by each client's number of training batches (``len(trainloader)``).
    "authors_resnet18": (
        (
            "layer1.0.conv1.weight",
            "layer2.0.conv1.weight",
            "layer2.0.conv2.weight",
            "layer3.0.conv1.weight",
            "layer3.0.conv2.weight",
            "layer4.0.conv1.weight",
            "layer4.0.conv2.weight",
            "fc.weight",
            "fc.bias",
        ),
        "batches",
    ),
}


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


def _distinct_rows(deal: np.ndarray, rng: np.random.Generator) -> None:
    """Swap entries between rows of ``deal`` (in place) until no row holds a class twice.

    Each swap moves a repeated class of row r to a row that lacks it, in exchange for a class
    row r lacks, so it removes one repeat and creates none.
    """
    for r in range(len(deal)):
        while True:
            _, first = np.unique(deal[r], return_index=True)
            repeats = np.setdiff1d(np.arange(deal.shape[1]), first)
            if not len(repeats):
                break
            j = int(repeats[0])
            label = deal[r, j]
            lacking = ~(deal == label).any(axis=1)
            candidates = np.argwhere(lacking[:, None] & ~np.isin(deal, deal[r]))
            if not len(candidates):
                raise LwlcError(
                    "cannot deal every client shards of distinct classes: use fewer "
                    "shards_per_client"
                )
            r2, j2 = candidates[rng.integers(len(candidates))]
            deal[r, j], deal[r2, j2] = deal[r2, j2], label


def _class_shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each class cut into equal shards; each client dealt ``shards_per_client`` of distinct
    classes.

    FedBABU's ``noniid`` (the authors' CIFAR-100 clients): ``clients * shards_per_client /
    classes`` shards per class, shard labels shuffled and dealt out; here a client never gets
    two shards of one class (FedBABU's deal allows it), so each holds exactly
    ``shards_per_client`` labels.
    """
    classes = np.unique(labels)
    total = num_clients * shards_per_client
    if total % len(classes) or shards_per_client > len(classes):
        raise LwlcError(
            f"the shards split needs num_clients * shards_per_client ({total}) to be a multiple "
            f"of the {len(classes)} classes and shards_per_client <= {len(classes)}"
        )
    per_class = total // len(classes)
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    if min(len(m) for m in members) < per_class:
        raise LwlcError(
            f"the shards split cuts every class into {per_class} shards, but a class has fewer "
            "samples: use fewer clients or shards_per_client"
        )
    shards = [np.array_split(m, per_class) for m in members]
    deal = rng.permutation(np.repeat(np.arange(len(classes)), per_class))
    deal = deal.reshape(num_clients, shards_per_client)
    _distinct_rows(deal, rng)
    dealt = [0] * len(classes)
    parts = []
    for row in deal:
        chunks = []
        for j in row:
            chunks.append(shards[j][dealt[j]])
            dealt[j] += 1
        parts.append(np.concatenate(chunks))
    return parts


def _dirichlet_counts(
    class_sizes: np.ndarray,
    num_clients: int,
    concentration: float,
    tries: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``tries`` PFL-Non-IID draws at once: ``[tries, clients, classes]`` counts and whether
    each draw is usable.

    Per class, the client shares are drawn from Dirichlet(alpha) and zeroed for the clients that
    already hold ``N / num_clients`` samples; the cuts are floored as theirs. A draw whose mass
    underflowed entirely onto full clients is unusable.
    """
    n = int(class_sizes.sum())
    shares = rng.dirichlet(np.full(num_clients, concentration), size=(tries, len(class_sizes)))
    counts = np.zeros((tries, num_clients, len(class_sizes)), dtype=np.int64)
    usable = np.ones(tries, dtype=bool)
    for c, size in enumerate(class_sizes):
        open_ = counts.sum(axis=2) < n / num_clients
        share = shares[:, c, :] * open_
        total = share.sum(axis=1, keepdims=True)
        usable &= total[:, 0] > 0
        cuts = (np.cumsum(share / np.where(total > 0, total, 1.0), axis=1) * size).astype(np.int64)
        edges = np.concatenate(
            [np.zeros((tries, 1), np.int64), cuts[:, :-1], np.full((tries, 1), size)], axis=1
        )
        counts[:, :, c] = np.diff(np.maximum.accumulate(np.minimum(edges, size), axis=1), axis=1)
    return counts, usable


def _top_up(counts: np.ndarray, min_size: int) -> np.ndarray:
    """Move samples to the clients below ``min_size`` from the largest client's largest class."""
    counts = counts.copy()
    for client in np.argsort(counts.sum(axis=1), kind="stable"):
        while (short := min_size - int(counts[client].sum())) > 0:
            sizes = counts.sum(axis=1)
            donor = int(np.argmax(sizes))
            c = int(np.argmax(counts[donor]))
            move = min(short, int(counts[donor, c]), int(sizes[donor]) - min_size)
            counts[donor, c] -= move
            counts[client, c] += move
    return counts


def _dirichlet(
    labels: np.ndarray,
    num_clients: int,
    concentration: float,
    min_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """PFL-Non-IID's ``separate_data(partition="dir")``: redraw until every client has
    ``min_size`` samples; after ``DIRICHLET_TRIES`` draws the draw with the largest smallest
    client is topped up (:func:`_top_up`) instead of redrawing for ever as theirs."""
    classes, class_sizes = np.unique(labels, return_counts=True)
    chunk = max(1, min(DIRICHLET_TRIES, 2_000_000 // (num_clients * len(classes))))
    best: np.ndarray | None = None
    for _ in range(0, DIRICHLET_TRIES, chunk):
        counts, usable = _dirichlet_counts(class_sizes, num_clients, concentration, chunk, rng)
        smallest = np.where(usable, counts.sum(axis=2).min(axis=1), -1)
        if (smallest >= min_size).any():  # the first draw that meets the minimum, as theirs
            best = counts[int(np.argmax(smallest >= min_size))]
            break
        if smallest.max() >= 0 and (best is None or smallest.max() > best.sum(1).min()):
            best = counts[int(np.argmax(smallest))]  # else the draw with the largest minimum
    if best is None:
        raise LwlcError(
            f"every Dirichlet({concentration}) draw degenerated: use a larger concentration"
        )
    counts = _top_up(best, min_size)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for j, c in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        for client, chunk in enumerate(np.split(members, np.cumsum(counts[:, j])[:-1])):
            parts[client].append(chunk)
    return [np.concatenate(p) for p in parts]


def split_clients(
    labels: Tensor,
    num_clients: int,
    scheme: str = "iid",
    seed: int = 0,
    shards_per_client: int | None = None,
    concentration: float = 0.5,
    min_size: int = 1,
) -> list[Tensor]:
    """Disjoint sorted index sets, one per client of at least ``min_size`` samples, that
    together cover ``range(len(labels))``.

    - ``iid``: a random partition into near-equal parts.
    - ``non-iid``: label shards: the data sorted by label is cut into ``num_clients *
      shards_per_client`` equal shards dealt out at random (default ``shards_per_client`` =
      number of classes, so each client sees most classes in skewed proportions).
    - ``extreme``: label shards with one shard per client: each client holds about
      ``classes / num_clients`` classes (whole classes, except where a shard boundary cuts one).
    - ``dirichlet``: per class, client shares drawn from Dirichlet(``concentration``) as
      PFL-Non-IID (redrawn until every client holds ``min_size``); small concentrations (0.01)
      give nearly one client per class.
    - ``shards``: every class cut into equal shards, each client dealt ``shards_per_client``
      (default 2) shards of distinct classes: the authors' CIFAR-100 clients (100 clients x 10).
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
    if min_size < 1 or min_size * num_clients > n:
        raise LwlcError(
            f"min_size={min_size} must be >= 1 and fit {num_clients} clients into {n} samples: "
            "lower min_size or the number of clients"
        )
    y = labels.cpu().numpy().astype(np.int64)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)
    elif scheme == "dirichlet":
        parts = _dirichlet(y, num_clients, concentration, min_size, rng)
    elif scheme == "shards":
        parts = _class_shards(y, num_clients, shards_per_client or 2, rng)
    else:
        per_client = 1 if scheme == "extreme" else shards_per_client or int(y.max()) + 1
        if per_client < 1 or num_clients * per_client > n:
            raise LwlcError(
                f"shards_per_client={per_client} must be >= 1 and leave every shard a sample "
                f"({num_clients} clients, {n} samples)"
            )
        parts = _label_shards(y, num_clients, per_client, rng)
    smallest = min(len(p) for p in parts)
    if smallest < min_size:
        raise LwlcError(
            f"the {scheme} split gives a client {smallest} samples, fewer than "
            f"min_size={min_size}: use fewer clients or the dirichlet split"
        )
    return [torch.as_tensor(np.sort(p), dtype=torch.long) for p in parts]


def holdout(
    parts: Sequence[Tensor], train_fraction: float = TRAIN_FRACTION, seed: int = 0
) -> tuple[list[Tensor], list[Tensor]]:
    """Each client's indices cut at random into train (``floor(fraction * n)``) and test (the
    rest), as PFL-Non-IID's per-client ``train_test_split(train_size=0.75, shuffle=True)``."""
    if not 0 < train_fraction < 1:
        raise LwlcError(f"train_fraction must be in (0, 1), got {train_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for client, part in enumerate(parts):
        n_train = int(np.floor(train_fraction * len(part)))
        if n_train < 1:
            raise LwlcError(
                f"client {client} holds {len(part)} samples, too few to keep a training part "
                f"at train_fraction={train_fraction}: raise min_size"
            )
        order = torch.as_tensor(rng.permutation(len(part)), dtype=torch.long)
        train.append(part[order[:n_train]].sort().values)
        test.append(part[order[n_train:]].sort().values)
    return train, test


def matched_test_sets(train_counts: Tensor, test_labels: Tensor, seed: int = 0) -> list[Tensor]:
    """Disjoint test-split indices per client with the client's own label distribution.

    Each class's test samples go at random to the clients in proportion to their training
    samples of that class (largest remainders); a class no client trains on goes to none. For
    label shards this is the authors' CIFAR-100 test split (FedBABU's test shards of the same
    labels): a client with one of a class's ten training shards gets a tenth of its test samples.
    """
    rng = np.random.default_rng(seed)
    counts = train_counts.cpu().numpy().astype(np.float64)
    y = test_labels.cpu().numpy()
    parts: list[list[np.ndarray]] = [[] for _ in range(len(counts))]
    for c in range(counts.shape[1]):
        members = rng.permutation(np.flatnonzero(y == c))
        held = counts[:, c]
        if not len(members) or held.sum() == 0:
            continue
        quota = held / held.sum() * len(members)
        take = np.floor(quota).astype(np.int64)
        extra = np.argsort(-(quota - take), kind="stable")[: len(members) - take.sum()]
        take[extra] += 1
        for client, chunk in enumerate(np.split(members, np.cumsum(take)[:-1])):
            parts[client].append(chunk)
    return [
        torch.as_tensor(np.sort(np.concatenate(p)) if p else [], dtype=torch.long) for p in parts
    ]


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
    """The state-dict keys to average: ``"all"``, ``"none"``, a named scheme of
    ``AVERAGING_SCHEMES`` (``"authors_resnet18"``) or layer patterns (as ``analyze``).

    Patterns (glob, or ``re:<regex>``) select default layer groups by name (``fc1``, ``layer1.*``);
    integer buffers are never averaged.
    """
    state = model.state_dict()
    float_keys = [k for k, v in state.items() if torch.is_floating_point(v)]
    if average == "all":
        return float_keys
    if average == "none":
        return []
    if isinstance(average, str) and average in AVERAGING_SCHEMES:
        keys = AVERAGING_SCHEMES[average][0]
        missing = [k for k in keys if k not in float_keys]
        if missing:
            raise LwlcError(
                f"averaging scheme {average!r} needs the tensors {', '.join(missing)}, which "
                f"{type(model).__name__} lacks: use lwlc.models.ResNet18 or layer patterns"
            )
        return [k for k in float_keys if k in keys]
    patterns = [average] if isinstance(average, str) else list(average)
    if not patterns:
        raise LwlcError("average needs 'all', 'none' or at least one layer pattern")
    chosen = {k for g in layers.select(layers.default_groups(model), patterns) for k in g.keys}
    return [k for k in float_keys if k in chosen]


class FederatedDataModule(pl.LightningDataModule):
    """A data module's data divided among clients, each with its own training and test set.

    ``test_sets`` says where each client's test set comes from:

    - ``matched`` (default): the training split is divided by ``split``; the test split is
      divided like it (:func:`matched_test_sets`): each client's test set has its own label
      distribution.
    - ``split``: PFL-Non-IID, which the authors' CIFAR-10 clients come from: the training and
      test splits are pooled, divided by ``split`` (``min_size`` applies to the pooled parts),
      and each client's part is cut at random into ``train_fraction`` (0.75) for training and
      the rest for its test set (:func:`holdout`).
    - ``shared``: every client is tested on the whole test split (own-task accuracy is then the
      per-class accuracy weighted by its training label distribution).

    Each client's loader shuffles its own part with its own seed (derived from ``order_seed``);
    an epoch is one pass of every client over its data (clients with less data wait for the
    others, Lightning's ``max_size`` mode yields ``None`` for them). Validation runs once over
    every client's test set together: batches ``(inputs, labels, owner)``, ``owner`` the client
    whose test set holds the sample (-1: none).
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
        min_size: int = 1,
        test_sets: str = "matched",
        train_fraction: float = TRAIN_FRACTION,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise LwlcError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        if test_sets not in TEST_SETS:
            raise LwlcError(f"unknown test_sets {test_sets!r}; choose from {', '.join(TEST_SETS)}")
        self.data = data
        self.num_clients = num_clients
        self.split = split
        self.split_seed = split_seed
        self.shards_per_client = shards_per_client
        self.concentration = concentration
        self.order_seed = order_seed
        self.min_size = min_size
        self.test_sets = test_sets
        self.train_fraction = train_fraction
        self._parts: tuple[tuple[Tensor, Tensor], list[Tensor], list[Tensor]] | None = None

    @property
    def num_classes(self) -> int:
        """The number of classes of the underlying data."""
        return self.data.num_classes

    def _divide(self) -> tuple[tuple[Tensor, Tensor], list[Tensor], list[Tensor]]:
        """(training source, train indices into it, test indices into the evaluation source)."""
        if self._parts is None:
            train, test = self.data.tensors("train"), self.data.tensors("test")
            if self.test_sets == "split":
                train = (torch.cat([train[0], test[0]]), torch.cat([train[1], test[1]]))
            parts = split_clients(
                train[1],
                self.num_clients,
                self.split,
                self.split_seed,
                self.shards_per_client,
                self.concentration,
                self.min_size,
            )
            if self.test_sets == "split":
                parts, tests = holdout(parts, self.train_fraction, self.split_seed)
            elif self.test_sets == "matched":
                counts = torch.stack(
                    [torch.bincount(train[1][i], minlength=self.num_classes) for i in parts]
                )
                tests = matched_test_sets(counts, test[1], self.split_seed)
            else:
                tests = []
            self._parts = (train, parts, tests)
        return self._parts

    @property
    def client_indices(self) -> list[Tensor]:
        """Each client's training indices: into the training split, or for ``test_sets="split"``
        into the training and test splits concatenated."""
        return self._divide()[1]

    @property
    def test_indices(self) -> list[Tensor]:
        """Each client's test indices into the test split (``matched``) or into the pooled
        splits (``split``); empty for ``shared``."""
        return self._divide()[2]

    @property
    def sizes(self) -> list[int]:
        """The number of training samples of each client (FedAvg's averaging weights)."""
        return [len(i) for i in self.client_indices]

    @property
    def batch_counts(self) -> list[int]:
        """The number of training batches of each client per epoch (the authors' weights)."""
        return [math.ceil(n / self.data.batch_size) for n in self.sizes]

    def label_counts(self) -> Tensor:
        """``[clients, classes]``: how many training samples of each class each client holds."""
        labels = self._divide()[0][1]
        return torch.stack(
            [torch.bincount(labels[i], minlength=self.num_classes) for i in self.client_indices]
        )

    def evaluation_set(self) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs, labels, owner) of the samples validation evaluates, in order."""
        (inputs, labels), _, tests = self._divide()
        if self.test_sets != "split":
            inputs, labels = self.data.tensors("test")
        owner = torch.full((len(labels),), -1, dtype=torch.long)
        for client, index in enumerate(tests):
            owner[index] = client
        if self.test_sets == "split":
            keep = owner >= 0
            return inputs[keep], labels[keep], owner[keep]
        return inputs, labels, owner

    def train_dataloader(self) -> CombinedLoader:
        (inputs, labels), parts, _ = self._divide()
        augment = self.data.train_augment()
        loaders = []
        for client, index in enumerate(parts):
            seed = mix_seed(self.order_seed, client)
            batches = TensorBatches(inputs[index], labels[index], augment, seed)
            loaders.append(
                self.data.loader(
                    batches, self.data.batch_size, EpochSeededSampler(len(index), seed)
                )
            )
        return CombinedLoader(loaders, mode="max_size")

    def val_dataloader(self) -> DataLoader:
        batches = BatchSampler(
            SequentialSampler(range(len(self.evaluation_set()[1]))),
            self.data.eval_batch_size,
            drop_last=False,
        )
        return DataLoader(TensorDataset(*self.evaluation_set()), sampler=batches, batch_size=None)


class FederatedModule(pl.LightningModule):
    """``num_clients`` copies of ``model`` from one initialisation, averaged every ``local_epochs``.

    ``average``: ``"all"`` (FedAvg), ``"none"`` (local training only), a named scheme
    (``"authors_resnet18"``: the authors' 9 tensors) or layer patterns (only the matching layers
    are averaged; the rest stay personal). ``weighting``: the averaging weights, each client's
    number of training ``samples`` (FedAvg) or of training ``batches`` per epoch (the authors');
    by default ``batches`` for the authors' scheme, else ``samples``. After every round the
    clients' test sets are evaluated (see ``FederatedDataModule``) and logged: per client
    ``client{i}/local_acc`` (accuracy on its own test set: its personal task) and
    ``client{i}/acc`` (on every client's test set together), their means ``clients/local_acc``
    and ``clients/acc`` (clients without test samples left out), and for the model whose every
    layer is the weighted mean (what FedAvg would deploy) ``global/acc`` and ``global/local_acc``
    (its mean accuracy on the clients' own test sets). Rows are also kept in ``history``.
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
        weighting: str | None = None,
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
        named = isinstance(average, str) and average in AVERAGING_SCHEMES
        weighting = weighting or (AVERAGING_SCHEMES[average][1] if named else "samples")
        if weighting not in WEIGHTINGS:
            raise LwlcError(f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
        self.save_hyperparameters(ignore=["model"])
        self.local_epochs = local_epochs
        self.weighting = weighting
        self.average_keys = averaged_keys(model, average)
        template = copy.deepcopy(model)
        reinitialize(template, init_seed)
        self.clients = nn.ModuleList(copy.deepcopy(template) for _ in range(num_clients))
        self.global_net = copy.deepcopy(template).requires_grad_(False)
        self.history: list[dict[str, float]] = []
        self._weights: list[float] = []
        self._class_shares = torch.empty(0)
        self._shared_test = False
        self._correct = torch.empty(0)
        self._total = torch.empty(0)
        self._own_correct = torch.empty(0)
        self._own_total = torch.empty(0)

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
        counts_of = {"samples": sizes, "batches": data.batch_counts}
        self._weights = [float(s) for s in counts_of[self.weighting]]
        self._shared_test = data.test_sets == "shared"
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
        models, clients = len(self.clients) + 1, len(self.clients)
        classes = self._class_shares.shape[1]
        self._correct = torch.zeros(models, classes, dtype=torch.float64)
        self._total = torch.zeros(classes, dtype=torch.float64)
        self._own_correct = torch.zeros(models, clients, dtype=torch.float64)
        self._own_total = torch.zeros(clients, dtype=torch.float64)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y, owner = batch
        y_cpu, owner_cpu = y.cpu(), owner.cpu()
        classes, clients = self._total.shape[0], self._own_total.shape[0]
        owned = owner_cpu >= 0
        self._total += torch.bincount(y_cpu, minlength=classes).double()
        self._own_total += torch.bincount(owner_cpu[owned], minlength=clients).double()
        for m, net in enumerate([*self.clients, self.global_net]):
            hit = (net(x).argmax(dim=-1) == y).cpu()
            self._correct[m] += torch.bincount(y_cpu[hit], minlength=classes).double()
            self._own_correct[m] += torch.bincount(
                owner_cpu[hit & owned], minlength=clients
            ).double()

    def own_accuracy(self) -> Tensor:
        """``[models, clients]``: each model's accuracy on each client's own test set (NaN for a
        client without test samples); with shared test sets, the per-class accuracy weighted by
        the client's training label distribution."""
        if not self._shared_test:
            return self._own_correct / self._own_total
        seen = self._total > 0
        per_class = self._correct[:, seen] / self._total[seen]
        shares = self._class_shares[:, seen]
        return (per_class @ shares.T) / shares.sum(dim=1)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc = self._correct.sum(dim=1) / self._total.sum()
        own = self.own_accuracy()
        local = own.diagonal()
        row = {
            "round": float((self.current_epoch + 1) // self.local_epochs),
            "epoch": float(self.current_epoch + 1),
        }
        for i in range(len(self.clients)):
            row[f"client{i}/acc"] = float(acc[i])
            row[f"client{i}/local_acc"] = float(local[i])
        row["clients/acc"] = float(acc[:-1].mean())
        row["clients/local_acc"] = float(local.nanmean())
        row["global/acc"] = float(acc[-1])
        row["global/local_acc"] = float(own[-1].nanmean())
        self.history.append(row)
        self.log_dict({k: v for k, v in row.items() if "/" in k})
