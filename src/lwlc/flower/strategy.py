"""``LayerwiseFedAvg``: Flower's FedAvg on a chosen set of layers, the rest personal to each client.

Flower's :class:`~flwr.serverapp.strategy.FedAvg` samples the nodes, checks the replies and
averages them weighted by each client's ``num-examples``; this strategy keeps all of that and
changes only what each node receives: the averaged tensors of the shared layers, and for every
other tensor the node's own values from its last reply. The server keeps every node's last model
(personal layers included), so a client that fails a round keeps its personal layers and gets
them back with the next round's shared layers; aggregation never writes a personal layer. With
``average="auto"`` the shared set is chosen from the clients' own losses (``lwlc.flower.selection``)
at the start of a training round, through Flower evaluate messages sent on the round's Grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from lwlc.core import layers
from lwlc.core.errors import LwlcError
from lwlc.flower.monitor import BarrierMonitor
from lwlc.flower.selection import ACTION, Answer, AutoSelection, Selector
from lwlc.training.federated.averaging import AVERAGING_SCHEMES, averaged_keys

State = dict[str, np.ndarray]
WEIGHT_KEYS = {"samples": "num-examples", "batches": "num-batches"}
CLIENT_RECORD = "client"  # the reply's ConfigRecord naming the client's partition
OWN, AVERAGE = "own", "average"  # the ArrayRecords of a layer-set question
TIMEOUT = 3600.0  # seconds to wait for the clients' answers (FedAvg.start's default)


class LayerwiseFedAvg(FedAvg):
    """FedAvg that averages only ``average`` and leaves every other layer personal.

    Args:
        model: The clients' architecture (names the layer groups; the monitor evaluates it).
        average: ``"all"`` (FedAvg), ``"none"``, a scheme of ``AVERAGING_SCHEMES``
            (``"authors_resnet18"``: the authors' 9 tensors, weighted by batches), layer names or
            globs as ``lwlc merge --groups``, or ``"auto"``: the largest set within a loss
            budget on the clients' own data, as ``lwlc merge --groups auto`` chooses it
            (``selection``; nothing is averaged before the first choice).
        monitor: Measures layer-wise barriers between the clients' models after each round.
        selection: How ``"auto"`` chooses (budget, warm-up rounds, re-choosing, the groups that
            may be chosen, the CSV); default :class:`~lwlc.flower.selection.AutoSelection()`.
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
        selection: AutoSelection | None = None,
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
        if selection is not None and average != "auto":
            raise LwlcError(f"selection= applies to average='auto', not to {average!r}")
        auto = average == "auto"
        self.selector = Selector.for_model(selection or AutoSelection(), model) if auto else None
        state = model.state_dict()
        self.template = {k: tuple(v.shape) for k, v in state.items()}
        self.float_keys = [k for k, v in state.items() if torch.is_floating_point(v)]
        self.groups = layers.default_groups(model)
        self.shared: list[str] = [] if auto else averaged_keys(model, average)
        self.monitor = monitor
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
        """FedAvg's messages, each carrying the node's personal layers (with ``auto``, first
        the groups are chosen when due)."""
        if self.selector is not None and self.selector.options.due(server_round):
            self.select(server_round, arrays, grid)
        messages = super().configure_train(server_round, arrays, config, grid)
        return [self._personalised(m, arrays) for m in messages]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Each node evaluates its own model: shared layers averaged, the rest its own."""
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return [self._personalised(m, arrays) for m in messages]

    def select(self, server_round: int, arrays: ArrayRecord, grid: Grid) -> list[str]:
        """Choose the shared groups from the losses the clients measure on their own data: the
        clients that replied last round each get their own model and the average ``arrays``."""
        if self.selector is None:
            raise LwlcError(
                "select() chooses for average='auto'; this strategy averages fixed groups"
            )
        split = self.selector.options.split

        def ask(sets: list[str]) -> list[Answer]:
            messages = [
                Message(
                    RecordDict(
                        {
                            OWN: ArrayRecord(
                                {k: Array.from_numpy_ndarray(v) for k, v in own.items()}
                            ),
                            AVERAGE: arrays,
                            self.configrecord_key: ConfigRecord(
                                {"server-round": server_round, "sets": sets, "split": split}
                            ),
                        }
                    ),
                    dst_node_id=node,
                    message_type=f"evaluate.{ACTION}",
                    group_id=str(server_round),
                )
                for node, own in self.models.items()
            ]
            replies = grid.send_and_receive(messages, timeout=TIMEOUT)
            return [answer_of(m) for m in replies if not m.has_error()]

        chosen = self.selector.choose(server_round, ask)
        self.shared = shared_keys(self.groups, self.float_keys, chosen)
        return chosen

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
            self._measure_and_record(server_round, valid)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            self.global_arrays = arrays
        return arrays, metrics

    def _arrays(self, message: Message) -> ArrayRecord:
        return next(iter(message.content.array_records.values()))

    def _weight(self, message: Message) -> float:
        return float(next(iter(message.content.metric_records.values()))[self.weighted_by_key])

    def _measure_and_record(self, server_round: int, valid: list[Message]) -> None:
        """Barriers between the replying clients (with a monitor); the groups averaged."""
        if self.monitor is not None:
            states = {
                self.partitions.get(m.metadata.src_node_id, m.metadata.src_node_id): {
                    k: torch.from_numpy(v.numpy()) for k, v in self._arrays(m).items()
                }
                for m in valid
            }
            weights = [self._weight(m) for m in valid]
            self.monitor.measure(server_round, states, weights)
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


def answer_of(reply: Message) -> Answer:
    """A client's answer to a layer-set question: its samples, and loss and accuracy per set."""
    metrics = next(iter(reply.content.metric_records.values()))
    return int(metrics["num-examples"]), list(metrics["loss"]), list(metrics["accuracy"])


def shared_keys(
    groups: Sequence[layers.Group], float_keys: Sequence[str], names: Sequence[str]
) -> list[str]:
    """The floating state-dict keys of the groups ``names`` (in state-dict order)."""
    chosen = {k for g in groups if g.name in set(names) for k in g.keys}
    return [k for k in float_keys if k in chosen]
