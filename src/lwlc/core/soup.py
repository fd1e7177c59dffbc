"""Averages of k networks ("model soups") and the merged state dicts ``lwlc merge`` writes.

A soup of k state dicts is ``sum_i w_i * s_i`` on every floating-point tensor (integer buffers
come from the first member; a merge takes them from its rest model anyway). A merged model is
given, as in the engine, by one coefficient per key between a start and an end state dict:
``(1 - c) * start + c * end`` (:func:`lwlc.core.interpolation.mix`, exact at 0 and 1), so the
state written equals the model the selection measured, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import mix
from lwlc.core.layers import Group

WEIGHT_TOLERANCE = 1e-6


def check_weights(weights: Sequence[float] | None, k: int) -> list[float]:
    """The soup's weights: uniform when None; else k finite values >= 0 summing to 1."""
    if k < 2:
        raise LwlcError(f"averaging needs at least 2 networks, got {k}: give 2 or more files")
    if weights is None:
        return [1.0 / k] * k
    values = [float(w) for w in weights]
    if len(values) != k:
        raise LwlcError(
            f"--weights has {len(values)} values for {k} networks: give one per network"
        )
    if not all(math.isfinite(w) and w >= 0 for w in values):
        raise LwlcError(f"--weights must be numbers >= 0, got {values}")
    if abs(sum(values) - 1.0) > WEIGHT_TOLERANCE:
        raise LwlcError(f"--weights must sum to 1, got {values} (sum {sum(values):.6g})")
    return values


def soup_state(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """``sum_i weights[i] * states[i]`` per floating-point tensor; integer ones from the first."""
    out: dict[str, Tensor] = {}
    for k, first in states[0].items():
        if not torch.is_floating_point(first):
            out[k] = first.clone()
            continue
        total = weights[0] * first
        for w, s in zip(weights[1:], states[1:], strict=True):
            total = total + w * s[k]
        out[k] = total
    return out


def mixed_state(
    start: Mapping[str, Tensor], end: Mapping[str, Tensor], coefficients: Sequence[float]
) -> dict[str, Tensor]:
    """``(1 - c) * start + c * end`` per key (``coefficients`` in ``start``'s key order), copied."""
    return {
        k: mix(start[k], end[k], c).clone() for k, c in zip(start.keys(), coefficients, strict=True)
    }


def group_coefficients(
    keys: Sequence[str],
    float_keys: frozenset[str],
    groups: Sequence[Group],
    alphas: Mapping[int, float],
    rest: float,
) -> tuple[float, ...]:
    """The coefficient of every key: ``alphas[i]`` on the floating-point keys of group ``i``
    (for each ``i`` in ``alphas``), ``rest`` (0: the start model, 1: the end model) elsewhere."""
    per_key = {k: a for i, a in alphas.items() for k in groups[i].keys if k in float_keys}
    return tuple(per_key.get(k, rest) for k in keys)


Alpha = float | Sequence[float] | Mapping[str, float]


def group_alphas(alpha: Alpha, groups: Sequence[Group], chosen: Sequence[int]) -> dict[int, float]:
    """Each chosen group's alpha (index into ``groups``) from one number, a list over the chosen
    groups in forward order, or ``{group name: alpha}`` naming every chosen group."""
    if isinstance(alpha, Mapping):
        names = {groups[i].name: i for i in chosen}
        unknown = [n for n in alpha if n not in names]
        if unknown:
            raise LwlcError(
                f"--alpha names {unknown[0]!r}, which is not a chosen group; chosen: "
                f"{', '.join(names) or 'none'}"
            )
        missing = [n for n in names if n not in alpha]
        if missing:
            raise LwlcError(f"--alpha gives no value for the chosen group {missing[0]!r}")
        values = {names[n]: float(a) for n, a in alpha.items()}
    elif isinstance(alpha, (int, float)):
        values = dict.fromkeys(chosen, float(alpha))
    else:
        if len(alpha) != len(chosen):
            raise LwlcError(
                f"--alpha has {len(alpha)} values for {len(chosen)} chosen groups: give one per "
                "group in forward order, or 'group: alpha' pairs"
            )
        values = {i: float(a) for i, a in zip(sorted(chosen), alpha, strict=True)}
    bad = [a for a in values.values() if not (math.isfinite(a) and 0.0 <= a <= 1.0)]
    if bad:
        raise LwlcError(f"--alpha must lie in [0, 1], got {bad[0]}")
    return values


def merge_states(
    states: Sequence[Mapping[str, Tensor]],
    groups: Sequence[Group],
    chosen: Sequence[int],
    alpha: Alpha = 0.5,
    weights: Sequence[float] | None = None,
    rest: int = 0,
) -> tuple[dict[str, Tensor], dict[int, float]]:
    """The merged state dict and each chosen group's coefficient. Two networks without
    ``weights``: ``(1 - alpha) * A + alpha * B`` on the chosen groups (``alpha`` per group, see
    :func:`group_alphas`); otherwise the weighted soup of all ``states`` there. The rest comes
    from ``states[rest]``."""
    if not 0 <= rest < len(states):
        raise LwlcError(f"the rest must come from one of the {len(states)} networks, got {rest}")
    keys = list(states[0])
    float_keys = frozenset(k for k in keys if states[0][k].is_floating_point())
    if weights is None and len(states) == 2:
        alphas = group_alphas(alpha, groups, chosen)
        start, end, rest_c = states[0], states[1], float(rest)
    else:
        if not isinstance(alpha, (int, float)) or alpha != 0.5:
            raise LwlcError("alpha is for two networks: k networks take weights")
        alphas, rest_c = dict.fromkeys(chosen, 1.0), 0.0
        start, end = states[rest], soup_state(states, check_weights(weights, len(states)))
    coeffs = group_coefficients(keys, float_keys, groups, alphas, rest_c)
    return mixed_state(start, end, coeffs), alphas
