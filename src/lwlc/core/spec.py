"""What a connectivity measurement is: one typed, validated declaration and the sweep it makes.

:class:`MeasureSpec` names everything that decides the numbers of a measurement between two
networks (which paths, which layers, which alphas, splits and references, BatchNorm handling)
and how it is computed (batch size, memory budget, precision). Every field is checked when the
spec is made, with one-line messages; :func:`plan_paths` turns a spec and a model into the
layer groups and paths, and :func:`prepare` into a :class:`PreparedSweep` (evaluators and a
memory plan) whose ``run`` sweeps them: analyze, the Callback and ``lwlc.measure`` all go
through these two functions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from lwlc.core import layers, measures, memory
from lwlc.core.alignment import align
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import InterpolationPath, check_alphas, default_alphas, make_paths
from lwlc.core.sweep import Data, Rows, SweepResult, sweep

Plan = Literal["full", "single", "cumulative_front", "cumulative_back", "custom"]
Split = Literal["train", "val", "test"]
Rest = Literal["a", "b"]
BatchNormMode = Literal["keep", "reset"]
Precision = Literal["fp32", "tf32", "bf16"]
Alignment = Literal["none", "weight-matching"]
Measure = Literal["weights", "agreement", "robustness"]


def _choices(name: str, values: Sequence[str], allowed: type) -> tuple[str, ...]:
    """``values`` as a tuple, each one of ``allowed``'s Literal choices, at least one."""
    values = (values,) if isinstance(values, str) else tuple(values)
    options = get_args(allowed)
    bad = [v for v in values if v not in options]
    if bad or not values:
        given = repr(bad[0]) if bad else "nothing"
        raise LwlcError(f"{name}: {given} is not one of {', '.join(options)}")
    return tuple(dict.fromkeys(values))


def _at_least_one(name: str, value: int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LwlcError(f"{name} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class MeasureSpec:
    """A layer-wise connectivity measurement between two networks A and B.

    Args:
        plans: Which paths: ``full`` (all layers), ``single`` (one layer at a time),
            ``cumulative_front``/``cumulative_back`` (the first/last k layers), ``custom``.
        custom: Named sets of layers for the ``custom`` plan, e.g. ``{"body": ["features.*"]}``
            (names or globs, ``re:<regex>``); giving any adds the plan.
        group: Merge the layers matching each pattern into one group (e.g. ``["layer1.*"]``).
        group_depth: Merge layers by module depth (1: top-level blocks).
        rest_from: Where the layers off the path come from: ``a``, ``b`` or both.
        splits: Data splits to evaluate: ``train``, ``val``, ``test``.
        alphas: The interpolation grid in [0, 1], with 0 and 1 (None: ``num_alphas``).
        num_alphas: Evenly spaced alphas when ``alphas`` is not given.
        bn: BatchNorm statistics: ``keep`` (interpolated) or ``reset`` (recomputed).
        bn_samples: Training samples that recompute BatchNorm statistics.
        bn_batch_size: Batch size of that recomputation (it defines the statistics).
        max_samples: Evaluate at most this many samples per split (None: all).
        batch_size: Evaluation batch size (lowered to fit ``memory_budget``).
        chunk_size: Paths evaluated (and written) together.
        memory_budget: GiB the evaluation may use (None: 80% of free memory).
        precision: ``fp32`` (exact), ``tf32`` or ``bf16`` (faster on a GPU).
        align: Permute B's units to match A's first: ``none`` or ``weight-matching``.
        measures: Also report, as the paper: ``weights`` (per-layer L2 distance, cosine),
            ``agreement`` (of predictions), ``robustness`` (loss along random directions).
        robustness_seeds: Random directions averaged per layer for ``robustness``.
    """

    plans: Sequence[Plan] = ("full", "single")
    custom: Mapping[str, Sequence[str]] = field(default_factory=dict)
    group: Sequence[str] = ()
    group_depth: int | None = None
    rest_from: Sequence[Rest] = ("a", "b")
    splits: Sequence[Split] = ("test",)
    alphas: Sequence[float] | None = None
    num_alphas: int = 11
    bn: BatchNormMode = "keep"
    bn_samples: int = 2048
    bn_batch_size: int = 256
    max_samples: int | None = None
    batch_size: int = 512
    chunk_size: int = 16
    memory_budget: float | None = None
    precision: Precision = "fp32"
    align: Alignment = "none"
    measures: Sequence[Measure] = ()
    robustness_seeds: int = 3

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        plans = _choices("plans", self.plans, Plan)
        custom = {str(k): tuple(v) for k, v in dict(self.custom).items()}
        if custom and "custom" not in plans:
            plans = (*plans, "custom")
        if "custom" in plans and not custom:
            raise LwlcError("plans: 'custom' needs custom groups, e.g. custom={'body': ['fc*']}")
        empty = [k for k, v in custom.items() if not k or not v]
        if empty:
            raise LwlcError(f"custom: group {empty[0]!r} needs a name and at least one pattern")
        set_(self, "plans", plans)
        set_(self, "custom", custom)
        set_(self, "group", tuple(self.group))
        set_(self, "rest_from", _choices("rest_from", self.rest_from, Rest))
        set_(self, "splits", _choices("splits", self.splits, Split))
        set_(self, "bn", _choices("bn", self.bn, BatchNormMode)[0])
        set_(self, "precision", _choices("precision", self.precision, Precision)[0])
        set_(self, "align", _choices("align", self.align, Alignment)[0])
        if self.measures:
            set_(self, "measures", _choices("measures", self.measures, Measure))
        else:
            set_(self, "measures", ())
        _at_least_one("group_depth", self.group_depth, optional=True)
        _at_least_one("max_samples", self.max_samples, optional=True)
        for name in (
            "num_alphas", "bn_samples", "bn_batch_size", "batch_size", "chunk_size",
            "robustness_seeds",
        ):  # fmt: skip
            _at_least_one(name, getattr(self, name))
        if self.alphas is None and self.num_alphas < 2:
            raise LwlcError(f"num_alphas must be at least 2 to give a path, got {self.num_alphas}")
        if self.alphas is not None:
            set_(self, "alphas", tuple(check_alphas([float(a) for a in self.alphas])))
        budget = self.memory_budget
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise LwlcError(f"memory_budget is in GiB and must be a number > 0, got {budget}")

    def as_dict(self) -> dict[str, object]:
        """The spec as plain data (lists and dicts), for summary.json and the run info."""
        def plain(value: object) -> object:
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    @property
    def grid(self) -> list[float]:
        """The alphas evaluated on every path."""
        return list(self.alphas) if self.alphas is not None else default_alphas(self.num_alphas)


def from_flags(**fields: object) -> MeasureSpec:
    """A spec from a command's options; its one-line errors name the flag (``--batch-size must
    be a whole number >= 1, got 0``) where ``MeasureSpec`` names the field."""
    try:
        return MeasureSpec(**fields)  # type: ignore[arg-type]
    except LwlcError as err:
        head, _, rest = str(err).partition(" ")
        name = head.rstrip(":")
        if name not in fields:
            raise
        raise LwlcError(f"--{name.replace('_', '-')}{head[len(name):]} {rest}") from None


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


ALIGNED = "aligned:"  # plan prefix of the paths measured after alignment


def prepare_sweeps(
    spec: MeasureSpec,
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
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
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
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


def measure_extras(
    spec: MeasureSpec,
    model: nn.Module,
    groups: Sequence[layers.Group],
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    data: Data,
    init: tuple[Mapping[str, Tensor], Mapping[str, Tensor]] | None = None,
) -> Rows:
    """The rows of ``spec.measures`` (``MEASURE_COLUMNS``): weights once, agreement and
    robustness per split; evaluated where the states are, with A's BatchNorm statistics."""
    rows: Rows = []
    if "weights" in spec.measures:
        found = measures.weight_measures(groups, state_a, state_b, *(init or (None, None)))
        rows += [{**r, "split": "", "alpha": ""} for r in found]
    device = next(iter(state_a.values())).device
    net = copy.deepcopy(model).to(device)
    seeds = tuple(range(spec.robustness_seeds))
    for split, (inputs, targets) in data.items():
        inputs, targets = inputs.to(device), targets.to(device)
        if "agreement" in spec.measures:
            found = measures.agreement_rows(net, state_a, state_b, inputs, spec.batch_size)
            rows += [{**r, "split": split, "alpha": ""} for r in found]
        if "robustness" in spec.measures:
            found = measures.robustness_rows(
                net, groups, state_a, state_b, inputs, targets, seeds=seeds,
                batch_size=spec.batch_size,
            )  # fmt: skip
            rows += [{**r, "split": split} for r in found]
    return [{c: r[c] for c in measures.MEASURE_COLUMNS} for r in rows]
