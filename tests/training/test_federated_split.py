"""Client splits of the authors' federated setups: Dirichlet(0.01) with a minimum client size
(PFL-Non-IID), class shards (FedBABU's CIFAR-100 clients) and per-client test sets."""

import math

import pytest
import torch

from lwlc.core.errors import LwlcError
from lwlc.training.federated import holdout, matched_test_sets, split_clients

# Labels in a shuffled order, so a split cannot rely on sorted data.
SHUFFLE = torch.Generator().manual_seed(0)


def _labels(classes: int, per_class: int) -> torch.Tensor:
    labels = torch.arange(classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=SHUFFLE)]


def _assert_partition(parts: list[torch.Tensor], n: int) -> None:
    seen = torch.cat(parts).tolist()
    assert len(seen) == len(set(seen)), "clients overlap"
    assert sorted(seen) == list(range(n)), "the clients do not cover the data"


@pytest.mark.parametrize(
    ("per_class", "min_size"),
    [(130, 1), (130, 10), (5000, 40)],  # digits-sized and CIFAR-10-sized, PFL-Non-IID's 40
)
def test_dirichlet_001_makes_20_clients_of_at_least_min_size(per_class: int, min_size: int) -> None:
    labels = _labels(10, per_class)
    parts = split_clients(labels, 20, "dirichlet", seed=3, concentration=0.01, min_size=min_size)
    assert len(parts) == 20
    _assert_partition(parts, len(labels))
    assert min(len(p) for p in parts) >= min_size
    # Label skew at 0.01: a client holds one or two classes, almost all of one.
    per_client = torch.stack([torch.bincount(labels[p], minlength=10) for p in parts])
    assert (per_client > 0).sum(dim=1).float().mean() < 2.5
    top_class = per_client.max(dim=1).values / per_client.sum(dim=1)
    assert top_class.median() > 0.95


def test_dirichlet_split_is_reproducible_with_the_seed() -> None:
    labels = _labels(10, 130)
    first = split_clients(labels, 20, "dirichlet", seed=5, concentration=0.01, min_size=10)
    again = split_clients(labels, 20, "dirichlet", seed=5, concentration=0.01, min_size=10)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = split_clients(labels, 20, "dirichlet", seed=6, concentration=0.01, min_size=10)
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_an_impossible_minimum_client_size_is_a_one_line_error() -> None:
    labels = _labels(10, 10)  # 100 samples cannot give 20 clients 6 each
    with pytest.raises(LwlcError, match="min_size=6 must be >= 1 and fit 20 clients into 100"):
        split_clients(labels, 20, "dirichlet", concentration=0.01, min_size=6)
    skewed = torch.cat([torch.zeros(10), torch.ones(90)]).long()  # one class per client
    with pytest.raises(LwlcError, match="the shards split gives a client 10 samples, fewer than"):
        split_clients(skewed, 2, "shards", shards_per_client=1, min_size=20)


def test_cifar100_shards_give_100_clients_10_whole_shards_of_distinct_labels() -> None:
    labels = _labels(100, 500)  # CIFAR-100's training split
    parts = split_clients(labels, 100, "shards", seed=0, shards_per_client=10)
    _assert_partition(parts, len(labels))
    for part in parts:
        counts = torch.bincount(labels[part], minlength=100)
        assert (counts > 0).sum() == 10  # exactly 10 labels
        assert set(counts[counts > 0].tolist()) == {50}  # one shard (a tenth) of each
    # every class is dealt to exactly 10 clients
    holders = torch.stack([torch.bincount(labels[p], minlength=100) > 0 for p in parts]).sum(0)
    assert holders.tolist() == [10] * 100


def test_shards_that_do_not_divide_the_classes_are_a_one_line_error() -> None:
    with pytest.raises(LwlcError, match=r"num_clients \* shards_per_client \(21\) to be a multi"):
        split_clients(_labels(10, 30), 7, "shards", shards_per_client=3)


def test_matched_test_sets_follow_each_clients_training_labels() -> None:
    train, test = _labels(10, 130), _labels(10, 40)
    parts = split_clients(train, 20, "dirichlet", seed=1, concentration=0.01, min_size=10)
    counts = torch.stack([torch.bincount(train[p], minlength=10) for p in parts])
    tests = matched_test_sets(counts, test, seed=1)
    _assert_partition(tests, len(test))
    for k, index in enumerate(tests):
        got = torch.bincount(test[index], minlength=10)
        for c in range(10):  # the client's share of class c's training samples, of 40 test ones
            quota = 40 * counts[k, c].item() / counts[:, c].sum().item()
            assert math.floor(quota) <= got[c] <= math.ceil(quota), (k, c)


def test_cifar100_shard_test_sets_hold_the_clients_labels_a_tenth_each() -> None:
    train, test = _labels(100, 500), _labels(100, 100)
    parts = split_clients(train, 100, "shards", seed=2, shards_per_client=10)
    counts = torch.stack([torch.bincount(train[p], minlength=100) for p in parts])
    tests = matched_test_sets(counts, test, seed=2)
    _assert_partition(tests, len(test))
    for k, index in enumerate(tests):
        got = torch.bincount(test[index], minlength=100)
        assert torch.equal(got, (counts[k] > 0).long() * 10)


def test_holdout_cuts_each_client_into_three_quarters_train_and_the_rest_test() -> None:
    labels = _labels(10, 130)
    parts = split_clients(labels, 20, "dirichlet", seed=0, concentration=0.01, min_size=10)
    train, test = holdout(parts, 0.75, seed=0)
    for part, a, b in zip(parts, train, test, strict=True):
        assert len(a) == math.floor(0.75 * len(part)) and len(b) == len(part) - len(a)
        assert sorted(torch.cat([a, b]).tolist()) == part.tolist()
    with pytest.raises(LwlcError, match="client 0 holds 1 samples, too few to keep a training"):
        holdout([torch.tensor([3])], 0.75)
