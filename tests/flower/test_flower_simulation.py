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
        return LayerwiseFedAvg(model, ["fc1", "head"], monitor=monitor, min_available_nodes=3)

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
