"""Interpolation paths between two state dicts (science.md sections 1 and 2): pure functions.

A *path* fixes which keys S are interpolated and where the rest comes from; at a given alpha it
defines one model by a coefficient per key: tensor = (1 - c) * a + c * b, with c = alpha on S
and c = 0 (rest from A) or 1 (rest from B) elsewhere. Integer buffers always come from the rest
model. Coefficients are the engine's currency: two models with equal coefficients are the same
model, which is how duplicates and shared prefixes are found.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lwlc.core.errors import LwlcError
from lwlc.core.layers import Group

PLANS = ("full", "single", "cumulative_front", "cumulative_back", "custom")
REST_FROM = ("a", "b")


@dataclass(frozen=True)
class InterpolationPath:
    """One interpolation path: plan, the group label it is reported under, rest model, keys S."""

    plan: str
    group: str
    rest_from: str
    keys: frozenset[str]


def default_alphas(points: int = 11) -> list[float]:
    """An evenly spaced grid on [0, 1] (11 points by default; the paper used 3)."""
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
    all_keys = frozenset(k for g in groups for k in g.keys)
    paths: list[InterpolationPath] = []
    for plan in plans:
        if plan == "full":
            paths.append(InterpolationPath("full", "all", "a", all_keys))
            continue
        if plan == "custom":
            for label, members in (custom or {}).items():
                keys = frozenset(k for g in members for k in g.keys)
                paths += [InterpolationPath("custom", label, r, keys) for r in rest_from]
            continue
        for i, g in enumerate(groups):
            if plan == "single":
                chosen = g.keys
            elif plan == "cumulative_front":
                chosen = tuple(k for h in groups[: i + 1] for k in h.keys)
            else:
                chosen = tuple(k for h in groups[i:] for k in h.keys)
            paths += [InterpolationPath(plan, g.name, r, frozenset(chosen)) for r in rest_from]
    return paths


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
