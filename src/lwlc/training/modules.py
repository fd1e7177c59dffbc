"""The LightningModules that train one network or a pair of networks for connectivity studies.

Both modules build their optimizer (the paper's SGD by default) and LR scheduler from their init
args, so a plain ``Trainer.fit`` trains them; LightningCLI's ``optimizer:`` and ``lr_scheduler:``
config keys replace both. Their checkpoints hold tensors and plain data only, so that
``torch.load(path, weights_only=True)`` reads them.
"""

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn
from torchmetrics import MeanMetric

from lwlc.core.errors import LwlcError
from lwlc.data.base import PAD_LABEL
from lwlc.training.schedules import RunSchedule, lightning_entry

Batch = Sequence[torch.Tensor]
# What each member of a pair trains on: the whole training split, or its own disjoint half.
MEMBER_DATA = ("whole", "halves")
STAGES = ("train", "val", "test")


def _hparams_ignore() -> list[str]:
    """Hyper-parameters to leave out of the checkpoint: the optimizer and scheduler (callables)
    and the network when it is an object.

    Under LightningCLI ``model`` is saved as its config dict (class_path, init_args); built in
    Python it is an ``nn.Module``, which would be pickled and break ``weights_only`` loading, as
    a callable would (the run's config.yaml records the optimizer).
    """
    callables = ["optimizer", "lr_scheduler"]
    return callables if _given_hyperparameters.get() is not None else [*callables, "model"]


def sgd(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The paper's optimizer: SGD, learning rate 0.05, momentum 0.9, weight decay 5e-4."""
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def reinitialize(net: nn.Module, seed: int) -> None:
    """Re-draw every parameter of ``net`` from its initialisation under ``seed``.

    Every module's ``reset_parameters`` runs first (PyTorch's defaults), then the
    ``custom_init`` of the modules that define one (e.g. ``ResNet18(init="torchvision")``),
    innermost first, so a re-drawn network keeps the initialisation it was built with. The
    global RNG is left as it was, so the result depends on ``seed`` alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = list(net.modules())
        for module in modules:
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        for module in reversed(modules):
            custom = getattr(module, "custom_init", None)
            if callable(custom):
                custom()


class _ClassificationBase(pl.LightningModule):
    """Shared machinery: cross-entropy, per-member accuracy, logging, speed switches."""

    def __init__(
        self,
        members: Sequence[str],
        channels_last: bool,
        compile: bool,
        optimizer: OptimizerCallable,
        lr_scheduler: LRSchedulerCallable | None,
    ) -> None:
        super().__init__()
        self._optimizer = optimizer
        self._lr_scheduler = lr_scheduler
        self._members = tuple(members)
        self._channels_last = channels_last
        self._compile = compile
        self.accuracy = nn.ModuleDict(
            {f"{stage}_{m or 'net'}": MeanMetric() for stage in STAGES for m in self._members}
        )

    def _prepare_nets(self, nets: Sequence[nn.Module]) -> None:
        """Apply the memory-format and compile switches (in place, so state-dict keys stay)."""
        for net in nets:
            if self._channels_last:
                net.to(memory_format=torch.channels_last)
            if self._compile:
                net.compile()

    def configure_optimizers(self) -> Any:
        """The init args' optimizer (and LR scheduler) over every parameter; a LightningCLI
        config's ``optimizer:``/``lr_scheduler:`` keys replace them."""
        optimizer = self._optimizer(self.parameters())
        if self._lr_scheduler is None:
            return optimizer
        scheduler = self._lr_scheduler(optimizer)
        if isinstance(scheduler, RunSchedule):  # spans this run, stepped after every step
            scheduler = lightning_entry(scheduler, self.trainer)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._channels_last:  # readers of the checkpoint may assume contiguous tensors
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = type(state)((k, v.contiguous()) for k, v in state.items())

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self._channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _member_step(
        self, net: nn.Module, batch: Batch, stage: str, member: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss of ``net`` on ``batch`` and the number of targets it sums (padding labels
        left out); logs ``[member/]stage/loss`` (their mean) and ``[member/]stage/acc``."""
        x, y = batch[0], batch[1]
        logits = net(self._inputs(x))
        counted = y != PAD_LABEL
        total = F.cross_entropy(  # sequences: per token
            logits.flatten(0, -2), y.flatten(), ignore_index=PAD_LABEL, reduction="sum"
        )
        count = counted.sum()
        accuracy = self.accuracy[f"{stage}_{member or 'net'}"]
        accuracy((logits.argmax(dim=-1) == y).float(), counted.float())
        prefix = f"{member}/{stage}" if member else stage
        on_step = stage == "train"
        loss = total / count.clamp(min=1)
        self.log(f"{prefix}/loss", loss, on_step=on_step, on_epoch=True, batch_size=len(y))
        self.log(f"{prefix}/acc", accuracy, on_step=False, on_epoch=True, batch_size=len(y))
        return total, count

    def _objective(
        self, totals: Sequence[torch.Tensor], counts: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The sum over members of ``total * processes / global_count``, ``global_count`` being
        the member's targets in this step's batches of all processes together.

        DDP averages the processes' gradients, so each member's gradient is that of its mean
        loss over the whole global batch, however unevenly the batch is split (the last batch of
        an epoch); in one process this is the mean loss of the batch.
        """
        trainer = self.trainer
        global_counts = trainer.strategy.reduce(torch.stack(list(counts)), reduce_op="sum")
        return (torch.stack(list(totals)) * trainer.world_size / global_counts).sum()


class ClassifierModule(_ClassificationBase):
    """One classifier trained with cross-entropy; logs ``train|val|test/loss|acc``.

    Args:
        model: The network.
        optimizer: Builds the optimizer from the parameters (a config's ``optimizer:`` key
            replaces it).
        lr_scheduler: Builds the LR scheduler from the optimizer (None: a constant rate).
        channels_last: Use the channels-last memory format (faster convolutions on GPUs).
        compile: torch.compile the network.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = sgd,
        lr_scheduler: LRSchedulerCallable | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(("",), channels_last, compile, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=_hparams_ignore())
        self.net = model
        self._prepare_nets([self.net])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the network."""
        return self.net(self._inputs(x))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        total, count = self._member_step(self.net, batch, "train", "")
        return self._objective([total], [count])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._member_step(self.net, batch, "val", "")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._member_step(self.net, batch, "test", "")

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0])


class PairedModule(_ClassificationBase):
    """Two copies of one architecture, A and B, trained side by side for connectivity studies.

    Each member is the template re-initialised under its own seed (equal seeds give bit-identical
    members) and trained on its own data order: with different order seeds a training batch is
    ``[batch_a, batch_b]`` (the data module yields one stream per distinct seed), with equal ones
    both members see the same batch. One optimizer holds both members' (disjoint) parameters and
    minimises ``loss_a + loss_b``, which is exactly two separate trainings.

    With ``member_data="halves"`` each member trains on its own disjoint half of the training
    split (the authors' Figure 1 pair: two clients from one initialisation that never average);
    the data module then yields ``[batch_a, batch_b]`` from the two halves.

    With ``spawn_steps = k > 0`` only A trains for ``k`` optimizer steps; then B becomes a copy
    of A, optimizer state included, and both continue on their own data orders.
    Metrics are logged as ``a/train/loss``, ``b/val/acc``, ... The checkpoint records how the
    pair was made under ``lwlc_pairing`` (see :meth:`pairing`).

    Args:
        model: The architecture (a template: both members are re-initialised copies of it).
        init_seed_a: Seed of A's initialisation.
        init_seed_b: Seed of B's initialisation (equal to init_seed_a, the default: a shared init,
            as in the paper; another seed: independent networks).
        order_seed_a: Seed of A's data order (the CLI passes the order seeds to the data).
        order_seed_b: Seed of B's data order (equal to order_seed_a: one shared stream).
        spawn_steps: Train A alone for this many optimizer steps, then copy it into B (0: off).
        member_data: ``"whole"`` (each member sees the whole training split) or ``"halves"``
            (each its own disjoint half).
        optimizer: Builds the optimizer from both members' parameters (a config's ``optimizer:``
            key replaces it).
        lr_scheduler: Builds the LR scheduler from the optimizer (None: a constant rate).
        channels_last: Use the channels-last memory format (faster convolutions on GPUs).
        compile: torch.compile both members.
    """

    def __init__(
        self,
        model: nn.Module,
        init_seed_a: int = 0,
        init_seed_b: int = 0,
        order_seed_a: int = 0,
        order_seed_b: int = 1,
        spawn_steps: int = 0,
        member_data: str = "whole",
        optimizer: OptimizerCallable = sgd,
        lr_scheduler: LRSchedulerCallable | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(("a", "b"), channels_last, compile, optimizer, lr_scheduler)
        if spawn_steps < 0:
            raise LwlcError(f"spawn_steps={spawn_steps} must be >= 0 (0 = no spawning)")
        if member_data not in MEMBER_DATA:
            raise LwlcError(
                f"member_data={member_data!r} is not one of {', '.join(MEMBER_DATA)}: the whole "
                "training split for each member, or a disjoint half each"
            )
        self.save_hyperparameters(ignore=_hparams_ignore())
        self.init_seed_a, self.init_seed_b = init_seed_a, init_seed_b
        self.order_seed_a, self.order_seed_b = order_seed_a, order_seed_b
        self.spawn_steps = spawn_steps
        self.member_data = member_data
        self.net_a = copy.deepcopy(model)
        self.net_b = copy.deepcopy(model)
        reinitialize(self.net_a, init_seed_a)
        reinitialize(self.net_b, init_seed_b)
        self._prepare_nets([self.net_a, self.net_b])
        self._spawned = False

    @property
    def order_seeds(self) -> list[int]:
        """The data module's ``order_seeds`` this pair needs: one stream per distinct seed."""
        if self.order_seed_a == self.order_seed_b:
            return [self.order_seed_a]
        return [self.order_seed_a, self.order_seed_b]

    def pairing(self) -> dict[str, Any]:
        """How the pair was made, as plain data: init and order shared or not, seeds, spawning."""
        if self.spawn_steps > 0:
            init = "spawn"
        elif self.init_seed_a == self.init_seed_b:
            init = "shared"
        else:
            init = "independent"
        return {
            "init": init,
            "order": "shared" if self.order_seed_a == self.order_seed_b else "different",
            "init_seed_a": self.init_seed_a,
            "init_seed_b": self.init_seed_b,
            "order_seed_a": self.order_seed_a,
            "order_seed_b": self.order_seed_b,
            "spawn_steps": self.spawn_steps,
            "data": self.member_data,
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of A and of B."""
        x = self._inputs(x)
        return self.net_a(x), self.net_b(x)

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None and getattr(datamodule, "order_seeds", []) is None:
            datamodule.order_seeds = self.order_seeds  # left to the pair (the data's default)
        data_seeds = getattr(datamodule, "order_seeds", None)
        if data_seeds is not None and list(data_seeds) != self.order_seeds:
            raise LwlcError(
                f"the data module's order_seeds={list(data_seeds)} do not match the pair's order "
                f"seeds (a={self.order_seed_a}, b={self.order_seed_b}); set "
                f"data order_seeds to {self.order_seeds}"
            )

    def setup(self, stage: str) -> None:
        """Before anything builds a training loader (a run-length LR schedule counts the
        batches in ``configure_optimizers``): tell the data module what each member trains on."""
        if stage == "fit":
            self._agree_on_member_data(self.trainer.datamodule)

    def _agree_on_member_data(self, datamodule: Any) -> None:
        """Give the data module the pair's ``member_data`` (when it left it to the pair), or
        refuse a data module that splits the data otherwise."""
        halves = self.member_data == "halves"
        if datamodule is None or not hasattr(datamodule, "member_halves"):
            if halves:
                raise LwlcError(
                    "member_data=halves needs an lwlc data module (it cuts the training split "
                    "into the members' halves)"
                )
            return
        if datamodule.member_halves is None:
            datamodule.member_halves = halves
        elif bool(datamodule.member_halves) != halves:
            raise LwlcError(
                f"the data module's member_halves={datamodule.member_halves} does not match the "
                f"pair's member_data={self.member_data!r}: set member_halves to {halves}"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lwlc_pairing"] = self.pairing()

    def _member_batches(self, batch: Any) -> tuple[Batch, Batch]:
        if self.order_seed_a == self.order_seed_b and self.member_data == "whole":
            return batch, batch
        if not (isinstance(batch, Sequence) and len(batch) == 2 and isinstance(batch[0], Sequence)):
            raise LwlcError(
                f"order seeds {self.order_seeds} differ or the members train on halves, so each "
                "training batch must be [batch_a, batch_b]: give the data module one order "
                "seed per member"
            )
        return batch[0], batch[1]

    def _spawn(self) -> None:
        """Make B a copy of A: weights, buffers and A's optimizer state for each parameter."""
        self.net_b.load_state_dict(self.net_a.state_dict())
        for optimizer in self.trainer.optimizers:
            for p_a, p_b in zip(self.net_a.parameters(), self.net_b.parameters(), strict=True):
                if p_a in optimizer.state:
                    optimizer.state[p_b] = {
                        key: value.clone() if torch.is_tensor(value) else copy.deepcopy(value)
                        for key, value in optimizer.state[p_a].items()
                    }
        self._spawned = True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.spawn_steps > 0 and not self._spawned and self.global_step == self.spawn_steps:
            self._spawn()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        batch_a, batch_b = self._member_batches(batch)
        steps = [self._member_step(self.net_a, batch_a, "train", "a")]
        if self.global_step >= self.spawn_steps:
            steps.append(self._member_step(self.net_b, batch_b, "train", "b"))
        totals, counts = zip(*steps, strict=True)
        return self._objective(totals, counts)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._member_step(self.net_a, batch, "val", "a")
        self._member_step(self.net_b, batch, "val", "b")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._member_step(self.net_a, batch, "test", "a")
        self._member_step(self.net_b, batch, "test", "b")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        logits_a, logits_b = self(batch[0])
        return {"a": logits_a, "b": logits_b}
