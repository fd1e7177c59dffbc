"""Federated clients' data: a data module's data divided among clients by a split of
:mod:`~lwlc.training.federated.partitioning`, each client with its own training and test set."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from lwlc.core.errors import LwlcError
from lwlc.data.base import EpochSeededSampler, TensorBatches, TensorDataModule, mix_seed
from lwlc.training.federated.partitioning import (
    SPLITS,
    TRAIN_FRACTION,
    holdout,
    matched_test_sets,
    split_clients,
)

TEST_SETS = ("matched", "split", "shared")


class RoundSampler(EpochSeededSampler):
    """``EpochSeededSampler`` whose epoch ``e`` is the run's epoch ``e + offset``: the order of
    the run's epoch whatever Trainer counts the epochs."""

    def __init__(self, n: int, seed: int, offset: int = 0) -> None:
        super().__init__(n, seed)
        self.offset = offset
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch + self.offset)


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

    def client_train_set(self, client: int) -> tuple[Tensor, Tensor]:
        """(inputs, labels) of client ``client``'s training part, in index order (no shuffling,
        no augmentation): what a client evaluates candidate models on with its own data."""
        (inputs, labels), parts, _ = self._divide()
        return inputs[parts[client]], labels[parts[client]]

    def client_loader(self, client: int, epoch_offset: int = 0) -> DataLoader:
        """Client ``client``'s shuffled training loader; its epoch ``e`` is the run's epoch
        ``e + epoch_offset`` (a Flower client trains each round with a fresh Trainer)."""
        (inputs, labels), parts, _ = self._divide()
        if not 0 <= client < len(parts):
            raise LwlcError(f"client {client} does not exist: the split has {len(parts)} clients")
        index = parts[client]
        seed = mix_seed(self.order_seed, client)
        batches = TensorBatches(inputs[index], labels[index], self.data.train_augment(), seed)
        sampler = RoundSampler(len(index), seed, epoch_offset)
        return self.data.loader(batches, self.data.batch_size, sampler)

    def train_dataloader(self) -> CombinedLoader:
        loaders = [self.client_loader(client) for client in range(self.num_clients)]
        return CombinedLoader(loaders, mode="max_size")

    def val_dataloader(self) -> DataLoader:
        batches = BatchSampler(
            SequentialSampler(range(len(self.evaluation_set()[1]))),
            self.data.eval_batch_size,
            drop_last=False,
        )
        return DataLoader(TensorDataset(*self.evaluation_set()), sampler=batches, batch_size=None)
