"""The data modules: real loaders on fabricated files, splits, data order, normalisation, errors."""

import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

import lwlc.data.base
import lwlc.data.mnist
from fixtures_data import write_cifar10, write_cifar100, write_mnist
from lwlc.core.errors import LwlcError
from lwlc.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    EpochSeededSampler,
    FashionMNISTDataModule,
    MNISTDataModule,
)
from lwlc.data.base import PAD_LABEL, TensorBatches

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465])
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616])


@pytest.fixture
def cifar_md5_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fabricated CIFAR files cannot match the real md5 sums: accept any existing file."""
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )


@pytest.fixture
def no_system_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep an installed /usr/share/datasets/fashion-mnist out of the tests."""
    monkeypatch.setattr(FashionMNISTDataModule, "system_dirs", (str(tmp_path / "absent"),))


def _ids(images: torch.Tensor, mean: float, std: float) -> list[int]:
    """The unique id the fixtures wrote into each image's first pixel."""
    return torch.round((images[:, 0, 0, 0] * std + mean) * 255).long().tolist()


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    sampler = EpochSeededSampler(n, seed)
    sampler.set_epoch(epoch)
    return list(sampler)


# ---------------------------------------------------------------- digits


def test_digits_shapes_classes_and_split_sizes() -> None:
    dm = DigitsDataModule()
    assert dm.num_classes == 10 and dm.input_shape == (1, 8, 8)
    sizes = {split: len(dm.tensors(split)[1]) for split in ("train", "val", "test")}
    n_test = round(0.2 * 1797)
    n_val = round(0.1 * (1797 - n_test))
    assert sizes == {"train": 1797 - n_test - n_val, "val": n_val, "test": n_test}
    x, y = dm.tensors("train")
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))


def test_digits_normalisation_stats_and_splits_cover_the_data_set() -> None:
    raw = load_digits().images / 16.0
    assert DigitsDataModule.mean == pytest.approx((raw.mean(),))
    assert DigitsDataModule.std == pytest.approx((raw.std(),))
    dm = DigitsDataModule()
    parts = [dm.tensors(split)[0] for split in ("train", "val", "test")]
    restored = torch.cat(parts).double() * raw.std() + raw.mean()
    # Round to sixteenths to compare multisets of images exactly.
    got = Counter(tuple(row) for row in torch.round(restored * 16).long().flatten(1).tolist())
    want = Counter(tuple(row) for row in np.round(raw * 16).astype(int).reshape(len(raw), -1))
    assert got == want
    assert torch.cat(parts).mean().item() == pytest.approx(0.0, abs=0.02)


def test_digits_split_is_deterministic_and_test_ignores_split_seed() -> None:
    a, b, c = (
        DigitsDataModule(split_seed=0),
        DigitsDataModule(split_seed=0),
        DigitsDataModule(split_seed=1),
    )
    for split in ("train", "val", "test"):
        assert torch.equal(a.tensors(split)[0], b.tensors(split)[0])
    assert not torch.equal(a.tensors("val")[0], c.tensors("val")[0])
    assert torch.equal(a.tensors("test")[0], c.tensors("test")[0])


def test_tensors_returns_first_max_samples_and_rejects_unknown_split() -> None:
    dm = DigitsDataModule()
    x, y = dm.tensors("val")
    x5, y5 = dm.tensors("val", max_samples=5)
    assert torch.equal(x5, x[:5]) and torch.equal(y5, y[:5])
    with pytest.raises(LwlcError, match="'valid'.*train, val, test"):
        dm.tensors("valid")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_size": 1.0}, "val_size"),
        ({"order_seeds": []}, "order_seeds"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_invalid_arguments_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(LwlcError, match=message):
        DigitsDataModule(**kwargs)


# ---------------------------------------------------------------- MNIST-format files


@pytest.mark.parametrize(
    ("cls", "subdir", "gz"),
    [
        (MNISTDataModule, "", True),
        (MNISTDataModule, "MNIST/raw", False),
        (FashionMNISTDataModule, "", False),
        (FashionMNISTDataModule, "FashionMNIST/raw", True),
    ],
)
def test_idx_files_are_read_from_flat_or_torchvision_layout(
    cls: type, subdir: str, gz: bool, tmp_path: Path, no_system_fashion_mnist: None
) -> None:
    arrays = write_mnist(tmp_path / subdir, n_train=60, n_test=20, gz=gz)
    dm = cls(root=str(tmp_path), val_size=0.25)
    dm.prepare_data()
    dm.setup("fit")
    x_test, y_test = dm.tensors("test")
    mean, std = dm.mean[0], dm.std[0]
    expected = (arrays["t10k-images-idx3-ubyte"].astype(np.float64) / 255.0 - mean) / std
    assert x_test.shape == (20, 1, 28, 28)
    np.testing.assert_allclose(x_test[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_mnist_normalisation_uses_standard_constants(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, gz=True)
    x, y = MNISTDataModule(root=str(tmp_path)).tensors("train")
    ids = _ids(x, MNIST_MEAN, MNIST_STD)
    raw = arrays["train-images-idx3-ubyte"][ids].astype(np.float64) / 255.0
    np.testing.assert_allclose(
        x[:, 0].numpy(), (raw - MNIST_MEAN) / MNIST_STD, rtol=1e-5, atol=1e-5
    )
    assert y.tolist() == arrays["train-labels-idx1-ubyte"][ids].tolist()


def test_fashion_mnist_found_in_system_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = write_mnist(system, gz=True)
    monkeypatch.setattr(FashionMNISTDataModule, "system_dirs", (str(system),))
    _, y = FashionMNISTDataModule(root=str(tmp_path / "empty")).tensors("test")
    assert y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_searches_debian_package_folder() -> None:
    assert "/usr/share/datasets/fashion-mnist" in map(str, FashionMNISTDataModule().search_dirs())


def test_train_val_split_is_disjoint_covering_and_seeded(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=60, n_test=20, gz=False)
    ids = {}
    for seed in (0, 0, 1):
        dm = MNISTDataModule(root=str(tmp_path), val_size=0.2, split_seed=seed)
        train, val = (_ids(dm.tensors(s)[0], MNIST_MEAN, MNIST_STD) for s in ("train", "val"))
        assert len(val) == 12 and len(train) == 48
        assert sorted(train + val) == list(range(60))
        ids.setdefault(seed, []).append((train, val))
    assert ids[0][0] == ids[0][1]
    assert ids[0][0][1] != ids[1][0][1]
    test_ids = _ids(dm.tensors("test")[0], MNIST_MEAN, MNIST_STD)
    assert test_ids == list(range(60, 80))


def test_corrupt_idx_file_is_a_user_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(LwlcError, match="t10k-labels-idx1-ubyte"):
        MNISTDataModule(root=str(tmp_path)).setup()


# ---------------------------------------------------------------- CIFAR pickles


def test_cifar10_reads_pickles_with_standard_normalisation(
    tmp_path: Path, cifar_md5_skipped: None
) -> None:
    arrays = write_cifar10(tmp_path, per_batch=8, n_test=10)
    dm = CIFAR10DataModule(root=str(tmp_path), val_size=0.25)
    assert dm.num_classes == 10 and dm.input_shape == (3, 32, 32)
    x_test, y_test = dm.tensors("test")
    expected = (arrays["test_images"] / 255.0 - CIFAR10_MEAN) / CIFAR10_STD
    np.testing.assert_allclose(x_test.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert y_test.tolist() == arrays["test_labels"].tolist()
    x_train, y_train = dm.tensors("train")
    assert len(y_train) == 30 and len(dm.tensors("val")[1]) == 10
    ids = _ids(x_train, CIFAR10_MEAN[0], CIFAR10_STD[0])
    assert y_train.tolist() == arrays["train_labels"][ids].tolist()
    # The per-channel stats of the written images, normalised, match the analytic transform.
    raw_channel_means = arrays["train_images"][ids].reshape(-1, 3).mean(0) / 255.0
    got = x_train.mean(dim=(0, 2, 3)).double().numpy()
    np.testing.assert_allclose(got, (raw_channel_means - CIFAR10_MEAN) / CIFAR10_STD, atol=1e-5)


def test_cifar100_reads_fine_labels(tmp_path: Path, cifar_md5_skipped: None) -> None:
    arrays = write_cifar100(tmp_path)
    dm = CIFAR100DataModule(root=str(tmp_path))
    assert dm.num_classes == 100
    x, y = dm.tensors("test")
    assert x.shape == (10, 3, 32, 32)
    assert y.tolist() == arrays["test_labels"].tolist()


def test_corrupted_cifar_is_a_user_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)  # real md5 check on: fabricated files do not match
    with pytest.raises(LwlcError, match="corrupted"):
        CIFAR10DataModule(root=str(tmp_path)).setup()


@pytest.mark.parametrize(
    ("cls", "what"),
    [
        (MNISTDataModule, "MNIST"),
        (FashionMNISTDataModule, "FashionMNIST"),
        (CIFAR10DataModule, "cifar-10-batches-py"),
        (CIFAR100DataModule, "cifar-100-python"),
    ],
)
def test_missing_data_raises_user_error_naming_root(
    cls: type, what: str, tmp_path: Path, no_system_fashion_mnist: None
) -> None:
    root = tmp_path / "nowhere"
    dm = cls(root=str(root))  # constructing never touches the disk
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(LwlcError, match="not found") as info:
            step()
        message = str(info.value)
        assert str(root) in message and what in message and "download true" in message
        assert "\n" not in message


def test_cifar_records_its_config_as_hyperparameters(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(root=str(tmp_path), augment=False, batch_size=64, order_seeds=[1, 2])
    assert dm.hparams["root"] == str(tmp_path)
    assert dm.hparams["augment"] is False
    assert dm.hparams["batch_size"] == 64
    assert list(dm.hparams["order_seeds"]) == [1, 2]
    assert dm.hparams["val_size"] == 0.1


# ---------------------------------------------------------------- sampler and loaders


def test_sampler_order_depends_only_on_seed_and_epoch() -> None:
    n = 50
    assert _epoch_order(n, 3, 0) == _epoch_order(n, 3, 0)
    assert sorted(_epoch_order(n, 3, 0)) == list(range(n))
    assert _epoch_order(n, 3, 0) != _epoch_order(n, 4, 0)
    assert _epoch_order(n, 3, 0) != _epoch_order(n, 3, 1)
    # seed + epoch collisions (as in DistributedSampler's seed + epoch) must not happen
    assert _epoch_order(n, 0, 1) != _epoch_order(n, 1, 0)
    running = EpochSeededSampler(n, 3)
    seen = []
    for epoch in range(4):
        running.set_epoch(epoch)
        seen.append(list(running))
    assert seen[3] == _epoch_order(n, 3, 3)  # a fresh sampler resumed at epoch 3


def _shards(monkeypatch: pytest.MonkeyPatch, n: int, world: int, seed: int, epoch: int):
    """Every rank's list of the sampler under a faked torch.distributed of ``world`` processes."""
    monkeypatch.setattr(lwlc.data.base.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(lwlc.data.base.dist, "get_world_size", lambda: world)
    shards = []
    for rank in range(world):
        monkeypatch.setattr(lwlc.data.base.dist, "get_rank", lambda rank=rank: rank)
        sampler = EpochSeededSampler(n, seed)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    monkeypatch.setattr(lwlc.data.base.dist, "is_initialized", lambda: False)
    return shards


@pytest.mark.parametrize(
    ("n", "world", "batch"),
    [(10, 3, 2), (13, 2, 4), (17, 2, 8), (33, 4, 4), (8, 4, 2), (3, 4, 1)],
    ids=["uneven", "short-last", "one-left", "three-left", "even", "fewer-than-processes"],
)
def test_sampler_splits_every_global_batch_once_among_the_processes(
    monkeypatch: pytest.MonkeyPatch, n: int, world: int, batch: int
) -> None:
    shards = _shards(monkeypatch, n, world, 5, 2)
    full = _epoch_order(n, 5, 2)
    # As many entries on every process (else one would run out of batches and the others wait).
    assert len({len(s) for s in shards}) == 1
    # Padding (negative, pointing at a real sample) only at a process's end, at most one entry.
    for shard in shards:
        real = [i for i in shard if i >= 0]
        assert shard[: len(real)] == real and len(shard) - len(real) <= 1
        assert all(0 <= -1 - i < n for i in shard[len(real) :])
    # Every sample exactly once over the processes.
    assert sorted(i for s in shards for i in s if i >= 0) == list(range(n))
    # The processes' k-th batches of `batch` together are one process's k-th batch of
    # world * batch samples (the last one shorter): the single-process epoch, split.
    global_batch = world * batch
    steps = math.ceil(len(shards[0]) / batch)
    assert steps == math.ceil(n / global_batch)
    for k in range(steps):
        shares = [[i for i in s[k * batch : (k + 1) * batch] if i >= 0] for s in shards]
        assert sorted(i for share in shares for i in share) == sorted(
            full[k * global_batch : (k + 1) * global_batch]
        )
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_padding_entries_are_real_inputs_with_labels_the_loss_ignores() -> None:
    inputs = torch.arange(12.0).view(4, 1, 1, 3)
    labels = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])  # sequences: every token padded
    x, y = TensorBatches(inputs, labels).__getitems__([2, -1 - 3, 0])
    assert torch.equal(x, inputs[[2, 3, 0]])
    assert y.tolist() == [[4, 5], [PAD_LABEL, PAD_LABEL], [0, 1]]
    assert labels[3].tolist() == [6, 7], "the data set itself is left alone"
    logits = torch.randn(3, 2, 8)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
    kept = torch.nn.functional.cross_entropy(
        logits[[0, 2]].flatten(0, 1), y[[0, 2]].flatten(), reduction="sum"
    )
    assert loss == pytest.approx(kept.item(), rel=1e-6)


def test_one_loader_per_order_seed_and_equal_seeds_give_equal_batches(
    tmp_path: Path, cifar_md5_skipped: None
) -> None:
    write_cifar10(tmp_path, per_batch=8)
    dm = CIFAR10DataModule(
        root=str(tmp_path), batch_size=8, val_size=0.2, order_seeds=[7, 7, 8], augment=True
    )
    dm.setup("fit")
    loaders = dm.train_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 3
    batches = [list(loader) for loader in loaders]
    assert len(batches[0]) == 4  # 32 training images, batch 8
    for (xa, ya), (xb, yb) in zip(batches[0], batches[1], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert any(
        not torch.equal(ya, yc) for (_, ya), (_, yc) in zip(batches[0], batches[2], strict=True)
    )
    single = CIFAR10DataModule(root=str(tmp_path), order_seeds=[7]).train_dataloader()
    assert isinstance(single, DataLoader)


def test_training_batches_follow_the_sampler_order(tmp_path: Path, cifar_md5_skipped: None) -> None:
    write_cifar10(tmp_path, per_batch=8)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=5, order_seeds=[3], augment=False)
    x, y = dm.tensors("train")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    order = _epoch_order(len(y), 3, 2)
    got_x, got_y = map(torch.cat, zip(*loader, strict=True))
    assert torch.equal(got_x, x[order]) and torch.equal(got_y, y[order])


def _is_crop_flip_of(image: torch.Tensor, augmented: torch.Tensor, fill: torch.Tensor) -> bool:
    padded = fill.view(3, 1, 1).repeat(1, 40, 40)
    padded[:, 4:36, 4:36] = image
    for top in range(9):
        for left in range(9):
            crop = padded[:, top : top + 32, left : left + 32]
            if torch.allclose(crop, augmented) or torch.allclose(crop.flip(2), augmented):
                return True
    return False


def test_augmentation_is_a_padded_random_crop_and_flip(
    tmp_path: Path, cifar_md5_skipped: None
) -> None:
    write_cifar10(tmp_path, per_batch=8)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=64, augment=True)
    x, _ = dm.tensors("train")
    order = _epoch_order(len(x), 0, 0)
    augmented, _ = next(iter(dm.train_dataloader()))
    black = torch.tensor((0 - CIFAR10_MEAN) / CIFAR10_STD, dtype=torch.float32)
    assert not torch.equal(augmented, x[order])
    for i in range(len(order)):
        assert _is_crop_flip_of(x[order[i]], augmented[i], black)


def test_eval_loaders_are_sequential_unaugmented_with_eval_batch_size(
    tmp_path: Path, cifar_md5_skipped: None
) -> None:
    write_cifar10(tmp_path, per_batch=8, n_test=10)
    dm = CIFAR10DataModule(root=str(tmp_path), eval_batch_size=4, augment=True)
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        batches = list(loader)
        assert [len(b[1]) for b in batches][0] == 4
        x, y = dm.tensors(split)
        assert torch.equal(torch.cat([b[0] for b in batches]), x)
        assert torch.equal(torch.cat([b[1] for b in batches]), y)


class _RecordLabels(L.LightningModule):
    """Records the labels of every training batch (one list entry per loader)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[torch.Tensor]] = []

    def training_step(self, batch: list, batch_idx: int) -> torch.Tensor:
        self.seen.append([labels.clone() for _, labels in batch])
        return self.weight.sum() * 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_sets_each_epoch_order_and_combines_seed_loaders() -> None:
    dm = DigitsDataModule(batch_size=500, order_seeds=[0, 1], val_size=0.0)
    module = _RecordLabels()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=dm)
    _, y = dm.tensors("train")
    per_epoch = -(-len(y) // 500)
    assert len(module.seen) == 2 * per_epoch
    for epoch in range(2):
        batches = module.seen[epoch * per_epoch : (epoch + 1) * per_epoch]
        for loader, seed in enumerate((0, 1)):
            got = torch.cat([b[loader] for b in batches])
            assert torch.equal(got, y[_epoch_order(len(y), seed, epoch)])


# ---------------------------------------------------------------- where the data came from


class _Lines(logging.Handler):
    """Collects the ``lwlc: data:`` lines Lightning's logger passes on (rank_zero_info)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("lwlc: data:"):
            self.lines.append(record.getMessage())


@pytest.fixture
def data_lines() -> Iterator[list[str]]:
    """The data lines logged during the test (Lightning's logger does not propagate to root)."""
    handler = _Lines()
    logger = logging.getLogger("lightning.pytorch")
    # earlier tests may have quietened Lightning's loggers: let INFO through for this one
    quiet = {
        name: logging.getLogger(name).level
        for name in (logger.name, f"{logger.name}.utilities.rank_zero")
    }
    for name in quiet:
        logging.getLogger(name).setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


def test_fashion_mnist_logs_the_system_folder_files_and_split_sizes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_lines: list[str]
) -> None:
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_mnist(system, n_train=60, n_test=20, gz=True)
    monkeypatch.setattr(FashionMNISTDataModule, "system_dirs", (str(system),))
    dm = FashionMNISTDataModule(root=str(tmp_path / "empty"), val_size=0.25)
    dm.setup("fit")
    dm.setup("test")
    files = ", ".join(f"{name}.gz" for name in lwlc.data.mnist.FILES.values())
    assert data_lines == [
        f"lwlc: data: FashionMNIST from {system}/ ({files}) (45 train, 15 val, 20 test)"
    ]


def test_mnist_in_torchvision_layout_logs_its_raw_folder(
    tmp_path: Path, data_lines: list[str]
) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", n_train=40, n_test=10, gz=False)
    MNISTDataModule(root=str(tmp_path), val_size=0.1).setup()
    [line] = data_lines
    assert line.startswith(f"lwlc: data: MNIST from {tmp_path / 'MNIST' / 'raw'}/ (")
    assert "train-images-idx3-ubyte," in line and ".gz" not in line
    assert line.endswith("(36 train, 4 val, 10 test)")


def test_cifar_digits_and_text_log_where_they_read(
    tmp_path: Path, cifar_md5_skipped: None, data_lines: list[str]
) -> None:
    write_cifar10(tmp_path, per_batch=8, n_test=10)
    CIFAR10DataModule(root=str(tmp_path), val_size=0.25).setup()
    DigitsDataModule().setup()
    text = tmp_path / "corpus.txt"
    text.write_text("ab" * 600, encoding="utf-8")
    lwlc.data.CharTextDataModule(path=str(text), block_size=10, val_size=0.1).setup()
    n_digits = len(load_digits().target)
    n_test = round(0.2 * n_digits)
    n_val = round(0.1 * (n_digits - n_test))
    windows = (1080 - 11) // 10 + 1  # 90% of 1200 characters, every 10th start
    assert data_lines == [
        f"lwlc: data: CIFAR-10 from {tmp_path / 'cifar-10-batches-py'}/ "
        "(30 train, 10 val, 10 test)",
        "lwlc: data: digits from scikit-learn's embedded copy (sklearn.datasets.load_digits) "
        f"({n_digits - n_test - n_val} train, {n_val} val, {n_test} test)",
        f"lwlc: data: text from {text}, 1200 characters "
        f"({windows - round(0.1 * windows)} train, {round(0.1 * windows)} val, 11 test)",
    ]


def test_hf_text_module_logs_its_file_and_tokens(tmp_path: Path, data_lines: list[str]) -> None:
    from lwlc.formats.hf import TextDataModule

    text = tmp_path / "wiki.txt"
    text.write_text("é" * 500, encoding="utf-8")  # 1000 UTF-8 bytes
    TextDataModule(str(text), seq_len=9, val_fraction=0.1, test_fraction=0.2).setup()
    windows = (1000 - 1) // 9
    n_test, n_val = round(0.2 * windows), round(0.1 * windows)
    assert data_lines == [
        f"lwlc: data: text from {text} (1000 tokens, UTF-8 bytes) "
        f"({windows - n_val - n_test} train, {n_val} val, {n_test} test windows of 9)"
    ]
