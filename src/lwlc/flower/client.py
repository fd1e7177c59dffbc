"""Flower clients that train an lwlc model with Lightning on their part of a FederatedDataModule.

Each round a client loads the model the server sent (shared layers averaged, the rest its own),
trains ``local_epochs`` epochs with a fresh Lightning ``Trainer`` exactly as a client of the
in-process :class:`~lwlc.training.federated.FederatedModule` (same loss, SGD, data order and
learning-rate schedule; its momentum kept across rounds in Flower's ``context.state``) and replies
with its whole model and its sample and batch counts (FedAvg's and the authors' weights). For
``average="auto"`` it answers the server's layer-set questions (``evaluate.layer_sets``) on its
own data.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import Tensor, nn

from lwlc.core.errors import LwlcError
from lwlc.flower.selection import ACTION, layer_set_metrics
from lwlc.flower.strategy import AVERAGE, CLIENT_RECORD, OWN
from lwlc.training.federated.data import FederatedDataModule
from lwlc.training.federated.module import LR_SCHEDULES

MOMENTUM_RECORD = "lwlc.momentum"


class ClientModule(pl.LightningModule):
    """One client's local training: cross-entropy and SGD, as a client of ``FederatedModule``.

    ``start_epoch`` is the run's epoch the round begins at (for the cosine schedule over
    ``total_epochs``); ``momentum_buffers`` (by parameter index) continue the client's SGD.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float,
        momentum: float,
        weight_decay: float,
        lr_schedule: str,
        total_epochs: int,
        start_epoch: int,
        momentum_buffers: dict[int, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.settings = (lr, momentum, weight_decay, lr_schedule, total_epochs, start_epoch)
        self.momentum_buffers = momentum_buffers or {}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def configure_optimizers(self) -> Any:
        lr, momentum, weight_decay, lr_schedule, total_epochs, start_epoch = self.settings
        optimizer = torch.optim.SGD(
            self.net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        if self.momentum_buffers:
            groups = optimizer.state_dict()["param_groups"]
            state = {i: {"momentum_buffer": b} for i, b in self.momentum_buffers.items()}
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        if lr_schedule == "constant":
            return optimizer
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_epochs))
        with warnings.catch_warnings():  # replaying the epochs before this round, not training
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start_epoch):
                cosine.step()
        return {"optimizer": optimizer, "lr_scheduler": cosine}


@dataclass
class ClientSetup:
    """What every client builds: its model, the clients' data and the training schedule.

    ``model`` and ``data`` are factories (each client process builds its own); the schedule's
    fields mean what they mean for ``FederatedModule``.
    """

    model: Callable[[], nn.Module]
    data: Callable[[], FederatedDataModule]
    rounds: int = 1
    local_epochs: int = 1
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "constant"
    accelerator: str = "cpu"
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise LwlcError(
                f"unknown lr_schedule {self.lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}"
            )

    def clients_data(self) -> FederatedDataModule:
        """The data module, built once per process."""
        if "data" not in self.cache:
            self.cache["data"] = self.data()
        return self.cache["data"]

    def net(self, message: Message) -> nn.Module:
        """A fresh model holding the arrays ``message`` carries."""
        net = self.model()
        arrays = next(iter(message.content.array_records.values()))
        net.load_state_dict(arrays.to_torch_state_dict())
        return net


def partition_of(context: Context, data: FederatedDataModule) -> int:
    """The client's partition: the node's ``partition-id`` (Flower's simulation sets it)."""
    if "partition-id" not in context.node_config:
        raise LwlcError(
            "the node has no partition-id: start it with --node-config 'partition-id=0 "
            f"num-partitions={data.num_clients}'"
        )
    partition = int(context.node_config["partition-id"])
    if not 0 <= partition < data.num_clients:
        raise LwlcError(
            f"partition-id {partition} is outside the {data.num_clients} clients of the split"
        )
    return partition


def train(setup: ClientSetup, message: Message, context: Context) -> Message:
    """One round of local training; the reply carries the whole model and its weights."""
    data = setup.clients_data()
    partition = partition_of(context, data)
    net = setup.net(message)
    server_round = int(next(iter(message.content.config_records.values()))["server-round"])
    start = (server_round - 1) * setup.local_epochs
    kept = context.state.array_records.get(MOMENTUM_RECORD)
    buffers = {int(k): v for k, v in kept.to_torch_state_dict().items()} if kept else None
    module = ClientModule(
        net, setup.lr, setup.momentum, setup.weight_decay, setup.lr_schedule,
        setup.rounds * setup.local_epochs, start, buffers,
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=setup.local_epochs,
        accelerator=setup.accelerator,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(module, train_dataloaders=data.client_loader(partition, start))
    state = trainer.optimizers[0].state_dict()["state"]
    context.state[MOMENTUM_RECORD] = ArrayRecord(
        {str(i): s["momentum_buffer"] for i, s in state.items() if "momentum_buffer" in s}
    )
    metrics = MetricRecord(
        {
            "num-examples": data.sizes[partition],
            "num-batches": data.batch_counts[partition],
            "train_loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
        }
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(net.cpu().state_dict()),
            "metrics": metrics,
            CLIENT_RECORD: ConfigRecord({"partition-id": partition}),
        }
    )
    return Message(content=content, reply_to=message)


@torch.no_grad()
def evaluate(setup: ClientSetup, message: Message, context: Context) -> Message:
    """The client's model on its own test set: ``local_acc`` and ``local_loss``."""
    data = setup.clients_data()
    partition = partition_of(context, data)
    net = setup.net(message).eval()
    inputs, labels, owner = data.evaluation_set()
    mine = owner == partition
    x, y = inputs[mine], labels[mine]
    logits = net(x) if len(y) else torch.zeros(0, data.num_classes)
    n = len(y)
    metrics = MetricRecord(
        {
            "num-examples": n,
            "local_acc": float((logits.argmax(dim=-1) == y).double().mean()) if n else 0.0,
            "local_loss": float(F.cross_entropy(logits, y)) if n else 0.0,
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=message)


def own_data(data: FederatedDataModule, partition: int, split: str) -> tuple[Tensor, Tensor]:
    """The client's own (inputs, labels): its test set (``test``) or training part (``train``)."""
    if split == "train":
        return data.client_train_set(partition)
    inputs, labels, owner = data.evaluation_set()
    return inputs[owner == partition], labels[owner == partition]


def evaluate_layer_sets(setup: ClientSetup, message: Message, context: Context) -> Message:
    """Loss and accuracy on the client's own data of each candidate set the server asks about:
    the average on the set's groups, the client's own model elsewhere."""
    data = setup.clients_data()
    partition = partition_of(context, data)
    config = next(iter(message.content.config_records.values()))
    x, y = own_data(data, partition, str(config["split"]))
    losses, accuracies = layer_set_metrics(
        setup.model(), message.content[OWN].to_torch_state_dict(),
        message.content[AVERAGE].to_torch_state_dict(), list(config["sets"]), x, y,
    )  # fmt: skip
    metrics = MetricRecord({"num-examples": len(y), "loss": losses, "accuracy": accuracies})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=message)


def client_app(setup: ClientSetup) -> ClientApp:
    """A Flower ``ClientApp`` whose clients train ``setup``'s model on their partition."""
    app = ClientApp()

    @app.train()
    def train_round(message: Message, context: Context) -> Message:
        return train(setup, message, context)

    @app.evaluate()
    def evaluate_round(message: Message, context: Context) -> Message:
        return evaluate(setup, message, context)

    @app.evaluate(ACTION)
    def layer_sets(message: Message, context: Context) -> Message:
        return evaluate_layer_sets(setup, message, context)

    return app
