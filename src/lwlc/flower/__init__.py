"""Partial averaging on Flower (the ``lwlc[flower]`` extra).

``LayerwiseFedAvg`` (``strategy``) is Flower's FedAvg that averages a chosen set of layer groups
and leaves the rest personal to each client, optionally chosen each round from the layer-wise
barriers ``BarrierMonitor`` (``monitor``) measures between the clients; ``client`` trains lwlc
models with Lightning as Flower clients; ``server`` builds the ServerApp and runs Flower's
simulation. See docs/flower.md.
"""

from lwlc.flower.client import ClientModule, ClientSetup, client_app
from lwlc.flower.monitor import BarrierMonitor, below_threshold
from lwlc.flower.server import server_app, simulate
from lwlc.flower.strategy import LayerwiseFedAvg

__all__ = [
    "BarrierMonitor",
    "ClientModule",
    "ClientSetup",
    "LayerwiseFedAvg",
    "below_threshold",
    "client_app",
    "server_app",
    "simulate",
]
