"""The barrier Callback's measurement: the two networks and the data it compares, and one
evaluation of its paths at a moment of training (the engine of ``lwlc analyze``, sharded
over the ranks of a distributed run)."""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from lwlc.core import layers
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import InterpolationPath
from lwlc.core.measurement import ALIGNED, measure_extras, plan_paths, prepare
from lwlc.core.spec import MeasureSpec
from lwlc.core.sweep import Rows, path_key
from lwlc.formats.checkpoints import read_checkpoint

# An evaluation that lasts longer than this shows a progress line.
PROGRESS_AFTER_S = 1.0
State = dict[str, Tensor]


@contextmanager
def progress_line(description: str, total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm line on stderr that appears once the block has run ``PROGRESS_AFTER_S`` (a timer
    shows it even before the first update) and is erased when it ends; yields its update."""
    bar = tqdm(
        total=total,
        desc=description,
        unit="path",
        delay=PROGRESS_AFTER_S,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not show,
    )
    timer = threading.Timer(PROGRESS_AFTER_S, bar.refresh)
    timer.daemon = True
    if show:
        timer.start()
    try:
        yield bar.update
    finally:
        timer.cancel()
        if show:
            timer.join()
        bar.close()


def reference_network(
    pl_module: pl.LightningModule, reference_ckpt: str | None, member: str
) -> tuple[nn.Module, dict[str, Any], State | None]:
    """The network to use as architecture template, how the compared pair was made, and B's
    state when B is a file (``reference_ckpt``) rather than the module's ``net_b``."""
    net_a, net_b, net = (getattr(pl_module, n, None) for n in ("net_a", "net_b", "net"))
    if isinstance(net_a, nn.Module) and isinstance(net_b, nn.Module):
        if reference_ckpt:
            raise LwlcError(
                f"reference_ckpt={reference_ckpt!r} compares one network with a file, but "
                f"{type(pl_module).__name__} trains a pair (net_a, net_b): drop reference_ckpt "
                "to compare the pair"
            )
        pairing = pl_module.pairing() if hasattr(pl_module, "pairing") else {}
        return net_a, {"mode": "pair", "a": "net_a", "b": "net_b", **pairing}, None
    if not isinstance(net, nn.Module):
        raise LwlcError(
            "LayerwiseBarrierCallback needs a module with net_a and net_b (a pair) or net "
            f"(one network); {type(pl_module).__name__} has neither"
        )
    if not reference_ckpt:
        raise LwlcError(
            f"{type(pl_module).__name__} trains one network: set LayerwiseBarrierCallback "
            "reference_ckpt to the checkpoint to compare it with (e.g. its spawn point or an "
            "independent run)"
        )
    ck = read_checkpoint(reference_ckpt)
    chosen = member if ck.paired else "model"
    state = ck.members[chosen]
    layers.check_compatible(net.state_dict(), state)
    pairing = {
        "mode": "reference",
        "a": "net (being trained)",
        "b": f"{reference_ckpt} [{chosen}]",
        "reference_sha256": ck.sha256,
        "reference_pairing": ck.pairing,
    }
    return net, pairing, state


def split_tensors(
    trainer: pl.Trainer, spec: MeasureSpec, budget: int | None
) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor | None]:
    """The first ``budget`` samples of each split, and BatchNorm's calibration inputs."""
    datamodule = trainer.datamodule
    if not callable(getattr(datamodule, "tensors", None)):
        raise LwlcError(
            "LayerwiseBarrierCallback needs a data module with tensors(split, max_samples) "
            f"(lwlc's data modules have it), got {type(datamodule).__name__}"
        )
    data = {s: datamodule.tensors(s, budget) for s in spec.splits}
    empty = [s for s, (_, y) in data.items() if len(y) == 0]
    if empty:
        raise LwlcError(
            f"LayerwiseBarrierCallback split {empty[0]!r} is empty (val_size=0?): evaluate on "
            "another split, e.g. splits: [test]"
        )
    calibration = datamodule.tensors("train", spec.bn_samples)[0] if spec.bn == "reset" else None
    return data, calibration


@dataclass
class Measurement:
    """What one training run compares: the spec, the template network, its layer groups and
    paths, the data, and B's state when B is a file."""

    spec: MeasureSpec
    template: nn.Module
    groups: list[layers.Group]
    paths: list[InterpolationPath]
    data: dict[str, tuple[Tensor, Tensor]]
    calibration: Tensor | None
    reference_state: State | None
    init: tuple[State | None, State | None] = (None, None)
    memory: dict[str, Any] = field(default_factory=dict)  # the last evaluation's memory plan

    @classmethod
    def build(
        cls,
        spec: MeasureSpec,
        net: nn.Module,
        pl_module: pl.LightningModule,
        data: tuple[dict[str, tuple[Tensor, Tensor]], Tensor | None],
        reference_state: State | None,
    ) -> Measurement:
        """Trace the network's layers on two samples and plan the spec's paths over them; with
        ``weights`` measures, keep the weights as fit begins (what distances start from)."""
        template = copy.deepcopy(net).eval()
        example = next(iter(data[0].values()))[0][:2].to(next(net.parameters()).device)
        groups, paths = plan_paths(spec, template, example)
        if spec.align != "none":
            paths = paths + [replace(p, plan=ALIGNED + p.plan) for p in paths]
        found = cls(spec, template, groups, paths, *data, reference_state)
        if "weights" in spec.measures:
            nets = (
                [net, None] if reference_state is not None else [pl_module.net_a, pl_module.net_b]
            )
            found.init = tuple(  # type: ignore[assignment]
                {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} if m else None
                for m in nets
            )
        return found

    def describe(self) -> dict[str, Any]:
        """The layers, alphas and samples per split, for ``summary.json`` and the run info."""
        return {
            "layers": [{"name": g.name, "keys": list(g.keys)} for g in self.groups],
            "alphas": self.spec.grid,
            "samples": {s: len(y) for s, (_, y) in self.data.items()},
        }

    def states(self, pl_module: pl.LightningModule) -> tuple[State, State]:
        """A's and B's current weights."""
        if self.reference_state is not None:
            return pl_module.net.state_dict(), self.reference_state
        return pl_module.net_a.state_dict(), pl_module.net_b.state_dict()

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, label: str
    ) -> tuple[Rows, Rows, Rows]:
        """Curves, barriers (every rank's, in path order) and extra measures (rank 0) now."""
        state_a, state_b = self.states(pl_module)
        shard = self.paths[trainer.global_rank :: trainer.world_size]
        # Lightning's bar stands still meanwhile: say what runs (rank 0, where bars are shown).
        show = trainer.is_global_zero and trainer.progress_bar_callback is not None
        with progress_line(label, len(shard), show) as progress:
            base = [replace(p, plan=p.plan.removeprefix(ALIGNED)) for p in shard]
            device = pl_module.device
            prepared = prepare(
                self.spec, self.template, state_a, state_b, list(dict.fromkeys(base)),
                self.data, self.calibration, device,
            )  # fmt: skip
            result = prepared.run(set(shard), progress=progress)
            self.memory = prepared.sizes.as_dict()
        curves, barriers = self._gather(trainer, (result.curves, result.barriers))
        extras: Rows = []
        if self.spec.measures and trainer.is_global_zero:
            init = tuple(
                None if s is None else {k: v.to(device) for k, v in s.items()} for s in self.init
            )
            extras = measure_extras(
                self.spec, self.template, self.groups, state_a, state_b, self.data, init
            )
        return curves, barriers, extras

    def _gather(self, trainer: pl.Trainer, rows: tuple[Rows, Rows]) -> tuple[Rows, Rows]:
        """Every rank's rows on every rank, in path order (as one process would give them)."""
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            everyone: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(everyone, rows)
            rows = ([r for c, _ in everyone for r in c], [r for _, b in everyone for r in b])
        order = {(p.plan, p.group, p.rest_from): i for i, p in enumerate(self.paths)}
        split_order = {s: i for i, s in enumerate(self.spec.splits)}

        def key(row: Mapping[str, Any]) -> tuple[int, int]:
            return order[path_key(row)], split_order[str(row["split"])]

        return sorted(rows[0], key=key), sorted(rows[1], key=key)
