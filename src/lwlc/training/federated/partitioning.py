"""Client splits: seeded partitions of the training labels among federated clients.

``iid``, ``non-iid`` and ``extreme`` (label shards, as McMahan et al.), ``dirichlet`` label skew
with a minimum client size (PFL-Non-IID, the authors' 20 CIFAR-10 clients) and ``shards`` of
distinct classes (FedBABU, the authors' 100 CIFAR-100 clients); per-client test sets by
:func:`holdout` (PFL-Non-IID) or :func:`matched_test_sets` (the clients' label distributions).
Plain numpy and torch: the in-process simulation and the Flower clients cut the same parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lwlc.core.errors import LwlcError

SPLITS = ("iid", "non-iid", "extreme", "dirichlet", "shards")
DIRICHLET_TRIES = 10_000
TRAIN_FRACTION = 0.75  # PFL-Non-IID's train_size: each client's data is 75% train, 25% test


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


def _check_split(
    scheme: str, n: int, num_clients: int, concentration: float, min_size: int
) -> None:
    """One line for a split that cannot be made from ``n`` samples."""
    if scheme not in SPLITS:
        raise LwlcError(f"unknown split {scheme!r}; choose from {', '.join(SPLITS)}")
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
    n = len(labels)
    _check_split(scheme, n, num_clients, concentration, min_size)
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
