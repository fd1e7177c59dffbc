"""Federated learning simulated on Lightning: clients train locally, layers are averaged.

N clients start from one initialisation and each trains on its own part of the data; after
every ``local_epochs`` epochs (a *round*) the server replaces the chosen layers of every client
by their mean weighted by the clients' data sizes. Averaging every layer is FedAvg (McMahan et
al. 2017); averaging only some layers (e.g. the body without the head) leaves the others
personal to each client (science.md section 6, experiment 7).

The simulation runs in one process on one Lightning ``Trainer``: the clients are the
sub-networks of one LightningModule, one training batch is ``[batch of client 0, batch of
client 1, ...]``, and the loss is the sum of the clients' losses, which gives each client exactly
the gradient of its own loss (their parameters are disjoint). Every client is on the same device
and averaging is a tensor operation; :mod:`lwlc.flower` runs the same rounds as Flower clients
(several processes or machines) and gives the same client models.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lwlc.core.errors import LwlcError
from lwlc.training.federated.averaging import (
    AVERAGING_SCHEMES,
    WEIGHTINGS,
    averaged_keys,
    weighted_average,
)
from lwlc.training.modules import reinitialize

LR_SCHEDULES = ("constant", "cosine")


class FederatedModule(pl.LightningModule):
    """``num_clients`` copies of ``model`` from one initialisation, averaged every ``local_epochs``.

    ``average``: ``"all"`` (FedAvg), ``"none"`` (local training only), a named scheme
    (``"authors_resnet18"``: the authors' 9 tensors) or layer patterns (only the matching layers
    are averaged; the rest stay personal). ``weighting``: the averaging weights, each client's
    number of training ``samples`` (FedAvg) or of training ``batches`` per epoch (the authors');
    by default ``batches`` for the authors' scheme, else ``samples``. After every round the
    clients' test sets are evaluated (see ``FederatedDataModule``) and logged: per client
    ``client{i}/local_acc`` (accuracy on its own test set: its personal task) and
    ``client{i}/acc`` (on every client's test set together), their means ``clients/local_acc``
    and ``clients/acc`` (clients without test samples left out), and for the model whose every
    layer is the weighted mean (what FedAvg would deploy) ``global/acc`` and ``global/local_acc``
    (its mean accuracy on the clients' own test sets). Rows are also kept in ``history``.
    Each client keeps its own optimizer state (momentum) across rounds. SGD's rate is constant or
    annealed to 0 by a cosine over the run (``lr_schedule="cosine"``, per epoch).
    """

    def __init__(
        self,
        model: nn.Module,
        num_clients: int = 2,
        local_epochs: int = 1,
        average: str | list[str] = "all",
        init_seed: int = 0,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_schedule: str = "constant",
        weighting: str | None = None,
    ) -> None:
        super().__init__()
        if num_clients < 1 or local_epochs < 1:
            raise LwlcError(
                f"num_clients={num_clients} and local_epochs={local_epochs} must be >= 1"
            )
        if lr_schedule not in LR_SCHEDULES:
            raise LwlcError(
                f"unknown lr_schedule {lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}"
            )
        named = isinstance(average, str) and average in AVERAGING_SCHEMES
        weighting = weighting or (AVERAGING_SCHEMES[average][1] if named else "samples")
        if weighting not in WEIGHTINGS:
            raise LwlcError(f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
        self.save_hyperparameters(ignore=["model"])
        self.local_epochs = local_epochs
        self.weighting = weighting
        self.average_keys = averaged_keys(model, average)
        template = copy.deepcopy(model)
        reinitialize(template, init_seed)
        self.clients = nn.ModuleList(copy.deepcopy(template) for _ in range(num_clients))
        self.global_net = copy.deepcopy(template).requires_grad_(False)
        self.history: list[dict[str, float]] = []
        self._weights: list[float] = []
        self._class_shares = torch.empty(0)
        self._shared_test = False
        self._correct = torch.empty(0)
        self._total = torch.empty(0)
        self._own_correct = torch.empty(0)
        self._own_total = torch.empty(0)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        sizes = getattr(data, "sizes", None)
        if sizes is None:
            raise LwlcError(
                "FederatedModule needs a FederatedDataModule (it reads the clients' data sizes)"
            )
        if len(sizes) != len(self.clients):
            raise LwlcError(
                f"the data module has {len(sizes)} clients but the model {len(self.clients)}: "
                "give both the same num_clients"
            )
        counts_of = {"samples": sizes, "batches": data.batch_counts}
        self._weights = [float(s) for s in counts_of[self.weighting]]
        self._shared_test = data.test_sets == "shared"
        counts = data.label_counts().double()
        self._class_shares = counts / counts.sum(dim=1, keepdim=True)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.clients.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        if hp.lr_schedule == "constant":
            return optimizer
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, self.trainer.max_epochs or 1)
        )
        return {"optimizer": optimizer, "lr_scheduler": cosine}

    def training_step(self, batch: Sequence[Sequence[Tensor] | None], batch_idx: int) -> Tensor:
        total = torch.zeros((), device=self.device)
        for i, (net, part) in enumerate(zip(self.clients, batch, strict=True)):
            if part is None:  # this client has finished its epoch
                continue
            x, y = part
            loss = F.cross_entropy(net(x), y)
            self.log(f"client{i}/train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
            total = total + loss
        return total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        last_batch = batch_idx + 1 == self.trainer.num_training_batches
        if last_batch and (self.current_epoch + 1) % self.local_epochs == 0:
            self.aggregate()

    @torch.no_grad()
    def aggregate(self) -> None:
        """The server step: every client's averaged layers become the weighted mean."""
        if not self.average_keys:
            return
        mean = weighted_average(
            [c.state_dict() for c in self.clients], self._weights, self.average_keys
        )
        for client in self.clients:
            client.load_state_dict(mean, strict=False)

    def on_validation_epoch_start(self) -> None:
        states = [c.state_dict() for c in self.clients]
        floats = [k for k, v in states[0].items() if torch.is_floating_point(v)]
        self.global_net.load_state_dict(
            {**states[0], **weighted_average(states, self._weights, floats)}
        )
        models, clients = len(self.clients) + 1, len(self.clients)
        classes = self._class_shares.shape[1]
        self._correct = torch.zeros(models, classes, dtype=torch.float64)
        self._total = torch.zeros(classes, dtype=torch.float64)
        self._own_correct = torch.zeros(models, clients, dtype=torch.float64)
        self._own_total = torch.zeros(clients, dtype=torch.float64)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y, owner = batch
        y_cpu, owner_cpu = y.cpu(), owner.cpu()
        classes, clients = self._total.shape[0], self._own_total.shape[0]
        owned = owner_cpu >= 0
        self._total += torch.bincount(y_cpu, minlength=classes).double()
        self._own_total += torch.bincount(owner_cpu[owned], minlength=clients).double()
        for m, net in enumerate([*self.clients, self.global_net]):
            hit = (net(x).argmax(dim=-1) == y).cpu()
            self._correct[m] += torch.bincount(y_cpu[hit], minlength=classes).double()
            self._own_correct[m] += torch.bincount(
                owner_cpu[hit & owned], minlength=clients
            ).double()

    def own_accuracy(self) -> Tensor:
        """``[models, clients]``: each model's accuracy on each client's own test set (NaN for a
        client without test samples); with shared test sets, the per-class accuracy weighted by
        the client's training label distribution."""
        if not self._shared_test:
            return self._own_correct / self._own_total
        seen = self._total > 0
        per_class = self._correct[:, seen] / self._total[seen]
        shares = self._class_shares[:, seen]
        return (per_class @ shares.T) / shares.sum(dim=1)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc = self._correct.sum(dim=1) / self._total.sum()
        own = self.own_accuracy()
        local = own.diagonal()
        row = {
            "round": float((self.current_epoch + 1) // self.local_epochs),
            "epoch": float(self.current_epoch + 1),
        }
        for i in range(len(self.clients)):
            row[f"client{i}/acc"] = float(acc[i])
            row[f"client{i}/local_acc"] = float(local[i])
        row["clients/acc"] = float(acc[:-1].mean())
        row["clients/local_acc"] = float(local.nanmean())
        row["global/acc"] = float(acc[-1])
        row["global/local_acc"] = float(own[-1].nanmean())
        self.history.append(row)
        self.log_dict({k: v for k, v in row.items() if "/" in k})
