"""The Flower ``ServerApp`` running ``LayerwiseFedAvg``, and a one-call simulation.

:func:`simulate` runs a server and ``num_clients`` clients on Flower's simulation engine
(``flwr.simulation.run_simulation``: clients as Ray actors on one machine) and returns the
strategy, which holds every client's final model and the groups averaged each round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result
from torch import nn

from lwlc.core.errors import LwlcError
from lwlc.flower.client import ClientSetup, client_app
from lwlc.flower.strategy import LayerwiseFedAvg
from lwlc.training.modules import reinitialize

StrategyFactory = Callable[[nn.Module], LayerwiseFedAvg]


def server_app(
    model: Callable[[], nn.Module],
    strategy: StrategyFactory,
    rounds: int,
    init_seed: int = 0,
    on_finish: Callable[[LayerwiseFedAvg, Result], None] | None = None,
) -> ServerApp:
    """A ``ServerApp`` that runs ``rounds`` rounds of ``strategy(model)`` from the model
    initialised by ``init_seed`` (as ``FederatedModule``); ``on_finish`` receives the strategy
    and Flower's result."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        net = model()
        reinitialize(net, init_seed)
        chosen = strategy(net)
        result = chosen.start(
            grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=rounds
        )
        if on_finish is not None:
            on_finish(chosen, result)

    return app


def simulate(
    setup: ClientSetup,
    strategy: StrategyFactory,
    init_seed: int = 0,
    backend_config: dict[str, Any] | None = None,
) -> tuple[LayerwiseFedAvg, Result]:
    """Run ``setup.rounds`` rounds on Flower's simulation engine, one node per client of
    ``setup.data()``; returns the strategy (clients' models, chosen groups) and the result."""
    from flwr.simulation import run_simulation

    finished: list[tuple[LayerwiseFedAvg, Result]] = []
    app = server_app(
        setup.model, strategy, setup.rounds, init_seed, lambda s, r: finished.append((s, r))
    )
    num_clients = setup.clients_data().num_clients
    config = backend_config or {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    run_simulation(app, client_app(setup), num_supernodes=num_clients, backend_config=config)
    if not finished:
        raise LwlcError("the Flower simulation stopped before the last round: see its log above")
    return finished[0]
