"""Federated learning: client splits (``partitioning``), the clients' data (``data``), the
server's averaging (``averaging``) and the in-process simulation on Lightning (``module``).

``lwlc.training.federated.FederatedModule`` and ``FederatedDataModule`` are the class paths
configs and recipes name; :mod:`lwlc.flower` runs the same rounds on Flower.
"""

from lwlc.training.federated.averaging import (
    AVERAGING_SCHEMES,
    WEIGHTINGS,
    averaged_keys,
    weighted_average,
)
from lwlc.training.federated.data import TEST_SETS, FederatedDataModule
from lwlc.training.federated.module import LR_SCHEDULES, FederatedModule
from lwlc.training.federated.partitioning import (
    SPLITS,
    TRAIN_FRACTION,
    holdout,
    matched_test_sets,
    split_clients,
)

__all__ = [
    "AVERAGING_SCHEMES",
    "LR_SCHEDULES",
    "SPLITS",
    "TEST_SETS",
    "TRAIN_FRACTION",
    "WEIGHTINGS",
    "FederatedDataModule",
    "FederatedModule",
    "averaged_keys",
    "holdout",
    "matched_test_sets",
    "split_clients",
    "weighted_average",
]
