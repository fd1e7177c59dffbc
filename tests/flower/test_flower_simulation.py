"""Flower's simulation engine (Ray actors) runs lwlc clients: the same split, seeds and
schedule give the same client models as the in-process federated module."""

import logging

import lightning.pytorch as pl
import pytest
import torch

from lwlc.data import DigitsDataModule
from lwlc.flower import BarrierMonitor, ClientSetup, LayerwiseFedAvg, simulate
from lwlc.models import MLP
from lwlc.training.federated import FederatedDataModule, FederatedModule

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def _data() -> FederatedDataModule:
    return FederatedDataModule(
        DigitsDataModule(batch_size=64), num_clients=3, split="dirichlet", concentration=1.0,
        split_seed=1, test_sets="matched",
    )  # fmt: skip


def _mlp() -> torch.nn.Module:
    return MLP(in_features=64, width=16, depth=2)


@pytest.mark.slow
def test_flower_simulation_equals_the_in_process_module(tmp_path) -> None:
    torch.set_num_threads(1)
    setup = ClientSetup(model=_mlp, data=_data, rounds=2, local_epochs=2, lr=0.05)
    csv_path = tmp_path / "barriers.csv"

    def strategy(model: torch.nn.Module) -> LayerwiseFedAvg:
        digits = DigitsDataModule(batch_size=64)
        monitor = BarrierMonitor(model, digits, between="average", csv_path=csv_path)
        return LayerwiseFedAvg(  # every client every round, even if one connects late
            model,
            ["fc1", "head"],
            monitor=monitor,
            min_available_nodes=3,
            min_train_nodes=3,
            min_evaluate_nodes=3,
        )

    flower, result = simulate(setup, strategy)
    module = FederatedModule(_mlp(), num_clients=3, local_epochs=2, average=["fc1", "head"])
    pl.Trainer(
        max_epochs=4, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        deterministic=True,
    ).fit(module, _data())  # fmt: skip
    clients = flower.client_models()
    assert sorted(clients) == [0, 1, 2]
    for i, client in enumerate(module.clients):
        for key, value in client.state_dict().items():
            torch.testing.assert_close(clients[i][key], value, rtol=0, atol=1e-5)
    assert sorted(result.evaluate_metrics_clientapp) == [1, 2]
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("round,client_a,client_b,plan,group")
    assert {line.split(",")[2] for line in lines[1:]} == {"average"}
    assert {line.split(",")[0] for line in lines[1:]} == {"1", "2"}


@pytest.mark.slow
def test_round_barriers_reach_wandb_under_the_callbacks_names(tmp_path) -> None:
    import wandb

    from lwlc.core.spec import MeasureSpec
    from wandb_records import finished_records, history

    net = MLP(in_features=4, width=3, depth=1, num_classes=3)
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    spec = MeasureSpec(plans=("single",), rest_from=("a",), num_alphas=3)
    monitor = BarrierMonitor(net, (x, y), spec, wandb=True)
    states = {}
    for client in (0, 1, 2):
        other = MLP(in_features=4, width=3, depth=1, num_classes=3)
        torch.nn.init.normal_(other.fc1.weight, generator=torch.Generator().manual_seed(client))
        states[client] = other.state_dict()
    wandb.init(dir=str(tmp_path), project="flower-test")
    monitor.measure(1, states, [1.0, 1.0, 1.0])
    monitor.log_choice(1, ["head"])
    wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (row,) = history(finished_records(next(run_dir.glob("run-*.wandb"))))
    expected = [
        r["loss_barrier"] for r in monitor.rows if r["group"] == "fc1" and r["reference"] == "path"
    ]
    assert len(expected) == 3  # three pairs
    assert row["barrier/path/test/single/fc1/loss"] == pytest.approx(sum(expected) / 3)
    assert row["flower/round"] == 1 and row["flower/averaged"] == 1


@pytest.mark.slow
def test_auto_on_the_simulation_engine_chooses_as_the_in_process_clients(tmp_path) -> None:
    """Ray actors answer the layer-set questions (``evaluate.layer_sets``) as the same clients
    called in this process do: the same chosen set, recorded in the selection CSV."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

    from lwlc.flower import AutoSelection
    from lwlc.flower.client import evaluate_layer_sets, train
    from lwlc.training.modules import reinitialize

    torch.set_num_threads(1)
    setup = ClientSetup(model=_mlp, data=_data, rounds=2, local_epochs=2, lr=0.05)
    selection = AutoSelection(budget=0.02, select_after=1, csv_path=tmp_path / "selection.csv")

    def strategy(model: torch.nn.Module) -> LayerwiseFedAvg:
        return LayerwiseFedAvg(model, "auto", selection=selection, min_available_nodes=3,
                               min_train_nodes=3, min_evaluate_nodes=3)  # fmt: skip

    flower, result = simulate(setup, strategy)

    class Grid:  # the same three clients, called in this process
        contexts = {n: Context(1, n, {"partition-id": n}, RecordDict(), {}) for n in range(3)}

        def get_node_ids(self):
            return [0, 1, 2]

        def send_and_receive(self, messages, timeout=None):
            return [evaluate_layer_sets(setup, m, self.contexts[m.metadata.dst_node_id])
                    for m in messages]  # fmt: skip

    net = _mlp()
    reinitialize(net, 0)
    local = strategy(net)
    messages = local.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), Grid())
    replies = [train(setup, m, Grid.contexts[m.metadata.dst_node_id]) for m in messages]
    arrays, _ = local.aggregate_train(1, replies)
    chosen = local.select(2, arrays, Grid())
    assert flower.chosen[1] == [] and flower.chosen[2] == chosen
    lines = (tmp_path / "selection.csv").read_text().splitlines()
    assert lines[0].startswith("server_round,budget,limit,step,search,round,groups,added")
    assert sum(line.endswith(",True") for line in lines) == 1  # one accepted set per choice
    assert sorted(result.evaluate_metrics_clientapp) == [1, 2]


@pytest.mark.slow
def test_each_choice_reaches_wandb(tmp_path) -> None:
    import wandb
    from flwr.app import ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity
    from test_flower_auto import NODES, TableGrid, _first_round, _net, _random_state, _table

    from lwlc.flower import AutoSelection
    from wandb_records import finished_records, history

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    strategy = LayerwiseFedAvg(
        _net(), "auto", selection=AutoSelection(budget=0.5, wandb=True), min_available_nodes=3,
        min_train_nodes=3,
    )  # fmt: skip
    arrays = _first_round(strategy, {n: _random_state(i + 1) for i, n in enumerate(NODES)})
    wandb.init(dir=str(tmp_path), project="flower-test")
    strategy.configure_train(2, arrays, ConfigRecord(), TableGrid(_table(1)))
    wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (row,) = history(finished_records(next(run_dir.glob("run-*.wandb"))))
    assert row["flower/round"] == 2
    assert row["flower/selection/limit"] == pytest.approx(strategy.selector.results[2].limit)
    assert row["flower/selection/steps/_type"] == "table-file"
