"""In-memory LightningDataModules with deterministic splits and per-seed, per-epoch data order."""

from collections.abc import Callable, Iterator, Sequence

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lwlc.core.errors import LwlcError
from lwlc.data.checks import check_splits

SPLITS = ("train", "val", "test")
Augment = Callable[[Tensor, torch.Generator], Tensor]

_MASK64 = (1 << 64) - 1
# The label of a padding sample: F.cross_entropy's default ``ignore_index``, left out of the loss.
PAD_LABEL = -100


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 chained), identical in every process."""
    state = 0
    for value in values:
        state = ((state ^ (value & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state >> 1


class EpochSeededSampler(DistributedSampler):
    """Shuffles ``range(n)`` with a permutation that depends only on ``(seed, epoch)``.

    Recreating the sampler and calling ``set_epoch(e)`` yields epoch e's order again, so a run
    resumed from a checkpoint sees the same data order as an uninterrupted one. Under an
    initialised torch.distributed, process r of P takes the positions r, r + P, r + 2P, ... of
    the order: with a per-process batch of b, the processes' k-th batches together are exactly
    the k-th batch of P x b samples of one process (the last one shorter, its shares differing
    by one sample at most), and no sample is seen twice. A process with one sample fewer gets a
    padding entry ``-1 - i`` at its end (P processes need as many batches, or the others wait
    for it forever): ``TensorBatches`` gives it the label ``PAD_LABEL``, which the loss ignores.
    Being a DistributedSampler also stops Lightning from wrapping it in another one.
    """

    def __init__(self, n: int, seed: int) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            range(n),
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=seed,
        )
        self.n = n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=generator).tolist()
        share = order[self.rank :: self.num_replicas]
        padding = [-1 - i for i in order[: self.num_samples - len(share)]]
        return iter(share + padding)


class TensorBatches(Dataset):
    """Inputs and labels held as tensors, fetched a whole batch at a time.

    With ``augment``, each batch is augmented with a generator seeded by ``seed`` and the batch's
    indices, so loaders with the same order seed yield identical augmented batches. An index
    ``-1 - i`` (a sampler's padding) is sample i with every label set to ``PAD_LABEL``.
    """

    def __init__(
        self, inputs: Tensor, labels: Tensor, augment: Augment | None = None, seed: int = 0
    ) -> None:
        self.inputs = inputs
        self.labels = labels
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        inputs, labels = self.__getitems__([index])
        return inputs[0], labels[0]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        padding = index < 0
        index = torch.where(padding, -1 - index, index)
        inputs, labels = self.inputs[index], self.labels[index]
        if padding.any():
            labels[padding] = PAD_LABEL
        if self.augment is not None:
            inputs = self.augment(
                inputs, torch.Generator().manual_seed(mix_seed(self.seed, *indices))
            )
        return inputs, labels


def download_failed(name: str, root: str, err: Exception) -> LwlcError:
    """The one-line user error for a failed torchvision download."""
    text = str(err).strip()
    reason = text.splitlines()[0] if text else repr(err)
    return LwlcError(
        f"downloading {name} into {root}/ failed ({reason}); check the connection or put the "
        "files there by hand"
    )


def _whole_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate for TensorBatches: ``__getitems__`` already returns the stacked batch."""
    return batch


class TensorDataModule(L.LightningDataModule):
    """Base of lwlc's data modules: the whole data set as normalised in-memory tensors.

    Subclasses set the class attributes and implement ``_load``; ``_prepare`` checks for (or
    downloads) the files. The train/val split is a ``split_seed`` permutation of the official
    training set; ``test`` is the official test set. ``order_seeds`` gives one shuffled training
    stream per seed; left at None, the model sets them (a pair its two order seeds, one network
    seed 0), so a plain ``Trainer.fit(PairedModule(MLP()), DigitsDataModule())`` works.
    ``member_halves=True`` gives each of the two members its own disjoint half of the training
    split (the authors' Figure 1 pair; see :meth:`halves`), one stream each; left at None the
    pair sets it (``PairedModule(member_data="halves")``).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        val_size: float = 0.1,
        split_seed: int = 0,
        order_seeds: Sequence[int] | None = None,
        member_halves: bool | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise LwlcError(
                f"batch sizes must be positive, got batch_size={batch_size}, "
                f"eval_batch_size={eval_batch_size}"
            )
        if not 0 <= val_size < 1:
            raise LwlcError(f"val_size is a fraction of the training set in [0, 1), got {val_size}")
        if order_seeds is not None and not order_seeds:
            raise LwlcError("order_seeds is empty: give one data-order seed per trained network")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.split_seed = split_seed
        self.order_seeds = None if order_seeds is None else [int(seed) for seed in order_seeds]
        self.member_halves = member_halves
        self._splits: dict[str, tuple[Tensor, Tensor]] | None = None

    def _prepare(self) -> None:
        """Make sure the data is available (download it if asked), else raise LwlcError."""

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The official (train inputs, train labels, test inputs, test labels).

        Inputs are float NCHW with pixel values scaled to [0, 1], labels int64.
        """
        raise NotImplementedError

    def train_augment(self) -> Augment | None:
        """The augmentation applied to training batches (none by default)."""
        return None

    def source(self) -> str:
        """Where ``_load`` reads the data from, for the log line of ``setup`` (by default the
        method itself: subclasses name their folder, files or package)."""
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}._load"

    def prepare_data(self) -> None:
        """Check for or download the data (Lightning calls this on one process per node)."""
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load, normalise and split the data once, and log where it came from (one line, rank 0:
        ``lwlc: data: <name> from <source> (<n> train, <n> val, <n> test)``); later calls do
        nothing."""
        if self._splits is not None:
            return
        train_x, train_y, test_x, test_y = self._load()
        source = f"{type(self).__name__} ({self.source()})"  # sample numbers as in the files
        check_splits(
            {"train": (train_x, train_y), "test": (test_x, test_y)}, self.num_classes, source
        )
        train_x, test_x = self.normalise(train_x), self.normalise(test_x)
        n_val = round(self.val_size * len(train_y))
        order = torch.randperm(
            len(train_y), generator=torch.Generator().manual_seed(self.split_seed)
        )
        val, train = order[:n_val], order[n_val:]
        self._splits = {
            "train": (train_x[train], train_y[train]),
            "val": (train_x[val], train_y[val]),
            "test": (test_x, test_y),
        }
        rank_zero_info(
            f"lwlc: data: {self.name} from {self.source()} ({len(train)} train, {n_val} val, "
            f"{len(test_y)} test)"
        )

    def normalise(self, images: Tensor) -> Tensor:
        """Per-channel standardisation of [0, 1]-scaled images with the data set's mean and std."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return ((images.to(torch.float32) - mean) / std).contiguous()

    def tensors(self, split: str, max_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``max_samples`` of a split as normalised, never augmented (inputs, labels)."""
        if split not in SPLITS:
            raise LwlcError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
        if self._splits is None:
            self.prepare_data()
            self.setup()
        assert self._splits is not None
        inputs, labels = self._splits[split]
        return inputs[:max_samples], labels[:max_samples]

    def halves(self) -> tuple[Tensor, Tensor]:
        """Indices into the training split of member A's and member B's halves.

        A seeded permutation (``split_seed``) of the split cut in two (A gets the odd sample):
        disjoint, together the whole split, and the same in every process and run.
        """
        n = len(self.tensors("train")[1])
        seed = mix_seed(self.split_seed, n, 2)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return order[: (n + 1) // 2], order[(n + 1) // 2 :]

    def train_dataloader(self) -> DataLoader | list[DataLoader]:
        """One shuffled loader per order seed (a single loader when there is one seed); with
        ``member_halves`` one loader per member, each over its own half."""
        inputs, labels = self.tensors("train")
        augment = self.train_augment()
        if self.member_halves:
            seeds = list(self.order_seeds or [0])
            seeds = seeds * 2 if len(seeds) == 1 else seeds
            return [
                self.loader(
                    TensorBatches(inputs[half], labels[half], augment, seed),
                    self.batch_size,
                    EpochSeededSampler(len(half), seed),
                )
                for half, seed in zip(self.halves(), seeds, strict=True)
            ]
        loaders = [
            self.loader(
                TensorBatches(inputs, labels, augment, seed),
                self.batch_size,
                EpochSeededSampler(len(labels), seed),
            )
            for seed in self.order_seeds or [0]
        ]
        return loaders[0] if len(loaders) == 1 else loaders

    def val_dataloader(self) -> DataLoader:
        """The validation split in order, without augmentation."""
        return self.loader(TensorBatches(*self.tensors("val")), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """The test split in order, without augmentation."""
        return self.loader(TensorBatches(*self.tensors("test")), self.eval_batch_size)

    def loader(
        self, data: TensorBatches, batch_size: int, sampler: EpochSeededSampler | None = None
    ) -> DataLoader:
        """A DataLoader of whole batches of ``data`` with this module's workers (also used by
        lwlc.training.federated for each client's share)."""
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_whole_batch,
            persistent_workers=self.num_workers > 0,
        )
