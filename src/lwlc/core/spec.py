"""What a connectivity measurement is: one typed, validated, documented declaration.

:class:`MeasureSpec` names everything that decides the numbers of a measurement between two
networks (which paths, which layers, which alphas, splits and references, BatchNorm handling)
and how it is computed (batch size, memory budget, precision). Every field is checked once, when
the spec is made, with one-line messages. Its defaults are this module's constants, which the
lower layers (engine, sweep, measures) and the front ends take as theirs, so each default has one
source. The choices are the keys of registries (``interpolation.PLANS``,
``alignment.ALIGN_METHODS``, ``precision.PRECISIONS``, ``measurement.MEASURES``); the Literals
below name them for typing and jsonargparse, and a test keeps both equal. Running a spec is
``lwlc.core.measurement``'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import check_alphas, default_alphas

Plan = Literal["full", "single", "cumulative_front", "cumulative_back", "custom"]
Split = Literal["train", "val", "test"]
Rest = Literal["a", "b"]
BatchNormMode = Literal["keep", "reset"]
Precision = Literal["fp32", "tf32", "bf16"]
Alignment = Literal["none", "weight-matching"]
Measure = Literal["weights", "agreement", "robustness"]

# The defaults of the options that lower layers and front ends also take (one source each).
NUM_ALPHAS = 11
BN_SAMPLES = 2048
BN_BATCH_SIZE = 256
BATCH_SIZE = 512
CHUNK_SIZE = 16
ROBUSTNESS_SEEDS = 3


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
    num_alphas: int = NUM_ALPHAS
    bn: BatchNormMode = "keep"
    bn_samples: int = BN_SAMPLES
    bn_batch_size: int = BN_BATCH_SIZE
    max_samples: int | None = None
    batch_size: int = BATCH_SIZE
    chunk_size: int = CHUNK_SIZE
    memory_budget: float | None = None
    precision: Precision = "fp32"
    align: Alignment = "none"
    measures: Sequence[Measure] = ()
    robustness_seeds: int = ROBUSTNESS_SEEDS

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
