"""``LayerwiseFedAvg``: Flower's FedAvg on a chosen set of layers, the rest personal to each client.

Flower's :class:`~flwr.serverapp.strategy.FedAvg` samples the nodes, checks the replies and
averages them weighted by each client's ``num-examples``; this strategy keeps all of that and
changes only what each node receives: the averaged tensors of the shared layers, and for every
other tensor the node's own values from its last reply. The server keeps every node's last model
(personal layers included), so a client that fails a round keeps its personal layers and gets
them back with the next round's shared layers; aggregation never writes a personal layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from lwlc.core import layers
from lwlc.core.errors import LwlcError
from lwlc.flower.monitor import BarrierMonitor, Chooser, below_threshold
from lwlc.training.federated.averaging import AVERAGING_SCHEMES, averaged_keys

State = dict[str, np.ndarray]
WEIGHT_KEYS = {"samples": "num-examples", "batches": "num-batches"}
CLIENT_RECORD = "client"  # the reply's ConfigRecord naming the client's partition


class LayerwiseFedAvg(FedAvg):
    """FedAvg that averages only ``average`` and leaves every other layer personal.

    Args:
        model: The clients' architecture (names the layer groups; the monitor evaluates it).
        average: ``"all"`` (FedAvg), ``"none"``, a scheme of ``AVERAGING_SCHEMES``
            (``"authors_resnet18"``: the authors' 9 tensors, weighted by batches), layer names or
            globs as ``lwlc merge --groups``, or ``"auto"``: each round, ``chooser`` picks the
            groups from the barriers ``monitor`` measured between the clients.
        monitor: Measures layer-wise barriers between the clients' models after each round.
        chooser: ``(barriers by group, round) -> groups to average`` for ``"auto"`` (default:
            :func:`~lwlc.flower.monitor.below_threshold`).
        weighting: ``samples`` (FedAvg's ``num-examples``) or ``batches`` (the authors'); by
            default ``batches`` for the authors' scheme, else ``samples``.
        **fedavg: Flower's FedAvg options (``fraction_train``, ``min_available_nodes``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        average: str | Sequence[str] = "all",
        *,
        monitor: BarrierMonitor | None = None,
        chooser: Chooser | None = None,
        weighting: str | None = None,
        **fedavg: Any,
    ) -> None:
        named = isinstance(average, str) and average in AVERAGING_SCHEMES
        weighting = weighting or (AVERAGING_SCHEMES[average][1] if named else "samples")
        if weighting not in WEIGHT_KEYS:
            raise LwlcError(
                f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHT_KEYS)}"
            )
        super().__init__(weighted_by_key=WEIGHT_KEYS[weighting], **fedavg)
        self.auto = average == "auto"
        if self.auto and monitor is None:
            raise LwlcError(
                "average='auto' chooses the layers from measured barriers: give "
                "monitor=BarrierMonitor(model, data)"
            )
        state = model.state_dict()
        self.template = {k: tuple(v.shape) for k, v in state.items()}
        self.float_keys = [k for k, v in state.items() if torch.is_floating_point(v)]
        self.groups = layers.default_groups(model)
        self.shared: list[str] = [] if self.auto else averaged_keys(model, average)
        self.monitor = monitor
        self.chooser = chooser or below_threshold()
        self.models: dict[int, State] = {}  # each node's model from its last reply
        self.partitions: dict[int, int] = {}  # node id -> the client's partition id
        self.chosen: dict[int, list[str]] = {}  # round -> the groups averaged that round
        self.global_arrays: ArrayRecord | None = None

    def _personalised(self, message: Message, arrays: ArrayRecord) -> Message:
        """``message`` with the node's own tensors in place of the global non-shared ones."""
        node = message.metadata.dst_node_id
        own = self.models.get(node)
        shared = set(self.shared)
        record = ArrayRecord()
        for key, value in arrays.items():
            keep = own is not None and key not in shared
            record[key] = Array.from_numpy_ndarray(own[key]) if keep else value
        content = RecordDict(
            {
                self.arrayrecord_key: record,
                self.configrecord_key: message.content[self.configrecord_key],
            }
        )
        return Message(
            content=content, dst_node_id=node, message_type=message.metadata.message_type
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, each carrying the node's personal layers."""
        messages = super().configure_train(server_round, arrays, config, grid)
        return [self._personalised(m, arrays) for m in messages]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Each node evaluates its own model: shared layers averaged, the rest its own."""
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return [self._personalised(m, arrays) for m in messages]

    def _check_architecture(self, node: int, arrays: ArrayRecord) -> None:
        """One line naming the first tensor where a client's model differs from ``model``."""
        got = {k: tuple(v.shape) for k, v in arrays.items()}
        if got == self.template:
            return
        missing = sorted(set(self.template) - set(got)) or sorted(set(got) - set(self.template))
        differ = missing or [k for k in self.template if got[k] != self.template[k]]
        key = differ[0]
        raise LwlcError(
            f"client node {node} sent a model that differs from the server's at {key!r} "
            f"({got.get(key, 'missing')} vs {self.template.get(key, 'missing')}): give every "
            "client the same architecture"
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Keep every client's model, choose the shared set (``auto``), then FedAvg's mean."""
        replies = list(replies)
        valid = [m for m in replies if not m.has_error()]
        for message in valid:  # check all before keeping any: a bad reply changes nothing
            self._check_architecture(message.metadata.src_node_id, self._arrays(message))
        for message in valid:
            node = message.metadata.src_node_id
            self.models[node] = {k: v.numpy() for k, v in self._arrays(message).items()}
            client = message.content.config_records.get(CLIENT_RECORD)
            if client is not None:
                self.partitions[node] = int(client["partition-id"])
        if valid:
            self._measure_and_choose(server_round, valid)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            self.global_arrays = arrays
        return arrays, metrics

    def _arrays(self, message: Message) -> ArrayRecord:
        return next(iter(message.content.array_records.values()))

    def _weight(self, message: Message) -> float:
        return float(next(iter(message.content.metric_records.values()))[self.weighted_by_key])

    def _measure_and_choose(self, server_round: int, valid: list[Message]) -> None:
        """Barriers between the replying clients; with ``auto``, the groups they choose."""
        barriers: Mapping[str, float] = {}
        if self.monitor is not None:
            states = {
                self.partitions.get(m.metadata.src_node_id, m.metadata.src_node_id): {
                    k: torch.from_numpy(v.numpy()) for k, v in self._arrays(m).items()
                }
                for m in valid
            }
            weights = [self._weight(m) for m in valid]
            barriers = self.monitor.measure(server_round, states, weights)
        if self.auto:
            if barriers:  # a round without a measurement keeps the last choice
                chosen = list(self.chooser(barriers, server_round))
                self.shared = shared_keys(self.groups, self.float_keys, chosen)
        names = {g.name for g in self.groups if set(g.keys) & set(self.shared)}
        self.chosen[server_round] = [g.name for g in self.groups if g.name in names]
        if self.monitor is not None:
            self.monitor.log_choice(server_round, self.chosen[server_round])

    def client_models(self) -> dict[int, dict[str, torch.Tensor]]:
        """Each client's model after the last round (by partition id, else node id): the shared
        layers from the last aggregate, the rest the client's own."""
        shared = set(self.shared)
        models = {}
        for node, own in self.models.items():
            state = {
                k: torch.from_numpy(
                    self.global_arrays[k].numpy() if k in shared and self.global_arrays else v
                ).to(torch.from_numpy(v).dtype)
                for k, v in own.items()
            }
            models[self.partitions.get(node, node)] = state
        return models


def shared_keys(
    groups: Sequence[layers.Group], float_keys: Sequence[str], names: Sequence[str]
) -> list[str]:
    """The floating state-dict keys of the groups ``names`` (in state-dict order)."""
    chosen = {k for g in groups if g.name in set(names) for k in g.keys}
    return [k for k in float_keys if k in chosen]
