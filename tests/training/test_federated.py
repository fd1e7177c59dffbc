"""The federated simulation: client splits, the server's weighted averaging, per-client metrics."""

import logging
import math

import lightning.pytorch as pl
import pytest
import torch

from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc.models import MLP, ResNet18
from lwlc.training.federated import (
    AVERAGING_SCHEMES,
    FederatedDataModule,
    FederatedModule,
    averaged_keys,
    split_clients,
)

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

BALANCED = torch.arange(10).repeat_interleave(30)  # 10 classes x 30 samples


def _classes(labels: torch.Tensor, index: torch.Tensor) -> set[int]:
    return set(labels[index].tolist())


@pytest.mark.parametrize("scheme", ["iid", "non-iid", "extreme", "dirichlet"])
@pytest.mark.parametrize("num_clients", [2, 3, 7])
def test_client_splits_are_disjoint_and_cover_the_data(scheme: str, num_clients: int) -> None:
    labels = torch.randint(0, 10, (503,), generator=torch.Generator().manual_seed(1))
    parts = split_clients(labels, num_clients, scheme, seed=4)
    assert len(parts) == num_clients
    assert all(len(p) > 0 for p in parts)
    seen = torch.cat(parts).tolist()
    assert len(seen) == len(set(seen))  # disjoint
    assert sorted(seen) == list(range(len(labels)))  # cover


def test_split_depends_on_the_seed_only() -> None:
    labels = BALANCED
    again = split_clients(labels, 2, "non-iid", seed=3)
    for a, b in zip(split_clients(labels, 2, "non-iid", seed=3), again, strict=True):
        assert torch.equal(a, b)
    other = split_clients(labels, 2, "non-iid", seed=4)
    assert any(not torch.equal(a, b) for a, b in zip(again, other, strict=True))


def test_iid_split_has_near_equal_sizes() -> None:
    sizes = [len(p) for p in split_clients(BALANCED, 7, "iid", seed=0)]
    assert max(sizes) - min(sizes) <= 1


def test_extreme_split_gives_clients_disjoint_halves_of_the_classes() -> None:
    for seed in range(5):
        a, b = split_clients(BALANCED, 2, "extreme", seed=seed)
        assert len(_classes(BALANCED, a)) == 5 and len(_classes(BALANCED, b)) == 5
        assert not _classes(BALANCED, a) & _classes(BALANCED, b)


def test_label_shards_hold_shard_sized_runs_of_one_class() -> None:
    # 10 shards per client of 300 / 20 = 15 samples: half a class each, so every class a client
    # holds appears in multiples of 15 samples.
    for part in split_clients(BALANCED, 2, "non-iid", seed=0, shards_per_client=10):
        counts = torch.bincount(BALANCED[part], minlength=10)
        assert all(int(c) % 15 == 0 for c in counts)
        assert len(part) == 150


def test_small_dirichlet_concentration_gives_each_class_mostly_to_one_client() -> None:
    labels = torch.arange(10).repeat_interleave(200)
    parts = split_clients(labels, 4, "dirichlet", seed=0, concentration=0.01)
    per_client = torch.stack([torch.bincount(labels[p], minlength=10) for p in parts])
    top_share = per_client.max(dim=0).values / per_client.sum(dim=0)
    assert (top_share > 0.9).float().mean() >= 0.8


def test_unknown_split_or_too_many_clients_is_a_one_line_error() -> None:
    with pytest.raises(LwlcError, match="unknown split 'noniid'; choose from iid, non-iid"):
        split_clients(BALANCED, 2, "noniid")
    with pytest.raises(LwlcError, match="num_clients=301"):
        split_clients(BALANCED, 301, "iid")


def test_averaged_keys_select_layers_by_pattern() -> None:
    net = MLP(in_features=64, width=8, depth=3)
    assert averaged_keys(net, "all") == list(net.state_dict())
    assert averaged_keys(net, "none") == []
    assert averaged_keys(net, ["fc*"]) == [
        f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")
    ]
    assert averaged_keys(net, ["re:fc[13]", "head"]) == [
        "fc1.weight",
        "fc1.bias",
        "fc3.weight",
        "fc3.bias",
        "head.weight",
        "head.bias",
    ]
    with pytest.raises(LwlcError, match="unknown layer or group 'body'; available: fc1, fc2"):
        averaged_keys(net, ["body"])


def _train(
    average: str | list[str],
    epochs: int,
    local_epochs: int = 2,
    test_sets: str = "shared",
    model: torch.nn.Module | None = None,
    num_clients: int = 2,
) -> tuple[FederatedModule, FederatedDataModule]:
    torch.set_num_threads(1)  # tiny matrices: more threads only add overhead
    data = FederatedDataModule(
        DigitsDataModule(batch_size=64),
        num_clients=num_clients,
        split="dirichlet",
        concentration=1.0,
        split_seed=1,
        test_sets=test_sets,
    )
    module = FederatedModule(
        model or MLP(in_features=64, width=16, depth=2),
        num_clients=num_clients,
        local_epochs=local_epochs,
        average=average,
        lr=0.05,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        check_val_every_n_epoch=local_epochs,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
    )
    trainer.fit(module, data)
    return module, data


@pytest.fixture(scope="module")
def local_only() -> tuple[FederatedModule, FederatedDataModule]:
    """Two clients after one round (2 epochs) without averaging: weights before the server step."""
    return _train("none", epochs=2)


def test_fedavg_after_one_round_equals_the_data_weighted_mean_of_the_clients(local_only) -> None:
    before, data = local_only
    sizes = [len(i) for i in data.client_indices]
    assert sizes[0] != sizes[1]  # unequal, so a plain mean would differ
    after, _ = _train("all", epochs=2)
    states = [c.state_dict() for c in before.clients]
    for key in states[0]:
        expected = (sizes[0] * states[0][key].double() + sizes[1] * states[1][key].double()) / sum(
            sizes
        )
        for client in after.clients:
            torch.testing.assert_close(
                client.state_dict()[key].double(), expected, rtol=1e-6, atol=1e-7
            )


def test_partial_averaging_shares_chosen_layers_and_keeps_the_rest_personal(local_only) -> None:
    before, data = local_only
    sizes = [len(i) for i in data.client_indices]
    after, _ = _train(["head"], epochs=2)
    old = [c.state_dict() for c in before.clients]
    new = [c.state_dict() for c in after.clients]
    for key in old[0]:
        for i in range(2):
            if key.startswith("head."):
                expected = (
                    sizes[0] * old[0][key].double() + sizes[1] * old[1][key].double()
                ) / sum(sizes)
                torch.testing.assert_close(new[i][key].double(), expected, rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(new[i][key], old[i][key]), key


def test_logged_accuracies_match_a_direct_evaluation(local_only) -> None:
    module, data = local_only
    x, y = data.data.tensors("test")
    counts = data.label_counts().double()
    row = module.history[-1]
    for i, net in enumerate(module.clients):
        with torch.no_grad():
            hit = net.eval()(x).argmax(dim=1) == y
        assert row[f"client{i}/acc"] == pytest.approx(hit.double().mean().item())
        shares = counts[i] / counts[i].sum()
        local = sum(shares[c] * hit[y == c].double().mean() for c in range(10))
        assert row[f"client{i}/local_acc"] == pytest.approx(float(local))
    sizes = counts.sum(dim=1)
    mean = MLP(in_features=64, width=16, depth=2)
    states = [c.state_dict() for c in module.clients]
    mean.load_state_dict(
        {k: (sizes[0] * states[0][k] + sizes[1] * states[1][k]) / sizes.sum() for k in states[0]}
    )
    with torch.no_grad():
        global_acc = (mean.eval()(x).argmax(dim=1) == y).double().mean().item()
    assert row["global/acc"] == pytest.approx(global_acc, abs=1e-3)
    assert [r["round"] for r in module.history] == [1.0]


def test_clients_are_evaluated_on_their_own_matched_test_sets() -> None:
    module, data = _train("none", epochs=2, test_sets="matched")
    x, y = data.data.tensors("test")
    tests = data.test_indices
    assert sorted(torch.cat(tests).tolist()) == list(range(len(y)))  # disjoint, cover the split
    counts = data.label_counts()
    row = module.history[-1]
    own = []
    for i, net in enumerate(module.clients):
        with torch.no_grad():
            hit = net.eval()(x).argmax(dim=1) == y
        assert row[f"client{i}/local_acc"] == pytest.approx(hit[tests[i]].double().mean().item())
        assert row[f"client{i}/acc"] == pytest.approx(hit.double().mean().item())
        own.append(hit[tests[i]].double().mean().item())
        # the client holds its share of each class's training samples of the test samples too
        quota = counts[i] / counts.sum(dim=0) * torch.bincount(y, minlength=10)
        got = torch.bincount(y[tests[i]], minlength=10)
        assert (got >= quota.floor()).all() and (got <= quota.ceil()).all()
    assert row["clients/local_acc"] == pytest.approx(sum(own) / 2)


def test_split_test_sets_cut_each_clients_pooled_data_three_to_one() -> None:
    digits = DigitsDataModule(batch_size=64)
    data = FederatedDataModule(
        digits, num_clients=20, split="dirichlet", concentration=0.01, min_size=8, test_sets="split"
    )
    pooled = torch.cat([digits.tensors("train")[1], digits.tensors("test")[1]])
    parts = split_clients(pooled, 20, "dirichlet", concentration=0.01, min_size=8)
    for part, train, test in zip(parts, data.client_indices, data.test_indices, strict=True):
        assert sorted(torch.cat([train, test]).tolist()) == part.tolist()
        assert len(train) == int(0.75 * len(part))
    inputs, labels, owner = data.evaluation_set()
    assert len(labels) == sum(len(t) for t in data.test_indices)
    assert torch.equal(labels[owner == 3], pooled[data.test_indices[3]])


def test_authors_scheme_names_their_nine_resnet18_tensors() -> None:
    net = ResNet18(norm="none", conv_bias=False, width=4)
    assert averaged_keys(net, "authors_resnet18") == list(AVERAGING_SCHEMES["authors_resnet18"][0])
    with pytest.raises(LwlcError, match="averaging scheme 'authors_resnet18' needs the tensors "):
        averaged_keys(MLP(in_features=64, width=8, depth=2), "authors_resnet18")


def test_authors_scheme_averages_nine_tensors_weighted_by_training_batches() -> None:
    def net() -> torch.nn.Module:
        return ResNet18(num_classes=10, in_channels=1, norm="none", conv_bias=False, width=4)

    before, data = _train("none", epochs=1, local_epochs=1, model=net(), num_clients=3)
    after, _ = _train("authors_resnet18", epochs=1, local_epochs=1, model=net(), num_clients=3)
    batches = [math.ceil(n / 64) for n in data.sizes]
    assert batches == data.batch_counts
    shares = [b / sum(batches) for b in batches]
    by_size = [n / sum(data.sizes) for n in data.sizes]
    assert max(abs(a - b) for a, b in zip(shares, by_size, strict=True)) > 0.01
    chosen = set(AVERAGING_SCHEMES["authors_resnet18"][0])
    old = [c.state_dict() for c in before.clients]
    for i, client in enumerate(after.clients):
        for key, value in client.state_dict().items():
            if key in chosen:
                expected = sum(s * o[key].double() for s, o in zip(shares, old, strict=True))
                torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(value, old[i][key]), key
