"""Interpolation paths between two state dicts (science.md sections 1 and 2): pure functions.

A *path* fixes which keys S are interpolated and where the rest comes from; at a given alpha it
defines one model by a coefficient per key: tensor = (1 - c) * a + c * b, with c = alpha on S
and c = 0 (rest from A) or 1 (rest from B) elsewhere. Integer buffers always come from the rest
model. Coefficients are the engine's currency: two models with equal coefficients are the same
model, which is how duplicates and shared prefixes are found.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lwlc.core.errors import LwlcError
from lwlc.core.layers import Group

REST_FROM = ("a", "b")  # the model the layers off the path come from (``MeasureSpec.rest_from``)


@dataclass(frozen=True)
class InterpolationPath:
    """One interpolation path: plan, the group label it is reported under, rest model, keys S."""

    plan: str
    group: str
    rest_from: str
    keys: frozenset[str]


def default_alphas(points: int) -> list[float]:
    """An evenly spaced grid of ``points`` alphas on [0, 1] (``MeasureSpec.num_alphas``)."""
    return [i / (points - 1) for i in range(points)]


def check_alphas(alphas: Sequence[float]) -> list[float]:
    """Sorted, unique alphas in [0, 1] with both endpoints; raise otherwise."""
    nonfinite = [a for a in alphas if not math.isfinite(float(a))]
    if nonfinite:
        raise LwlcError(
            f"alphas must be numbers in [0, 1], got {nonfinite[0]} (not a number): e.g. 0,0.5,1"
        )
    values = sorted({float(a) for a in alphas})
    if len(values) < 2:
        raise LwlcError(f"need at least 2 alphas, got {list(alphas)}")
    outside = [a for a in values if not 0.0 <= a <= 1.0]
    if outside:
        raise LwlcError(f"alphas must lie in [0, 1], got {outside}")
    if values[0] != 0.0 or values[-1] != 1.0:
        raise LwlcError(f"the alpha grid must include 0 and 1 (the path's endpoints), got {values}")
    return values


def full_paths(
    groups: Sequence[Group], rest_from: Sequence[str], custom: Mapping[str, Sequence[Group]]
) -> list[InterpolationPath]:
    """The ``full`` plan: one path interpolating every layer (group ``all``; no rest)."""
    return [InterpolationPath("full", "all", "a", frozenset(k for g in groups for k in g.keys))]


def _per_group(
    plan: str,
    groups: Sequence[Group],
    rest_from: Sequence[str],
    chosen: Callable[[int], Sequence[Group]],
) -> list[InterpolationPath]:
    """One path per group ``i`` (reported under its name) interpolating ``chosen(i)``."""
    return [
        InterpolationPath(plan, g.name, r, frozenset(k for h in chosen(i) for k in h.keys))
        for i, g in enumerate(groups)
        for r in rest_from
    ]


def single_paths(
    groups: Sequence[Group], rest_from: Sequence[str], custom: Mapping[str, Sequence[Group]]
) -> list[InterpolationPath]:
    """The ``single`` plan: each group alone."""
    return _per_group("single", groups, rest_from, lambda i: groups[i : i + 1])


def cumulative_front_paths(
    groups: Sequence[Group], rest_from: Sequence[str], custom: Mapping[str, Sequence[Group]]
) -> list[InterpolationPath]:
    """The ``cumulative_front`` plan: the first groups up to each one."""
    return _per_group("cumulative_front", groups, rest_from, lambda i: groups[: i + 1])


def cumulative_back_paths(
    groups: Sequence[Group], rest_from: Sequence[str], custom: Mapping[str, Sequence[Group]]
) -> list[InterpolationPath]:
    """The ``cumulative_back`` plan: the groups from each one to the last."""
    return _per_group("cumulative_back", groups, rest_from, lambda i: groups[i:])


def custom_paths(
    groups: Sequence[Group], rest_from: Sequence[str], custom: Mapping[str, Sequence[Group]]
) -> list[InterpolationPath]:
    """The ``custom`` plan: each named set of groups, reported under its name."""
    return [
        InterpolationPath("custom", label, r, frozenset(k for g in members for k in g.keys))
        for label, members in custom.items()
        for r in rest_from
    ]


PathPlan = Callable[
    [Sequence[Group], Sequence[str], Mapping[str, Sequence[Group]]], list[InterpolationPath]
]
# The plans (``MeasureSpec.plans``, its ``Plan`` Literal): each makes its paths from the groups in
# forward order, the rest models and the custom sets.
PLANS: dict[str, PathPlan] = {
    "full": full_paths,
    "single": single_paths,
    "cumulative_front": cumulative_front_paths,
    "cumulative_back": cumulative_back_paths,
    "custom": custom_paths,
}


def make_paths(
    groups: Sequence[Group],
    plans: Sequence[str],
    rest_from: Sequence[str] = REST_FROM,
    custom: Mapping[str, Sequence[Group]] | None = None,
) -> list[InterpolationPath]:
    """The paths of the requested plans, in a stable order (plan, group in forward order, rest)."""
    unknown = [p for p in plans if p not in PLANS]
    if unknown:
        raise LwlcError(f"unknown plan {unknown[0]!r}; choose from {', '.join(PLANS)}")
    bad_rest = [r for r in rest_from if r not in REST_FROM]
    if bad_rest:
        raise LwlcError(f"rest_from must be 'a' or 'b', got {bad_rest[0]!r}")
    if "custom" in plans and not custom:
        raise LwlcError(
            "plan 'custom' needs at least one set of groups (--custom 'name=pattern,...')"
        )
    return [p for plan in plans for p in PLANS[plan](groups, rest_from, custom or {})]


def coefficients(
    path: InterpolationPath, alpha: float, keys: Sequence[str], float_keys: frozenset[str]
) -> tuple[float, ...]:
    """The coefficient c of every key (in ``keys`` order) for the model at ``alpha`` on ``path``."""
    rest = 0.0 if path.rest_from == "a" else 1.0
    return tuple(alpha if (k in path.keys and k in float_keys) else rest for k in keys)


def mix(a: Tensor, b: Tensor, c: float) -> Tensor:
    """``(1 - c) * a + c * b``, returning the endpoint itself (bit-exact) at c = 0 or 1."""
    if c == 0.0:
        return a
    if c == 1.0:
        return b
    return (1.0 - c) * a + c * b


def interpolate(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], path: InterpolationPath, alpha: float
) -> dict[str, Tensor]:
    """The state dict of the model at ``alpha`` on ``path`` (merge and the Callback's exports)."""
    keys = list(a.keys())
    float_keys = frozenset(k for k in keys if torch.is_floating_point(a[k]))
    coeffs = coefficients(path, alpha, keys, float_keys)
    return {k: mix(a[k], b[k], c) for k, c in zip(keys, coeffs, strict=True)}


def merged_state(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    groups: Sequence[Group],
    alpha: float,
    rest_from: str = "a",
) -> dict[str, Tensor]:
    """The engine's model at ``alpha`` on the path interpolating ``groups`` (rest from A or B):
    what ``lwlc merge`` writes and ``lwlc.merge_models`` returns."""
    keys = frozenset(k for g in groups for k in g.keys)
    path = InterpolationPath("custom", ",".join(g.name for g in groups), rest_from, keys)
    return {k: v.clone() for k, v in interpolate(state_a, state_b, path, alpha).items()}
