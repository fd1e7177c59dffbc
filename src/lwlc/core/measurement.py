"""Running a :class:`~lwlc.core.spec.MeasureSpec` on two networks, as plain rows.

:func:`plan_paths` turns a spec and a model into the layer groups and the paths of its plans;
:func:`prepare` builds the evaluators (with B aligned by ``spec.align``, its paths' plans
prefixed ``aligned:``) and the memory plan (batch and chunk sizes within ``spec.memory_budget``)
into a :class:`PreparedSweep`, whose ``run`` sweeps them; :func:`measure_extras` gives the rows
of ``spec.measures``, each measure one entry of :data:`MEASURES`. Analyze, the Callback and
``lwlc.measure`` all go through these functions and get dicts back: writing, drawing and
publishing the rows is the front ends' job.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from lwlc.core import layers, measures, memory
from lwlc.core.alignment import align
from lwlc.core.engine import Evaluator
from lwlc.core.interpolation import InterpolationPath, make_paths
from lwlc.core.spec import MeasureSpec
from lwlc.core.sweep import Data, Rows, SweepResult, sweep

ALIGNED = "aligned:"  # plan prefix of the paths measured after alignment
State = Mapping[str, Tensor]


def plan_paths(
    spec: MeasureSpec, model: nn.Module, example: Tensor | None = None
) -> tuple[list[layers.Group], list[InterpolationPath]]:
    """The layer groups of ``model`` (in forward order, traced on ``example``) and the paths of
    ``spec``'s plans over them; unknown layers or patterns are one-line errors."""
    groups = layers.default_groups(model, example)
    if spec.group_depth is not None:
        groups = layers.group_by_depth(groups, spec.group_depth)
    if spec.group:
        groups = layers.regroup(groups, list(spec.group))
    custom = {name: layers.select(groups, list(p)) for name, p in spec.custom.items()}
    return groups, make_paths(groups, list(spec.plans), list(spec.rest_from), custom)


def prepare_sweeps(
    spec: MeasureSpec,
    model: nn.Module,
    state_a: State,
    state_b: State,
    paths: Sequence[InterpolationPath],
    device: str | torch.device = "cpu",
) -> list[tuple[Evaluator, list[InterpolationPath]]]:
    """The evaluators of a measurement and the paths each evaluates: the pair as it is and,
    with ``spec.align``, B permuted to match A (its paths' plans prefixed ``aligned:``)."""
    options = {
        "device": device,
        "bn": spec.bn,
        "precision": spec.precision,
        "bn_batch_size": spec.bn_batch_size,
    }
    sweeps = [(Evaluator(model, state_a, state_b, **options), list(paths))]
    if spec.align != "none":
        aligned = align(spec.align, model, state_a, state_b)
        sweeps.append(
            (
                Evaluator(model, state_a, aligned, **options),
                [replace(p, plan=ALIGNED + p.plan) for p in paths],
            )
        )
    return sweeps


@dataclass
class PreparedSweep:
    """A measurement ready to run: its evaluators with the paths each evaluates, the data, and
    the batch and chunk sizes that keep it within ``spec.memory_budget``."""

    spec: MeasureSpec
    sweeps: list[tuple[Evaluator, list[InterpolationPath]]]
    data: Data
    calibration: Tensor | None
    sizes: memory.MemoryPlan

    @property
    def paths(self) -> list[InterpolationPath]:
        """Every path measured, the aligned ones (if any) after the others."""
        return [p for _, own in self.sweeps for p in own]

    def run(
        self,
        todo: Collection[InterpolationPath] | None = None,
        on_rows: Callable[[Rows, Rows], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> SweepResult:
        """Sweep the paths (only those in ``todo``, if given); the endpoints are the pair's."""
        result = SweepResult()
        for i, (evaluator, own) in enumerate(self.sweeps):
            found = sweep(
                evaluator,
                [p for p in own if todo is None or p in todo],
                self.spec.grid,
                self.data,
                calibration=self.calibration if evaluator.has_batchnorm() else None,
                batch_size=self.sizes.batch_size,
                chunk_size=self.sizes.chunk_size,
                on_rows=on_rows,
                progress=progress,
            )
            result.curves += found.curves
            result.barriers += found.barriers
            if i == 0:
                result.endpoints = found.endpoints
        return result


def prepare(
    spec: MeasureSpec,
    model: nn.Module,
    state_a: State,
    state_b: State,
    paths: Sequence[InterpolationPath],
    data: Data,
    calibration: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> PreparedSweep:
    """The one way every front end (analyze, the Callback, ``lwlc.measure``) sets a measurement
    up: evaluators (with alignment), and a memory plan for the batch and chunk sizes."""
    sweeps = prepare_sweeps(spec, model, state_a, state_b, paths, device)
    if spec.bn != "reset" or not sweeps[0][0].has_batchnorm():
        calibration = None
    every_path = [p for _, own in sweeps for p in own]
    sizes = memory.plan_sweep(
        sweeps[0][0], model, every_path, spec.grid, data, calibration,
        spec.memory_budget, spec.batch_size, spec.chunk_size,
    )  # fmt: skip
    return PreparedSweep(spec, sweeps, data, calibration, sizes)


@dataclass(frozen=True)
class Pair:
    """What the extra measures read: a private copy of the network on the states' device, its
    layer groups, the two states, the data (on that device) and the initialisations, if known."""

    net: nn.Module
    groups: Sequence[layers.Group]
    state_a: State
    state_b: State
    data: Data
    init: tuple[State | None, State | None]


def weights_measure(spec: MeasureSpec, pair: Pair) -> Rows:
    """L2 distance and cosine per group, A to B (and to the initialisations): no split, no alpha."""
    found = measures.weight_measures(pair.groups, pair.state_a, pair.state_b, *pair.init)
    return [{**r, "split": "", "alpha": ""} for r in found]


def agreement_measure(spec: MeasureSpec, pair: Pair) -> Rows:
    """The prediction agreement of A and B on each split: no alpha."""
    rows: Rows = []
    for split, (inputs, _) in pair.data.items():
        found = measures.agreement_rows(
            pair.net, pair.state_a, pair.state_b, inputs, spec.batch_size
        )
        rows += [{**r, "split": split, "alpha": ""} for r in found]
    return rows


def robustness_measure(spec: MeasureSpec, pair: Pair) -> Rows:
    """A's loss along ``spec.robustness_seeds`` random directions per group, on each split."""
    rows: Rows = []
    seeds = tuple(range(spec.robustness_seeds))
    for split, (inputs, targets) in pair.data.items():
        found = measures.robustness_rows(
            pair.net, pair.groups, pair.state_a, pair.state_b, inputs, targets, seeds=seeds,
            batch_size=spec.batch_size,
        )  # fmt: skip
        rows += [{**r, "split": split} for r in found]
    return rows


# The choices of ``MeasureSpec.measures`` (its ``Measure`` Literal), in the order of the rows.
MEASURES: dict[str, Callable[[MeasureSpec, Pair], Rows]] = {
    "weights": weights_measure,
    "agreement": agreement_measure,
    "robustness": robustness_measure,
}


def measure_extras(
    spec: MeasureSpec,
    model: nn.Module,
    groups: Sequence[layers.Group],
    state_a: State,
    state_b: State,
    data: Data,
    init: tuple[State | None, State | None] | None = None,
) -> Rows:
    """The rows of ``spec.measures`` (``MEASURE_COLUMNS``), measure by measure in the order of
    :data:`MEASURES`; evaluated where the states are, with A's BatchNorm statistics."""
    device = next(iter(state_a.values())).device
    pair = Pair(
        net=copy.deepcopy(model).to(device),
        groups=groups,
        state_a=state_a,
        state_b=state_b,
        data={s: (x.to(device), y.to(device)) for s, (x, y) in data.items()},
        init=init or (None, None),
    )
    rows = [r for name, run in MEASURES.items() if name in spec.measures for r in run(spec, pair)]
    return [{c: r[c] for c in measures.MEASURE_COLUMNS} for r in rows]
