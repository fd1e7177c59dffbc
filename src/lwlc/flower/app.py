"""The Flower app that ``flwr run`` starts: ``server_app`` and ``client_app`` built from the run
config (``[tool.flwr.app.config]`` of the app's pyproject.toml, or ``--run-config``).

Keys (defaults in :data:`DEFAULTS`): ``data`` and ``model`` are class paths with JSON init
arguments (``data-args``, ``model-args``); the split and schedule keys are those of
``FederatedDataModule`` and ``FederatedModule``; ``average`` is ``all``, ``none``, ``auto``, a
scheme (``authors_resnet18``) or comma-separated layer names/globs; ``barriers`` (``pairs`` or
``average``, empty: off) measures the clients' layer-wise barriers each round into
``barriers-csv``; ``budget``, ``select-after``, ``select-every``, ``select-split``,
``choose-from`` (comma-separated patterns, empty: every group) and ``selection-csv`` are the
options of ``auto`` (:class:`~lwlc.flower.selection.AutoSelection`); ``wandb-project``
(non-empty) also logs barriers and choices to W&B.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from lwlc.core.errors import LwlcError
from lwlc.flower import client
from lwlc.flower.client import ClientSetup
from lwlc.flower.monitor import BarrierMonitor
from lwlc.flower.selection import ACTION, AutoSelection
from lwlc.flower.strategy import LayerwiseFedAvg
from lwlc.training.federated import AVERAGING_SCHEMES, FederatedDataModule
from lwlc.training.modules import reinitialize

DEFAULTS: dict[str, Any] = {
    "data": "lwlc.data.DigitsDataModule",
    "data-args": '{"batch_size": 64}',
    "model": "lwlc.models.MLP",
    "model-args": '{"in_features": 64, "width": 64, "depth": 2}',
    "num-clients": 2,
    "split": "dirichlet",
    "concentration": 0.5,
    "split-seed": 0,
    "order-seed": 0,
    "min-size": 1,
    "test-sets": "matched",
    "rounds": 3,
    "local-epochs": 1,
    "lr": 0.05,
    "momentum": 0.9,
    "weight-decay": 5e-4,
    "lr-schedule": "constant",
    "init-seed": 0,
    "average": "all",
    "barriers": "",
    "barriers-csv": "flower_barriers.csv",
    "budget": 0.05,
    "select-after": 1,
    "select-every": 0,
    "select-split": "test",
    "choose-from": "",
    "selection-csv": "flower_selection.csv",
    "wandb-project": "",
}


def _build(path: str, arguments: str) -> Any:
    """An instance of the class at ``path`` (``package.module.Class``) from JSON arguments."""
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        kwargs = json.loads(arguments)
    except (ImportError, AttributeError, ValueError) as err:
        raise LwlcError(f"cannot build {path} from {arguments!r}: {err}") from None
    return cls(**kwargs)


def _config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(run_config) - set(DEFAULTS))
    if unknown:
        raise LwlcError(f"unknown run-config key {unknown[0]!r}; known: {', '.join(DEFAULTS)}")
    return {**DEFAULTS, **run_config}


@functools.cache
def _setup(items: tuple[tuple[str, Any], ...]) -> ClientSetup:
    """The clients' setup for one run config (built once per process)."""
    c = dict(items)

    def data() -> FederatedDataModule:
        return FederatedDataModule(
            _build(c["data"], c["data-args"]), num_clients=int(c["num-clients"]),
            split=c["split"], split_seed=int(c["split-seed"]),
            concentration=float(c["concentration"]), order_seed=int(c["order-seed"]),
            min_size=int(c["min-size"]), test_sets=c["test-sets"],
        )  # fmt: skip

    return ClientSetup(
        model=lambda: _build(c["model"], c["model-args"]), data=data, rounds=int(c["rounds"]),
        local_epochs=int(c["local-epochs"]), lr=float(c["lr"]), momentum=float(c["momentum"]),
        weight_decay=float(c["weight-decay"]), lr_schedule=c["lr-schedule"],
    )  # fmt: skip


def setup_of(context: Context) -> ClientSetup:
    """The run's ``ClientSetup`` from its run config."""
    return _setup(tuple(sorted(_config(context.run_config).items())))


def average_of(text: str) -> str | list[str]:
    """``average`` as LayerwiseFedAvg takes it: a word or scheme, else a list of patterns."""
    if text in ("all", "none", "auto") or text in AVERAGING_SCHEMES:
        return text
    return [p.strip() for p in text.split(",") if p.strip()]


client_app = ClientApp()


@client_app.train()
def train(message: Message, context: Context) -> Message:
    return client.train(setup_of(context), message, context)


@client_app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    return client.evaluate(setup_of(context), message, context)


@client_app.evaluate(ACTION)
def layer_sets(message: Message, context: Context) -> Message:
    return client.evaluate_layer_sets(setup_of(context), message, context)


def selection_of(c: Mapping[str, Any]) -> AutoSelection | None:
    """``auto``'s options from the run config (None for any other ``average``)."""
    if c["average"] != "auto":
        return None
    patterns = [p.strip() for p in str(c["choose-from"]).split(",") if p.strip()]
    return AutoSelection(
        budget=float(c["budget"]), select_after=int(c["select-after"]),
        every=int(c["select-every"]), choose_from=patterns or None, split=c["select-split"],
        csv_path=c["selection-csv"], wandb=bool(c["wandb-project"]),
    )  # fmt: skip


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    c = _config(context.run_config)
    setup = setup_of(context)
    net = setup.model()
    reinitialize(net, int(c["init-seed"]))
    monitor = None
    if c["wandb-project"] and (c["barriers"] or c["average"] == "auto"):
        import wandb

        wandb.init(project=c["wandb-project"], config=c)
    if c["barriers"]:
        monitor = BarrierMonitor(
            net, setup.clients_data().data, between=c["barriers"], csv_path=c["barriers-csv"],
            wandb=bool(c["wandb-project"]),
        )  # fmt: skip
    n = int(c["num-clients"])
    strategy = LayerwiseFedAvg(
        net, average_of(c["average"]), monitor=monitor, selection=selection_of(c),
        min_available_nodes=n,
        min_train_nodes=n, min_evaluate_nodes=n,
    )  # fmt: skip
    strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=setup.rounds)
