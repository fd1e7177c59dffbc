"""Writers of tiny data set files in the true on-disk formats, for the data module tests."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """Write a uint8 array as an IDX file (big-endian header), gzipped when ``gz``."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def fake_images(n: int, shape: tuple[int, ...], first_id: int, seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel (flat order) is a unique id ``first_id + i``."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = np.arange(first_id, first_id + n)
    return images


def write_mnist(
    folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True
) -> dict[str, np.ndarray]:
    """The four MNIST IDX files in ``folder``; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": fake_images(n_train, (28, 28), 0, seed=1),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": fake_images(n_test, (28, 28), n_train, seed=2),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


def _pickle(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 8, n_test: int = 10) -> dict[str, np.ndarray]:
    """``cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta.

    Returns the official train and test images (N, 32, 32, 3 uint8) and labels.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for b in range(5):
        chw = fake_images(per_batch, (3, 32, 32), b * per_batch, seed=10 + b)
        batch_labels = [(b * per_batch + i) % 10 for i in range(per_batch)]
        _pickle(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"batch {b + 1}",
                "data": chw.reshape(per_batch, -1),
                "labels": batch_labels,
                "filenames": [f"{i}.png" for i in range(per_batch)],
            },
        )
        images.append(chw)
        labels += batch_labels
    test = fake_images(n_test, (3, 32, 32), 5 * per_batch, seed=20)
    test_labels = [(7 * i) % 10 for i in range(n_test)]
    _pickle(folder / "test_batch", {"data": test.reshape(n_test, -1), "labels": test_labels})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return {
        "train_images": np.concatenate(images).transpose(0, 2, 3, 1),
        "train_labels": np.array(labels),
        "test_images": test.transpose(0, 2, 3, 1),
        "test_labels": np.array(test_labels),
    }


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    """``cifar-100-python`` with train, test and meta (fine and coarse labels)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n, first, seed in [("train", n_train, 0, 30), ("test", n_test, n_train, 31)]:
        chw = fake_images(n, (3, 32, 32), first, seed=seed)
        fine = [(first + 37 * i) % 100 for i in range(n)]
        _pickle(
            folder / split,
            {
                "data": chw.reshape(n, -1),
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
            },
        )
        out[f"{split}_images"] = chw.transpose(0, 2, 3, 1)
        out[f"{split}_labels"] = np.array(fine)
    _pickle(
        folder / "meta",
        {
            "fine_label_names": [f"f{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)],
        },
    )
    return out
