"""Partial averaging on Flower (the ``lwlc[flower]`` extra).

``LayerwiseFedAvg`` (``strategy``) is Flower's FedAvg that averages a chosen set of layer groups
and leaves the rest personal to each client; with ``average="auto"`` the set is chosen within a
loss budget from the losses the clients measure on their own data (``selection``:
``AutoSelection``). ``BarrierMonitor`` (``monitor``) measures the layer-wise barriers between the
clients; ``client`` trains lwlc models with Lightning as Flower clients; ``server`` builds the
ServerApp and runs Flower's simulation. See docs/flower.md.
"""

from lwlc.flower.client import ClientModule, ClientSetup, client_app
from lwlc.flower.monitor import BarrierMonitor
from lwlc.flower.selection import AutoSelection
from lwlc.flower.server import server_app, simulate
from lwlc.flower.strategy import LayerwiseFedAvg

__all__ = [
    "AutoSelection",
    "BarrierMonitor",
    "ClientModule",
    "ClientSetup",
    "LayerwiseFedAvg",
    "client_app",
    "server_app",
    "simulate",
]
