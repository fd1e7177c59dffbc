"""lwlc.flower: LayerwiseFedAvg's aggregation on named groups, personal layers, bad inputs, the
barrier monitor, and one round of Flower clients equal to the in-process federated module."""

import csv
import logging

import lightning.pytorch as pl
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

import lwlc
from lwlc.core.errors import LwlcError
from lwlc.core.spec import MeasureSpec
from lwlc.data import DigitsDataModule
from lwlc.flower import BarrierMonitor, ClientSetup, LayerwiseFedAvg
from lwlc.flower.client import train
from lwlc.flower.strategy import CLIENT_RECORD
from lwlc.models import MLP
from lwlc.training.federated import FederatedDataModule, FederatedModule
from lwlc.training.modules import reinitialize

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("flwr").setLevel(logging.WARNING)

NODES = (11, 22, 33)
SAMPLES = {11: 10, 22: 30, 33: 60}


class FakeGrid:
    """The one thing FedAvg's node sampling asks of a Grid: the connected nodes."""

    def __init__(self, nodes=NODES) -> None:
        self.nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        return self.nodes


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Messages built outside a Flower run need the identity a run would set."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def _net(width: int = 3) -> torch.nn.Module:
    return MLP(in_features=4, width=width, depth=2, num_classes=3)


def _random_state(seed: int, width: int = 3) -> dict[str, torch.Tensor]:
    net = _net(width)
    reinitialize(net, seed)
    return net.state_dict()


def _round(strategy, server_round, arrays, states, failed=()):
    """Send a round's messages and answer them with ``states`` (node -> state dict)."""
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), FakeGrid()))
    received = {m.metadata.dst_node_id: m.content["arrays"].to_torch_state_dict() for m in messages}
    replies = []
    for message in messages:
        node = message.metadata.dst_node_id
        if node in failed:
            replies.append(Message(Error(code=0, reason="client crashed"), reply_to=message))
            continue
        content = RecordDict(
            {
                "arrays": ArrayRecord(states[node]),
                "metrics": MetricRecord({"num-examples": SAMPLES[node], "num-batches": 1}),
            }
        )
        replies.append(Message(content, reply_to=message))
    aggregated, _ = strategy.aggregate_train(server_round, replies)
    return received, aggregated


def _mean(states, nodes, key):
    """The hand-computed sample-weighted mean of ``key`` over ``nodes``."""
    total = sum(SAMPLES[n] for n in nodes)
    return sum(SAMPLES[n] / total * states[n][key].double() for n in nodes)


def test_named_groups_are_the_weighted_mean_and_the_rest_stays_personal() -> None:
    net = _net()
    strategy = LayerwiseFedAvg(net, ["head", "fc1"], min_available_nodes=3, min_train_nodes=3)
    start = ArrayRecord(net.state_dict())
    states = {n: _random_state(i + 1) for i, n in enumerate(NODES)}
    sent, aggregated = _round(strategy, 1, start, states)
    for node in NODES:  # round 1: everyone starts from the server's model
        for key, value in net.state_dict().items():
            assert torch.equal(sent[node][key], value)
    sent, _ = _round(strategy, 2, aggregated, states)
    for node in NODES:
        for key, value in sent[node].items():
            if key.startswith(("head.", "fc1.")):
                torch.testing.assert_close(value.double(), _mean(states, NODES, key))
            else:  # fc2 is personal: exactly the node's own tensor
                assert torch.equal(value, states[node][key]), (node, key)
    assert strategy.chosen[1] == ["fc1", "head"]


def test_a_client_failing_mid_round_keeps_its_personal_layers() -> None:
    net = _net()
    strategy = LayerwiseFedAvg(net, ["head"], min_available_nodes=3, min_train_nodes=3)
    first = {n: _random_state(i + 1) for i, n in enumerate(NODES)}
    _, aggregated = _round(strategy, 1, ArrayRecord(net.state_dict()), first)
    second = {n: _random_state(i + 10) for i, n in enumerate(NODES)}
    _, aggregated = _round(strategy, 2, aggregated, second, failed={33})
    sent, _ = _round(strategy, 3, aggregated, second)
    for key, value in sent[33].items():
        if key.startswith("head."):  # the mean of the clients that answered round 2
            torch.testing.assert_close(value.double(), _mean(second, (11, 22), key))
        else:  # node 33's own layers from its last reply (round 1), not lost
            assert torch.equal(value, first[33][key]), key
    for key, value in sent[11].items():
        if not key.startswith("head."):
            assert torch.equal(value, second[11][key]), key


def test_a_group_that_matches_nothing_is_one_line() -> None:
    with pytest.raises(LwlcError, match="unknown layer or group 'body'; available: fc1, fc2"):
        LayerwiseFedAvg(_net(), ["body"])


def test_a_client_with_another_architecture_is_one_line_and_changes_nothing() -> None:
    net = _net()
    strategy = LayerwiseFedAvg(net, ["head"], min_available_nodes=3, min_train_nodes=3)
    states = {n: _random_state(i + 1) for i, n in enumerate(NODES)}
    _, aggregated = _round(strategy, 1, ArrayRecord(net.state_dict()), states)
    kept = {n: {k: v.copy() for k, v in s.items()} for n, s in strategy.models.items()}
    states[22] = _random_state(5, width=5)
    with pytest.raises(
        LwlcError, match=r"client node 22 sent a model that differs .* 'fc1.weight'"
    ):
        _round(strategy, 2, aggregated, states)
    for node, state in kept.items():
        for key, value in state.items():
            assert (strategy.models[node][key] == value).all(), (node, key)


def test_the_authors_scheme_weights_by_batches() -> None:
    from lwlc.models import ResNet18

    strategy = LayerwiseFedAvg(ResNet18(norm="none", conv_bias=False, width=4), "authors_resnet18")
    assert strategy.weighted_by_key == "num-batches"
    assert strategy.shared[-2:] == ["fc.weight", "fc.bias"] and len(strategy.shared) == 9


def test_the_monitor_records_each_rounds_barriers_and_the_averaged_groups(tmp_path) -> None:
    net = _net()
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(1))
    spec = MeasureSpec(plans=("single",), rest_from=("a",), num_alphas=3)
    monitor = BarrierMonitor(net, (x, y), spec, csv_path=tmp_path / "barriers.csv")
    strategy = LayerwiseFedAvg(
        net, ["fc1"], monitor=monitor, min_available_nodes=3, min_train_nodes=3
    )
    states = {n: _random_state(i + 1) for i, n in enumerate(NODES)}
    _round(strategy, 1, ArrayRecord(net.state_dict()), states)
    direct = []
    for a, b in ((11, 22), (11, 33), (22, 33)):
        model_a = _net()
        model_a.load_state_dict(states[a])
        direct.append(
            lwlc.measure(model_a, states[b], (x, y), spec).barrier("single", "head", "path")
        )
    with open(tmp_path / "barriers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    head = [
        float(r["loss_barrier"]) for r in rows if r["group"] == "head" and r["reference"] == "path"
    ]
    assert sorted(head) == pytest.approx(sorted(direct))
    assert len(rows) == 3 * 3 * 3  # three pairs, three single-layer paths, three references
    assert {r["averaged"] for r in rows} == {"fc1"}
    assert {r["round"] for r in rows} == {"1"}


def _digits(num_clients: int) -> FederatedDataModule:
    return FederatedDataModule(
        DigitsDataModule(batch_size=64),
        num_clients=num_clients,
        split="dirichlet",
        concentration=1.0,
        split_seed=1,
        test_sets="matched",
    )


def _mlp() -> torch.nn.Module:
    return MLP(in_features=64, width=16, depth=2)


def test_two_rounds_of_flower_clients_equal_the_in_process_module() -> None:
    """Server and clients exchange real Flower messages (without Ray): the client models after
    two rounds (momentum carried in context.state) equal FederatedModule's to 1e-5."""
    torch.set_num_threads(1)
    setup = ClientSetup(model=_mlp, data=lambda: _digits(2), rounds=2, local_epochs=1, lr=0.05)
    net = _mlp()
    reinitialize(net, 0)
    strategy = LayerwiseFedAvg(net, ["head"], min_available_nodes=2, min_train_nodes=2)
    contexts = {
        n: Context(1, n, {"partition-id": i, "num-partitions": 2}, RecordDict(), {})
        for i, n in enumerate((5, 7))
    }
    arrays = ArrayRecord(net.state_dict())
    for server_round in (1, 2):
        config = ConfigRecord()
        messages = strategy.configure_train(server_round, arrays, config, FakeGrid((5, 7)))
        replies = [train(setup, m, contexts[m.metadata.dst_node_id]) for m in messages]
        assert all(CLIENT_RECORD in r.content.config_records for r in replies)
        arrays, _ = strategy.aggregate_train(server_round, replies)
    module = FederatedModule(_mlp(), num_clients=2, local_epochs=1, average=["head"], lr=0.05)
    pl.Trainer(
        max_epochs=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        deterministic=True,
    ).fit(module, _digits(2))  # fmt: skip
    flower = strategy.client_models()
    for i, client in enumerate(module.clients):
        for key, value in client.state_dict().items():
            torch.testing.assert_close(flower[i][key], value, rtol=0, atol=1e-5)


def test_the_flwr_run_app_builds_its_setup_from_the_run_config() -> None:
    from lwlc.flower.app import average_of, setup_of
    from lwlc.flower.client import partition_of

    def context(run_config, node_config=None):
        return Context(1, 1, node_config or {}, RecordDict(), run_config)

    model_args = '{"in_features": 64, "width": 8, "depth": 1}'
    setup = setup_of(context({"num-clients": 3, "model-args": model_args, "rounds": 4}))
    assert setup.clients_data().num_clients == 3 and setup.rounds == 4
    assert [k for k in setup.model().state_dict()] == ["fc1.weight", "fc1.bias", "head.weight",
                                                       "head.bias"]  # fmt: skip
    assert average_of("fc1, head") == ["fc1", "head"]
    assert average_of("authors_resnet18") == "authors_resnet18"
    with pytest.raises(LwlcError, match="unknown run-config key 'lrr'; known: data, data-args"):
        setup_of(context({"lrr": 0.1}))
    with pytest.raises(LwlcError, match="cannot build lwlc.models.Nope from '{}'"):
        setup_of(context({"model": "lwlc.models.Nope", "model-args": "{}"})).model()
    with pytest.raises(LwlcError, match="the node has no partition-id: start it with --node"):
        partition_of(context({}), setup.clients_data())
    with pytest.raises(LwlcError, match="partition-id 3 is outside the 3 clients"):
        partition_of(context({}, {"partition-id": 3}), setup.clients_data())


def test_a_diverged_client_is_reported_and_the_others_are_measured(capsys) -> None:
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(1))
    spec = MeasureSpec(plans=("single",), rest_from=("a",), num_alphas=3)
    monitor = BarrierMonitor(_net(), (x, y), spec)
    states = {c: _random_state(c + 1) for c in range(3)}
    states[1]["fc2.weight"][0, 0] = float("nan")
    barriers = monitor.measure(4, states, [1.0, 1.0, 1.0])
    assert "round 4: client(s) 1 have NaN/Inf weights" in capsys.readouterr().err
    assert {(r["client_a"], r["client_b"]) for r in monitor.rows} == {("0", "2")}
    assert set(barriers) == {"fc1", "fc2", "head"}
