"""Averages of k networks ("model soups") and the merged state dicts ``lwlc merge`` writes.

A soup of k state dicts is ``sum_i w_i * s_i`` on every floating-point tensor (integer buffers
come from the first member; a merge takes them from its rest model anyway). A merged model is
given, as in the engine, by one coefficient per key between a start and an end state dict:
``(1 - c) * start + c * end`` (:func:`lwlc.core.interpolation.mix`, exact at 0 and 1), so the
state written equals the model the selection measured, bit for bit.

:func:`measure_soup` measures soups the way ``lwlc analyze`` measures pairs: for every path of a
spec's plans (the group it names), the soup on that group with the rest from one member, against
the weighted mean of the members' own values (the k-model barrier; for two networks with equal
weights it is the ``midpoint`` barrier). Each soup is the engine's model between the rest member
and the soup at coefficient 1 on the group's keys, so it is evaluated by the engine, batched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from lwlc.core import memory
from lwlc.core.alignment import align
from lwlc.core.barriers import METRICS
from lwlc.core.engine import Evaluator, Metrics
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import InterpolationPath, coefficients, mix
from lwlc.core.layers import Group
from lwlc.core.measurement import ALIGNED
from lwlc.core.spec import MeasureSpec
from lwlc.core.sweep import Data, MetricsCache, Rows

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


# The columns of a soup's barrier rows (``soup_barriers.csv``, ``lwlc.measure_soup``): the soup's
# value, the weighted mean of the members' values and their difference, per metric (loss in
# nats, error as a fraction), named as the pair's ``loss_barrier``/``error_barrier``.
SOUP_COLUMNS = (
    "plan", "group", "rest_from", "split", "k", "weights",
    *(f"soup_{m}" for m in METRICS), *(f"members_{m}" for m in METRICS),
    *(f"{m}_barrier" for m in METRICS),
)  # fmt: skip


@dataclass
class SoupResult:
    """The barrier rows of a soup measurement (:data:`SOUP_COLUMNS`) and each member's loss and
    accuracy per split (``{split: {loss_a, acc_a, loss_b, ...}}``, as a pair's endpoints)."""

    rows: Rows = field(default_factory=list)
    endpoints: dict[str, dict[str, float]] = field(default_factory=dict)


def member_name(i: int) -> str:
    """Members are named a, b, c, ... in the order given."""
    return chr(ord("a") + i)


def soup_row(
    path: InterpolationPath, rest: int, split: str, weights: Sequence[float], soup: Metrics,
    members: Sequence[Metrics],
) -> dict[str, object]:  # fmt: skip
    """One row: the soup's value on every metric, the members' weighted mean, the barrier."""
    row: dict[str, object] = {
        "plan": path.plan, "group": path.group, "rest_from": member_name(rest), "split": split,
        "k": len(weights), "weights": " ".join(repr(float(w)) for w in weights),
    }  # fmt: skip
    for name, value in METRICS.items():
        own = value(soup.loss, soup.accuracy)
        mean = sum(w * value(m.loss, m.accuracy) for w, m in zip(weights, members, strict=True))
        row[f"soup_{name}"], row[f"members_{name}"], row[f"{name}_barrier"] = own, mean, own - mean
    return row


def _soup_pass(
    spec: MeasureSpec, model: nn.Module, states: Sequence[Mapping[str, Tensor]],
    paths: Sequence[InterpolationPath], data: Data, weights: Sequence[float], rests: Sequence[int],
    calibration: Tensor | None, device: str | torch.device,
) -> tuple[Rows, dict[str, list[Metrics]]]:  # fmt: skip
    """The rows of one set of members and each member's metrics per split. Member ``i`` is
    evaluated by an engine between it and the soup: at coefficient 0 it is itself, at 1 on a
    group's keys (0 elsewhere) the soup on that group with the rest from it."""
    soup = soup_state(states, weights)
    options = {"bn": spec.bn, "precision": spec.precision, "bn_batch_size": spec.bn_batch_size}
    evaluators = [
        Evaluator(model, s, soup if i in rests else s, device, **options)
        for i, s in enumerate(states)
    ]
    if spec.bn != "reset" or not evaluators[0].has_batchnorm():
        calibration = None
    sizes = memory.plan_sweep(
        evaluators[0], model, paths, [1.0], data, calibration, spec.memory_budget,
        spec.batch_size, spec.chunk_size,
    )  # fmt: skip
    caches = [MetricsCache(ev, data, sizes.batch_size, calibration) for ev in evaluators]
    zero = (0.0,) * len(evaluators[0].keys)
    members = {split: [cache(split, [zero])[0] for cache in caches] for split in data}
    keys, float_keys = evaluators[0].keys, evaluators[0].float_keys
    rows: Rows = []
    for start in range(0, len(paths), sizes.chunk_size):
        chunk = paths[start : start + sizes.chunk_size]
        models = [coefficients(p, 1.0, keys, float_keys) for p in chunk]
        found = {(r, split): caches[r](split, models) for r in rests for split in data}
        rows += [
            soup_row(p, r, split, weights, found[(r, split)][i], members[split])
            for i, p in enumerate(chunk)
            for r in (rests[:1] if p.plan.removeprefix(ALIGNED) == "full" else rests)
            for split in data
        ]
    return rows, members


def measure_soup(
    spec: MeasureSpec,
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    paths: Sequence[InterpolationPath],
    data: Data,
    weights: Sequence[float] | None = None,
    rests: Sequence[int] = (0,),
    calibration: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> SoupResult:
    """The k-model barrier of every path's group: the soup of ``states`` (``weights``, uniform
    by default) on the group, the rest from each member in ``rests``, minus the weighted mean of
    the members' own values, on every split of ``data``. Only the paths' plans, groups and keys
    count (their ``rest_from`` does not); the ``full`` plan has no rest and is measured once,
    from the first member in ``rests``, as a pair's. With ``spec.align`` every member is first
    aligned to the first and the soup measured again, its plans prefixed ``aligned:``."""
    w = check_weights(weights, len(states))
    bad = [r for r in rests if not 0 <= r < len(states)]
    if bad:
        names = ", ".join(member_name(i) for i in range(len(states)))
        raise LwlcError(f"--rest-from: member {member_name(bad[0])!r} is not one of {names}")
    own = list(dict.fromkeys(replace(p, rest_from="a") for p in paths))
    rows, members = _soup_pass(spec, model, states, own, data, w, rests, calibration, device)
    if spec.align != "none":
        aligned = [states[0], *(align(spec.align, model, states[0], s) for s in states[1:])]
        prefixed = [replace(p, plan=ALIGNED + p.plan) for p in own]
        rows += _soup_pass(spec, model, aligned, prefixed, data, w, rests, calibration, device)[0]
    endpoints = {
        split: {
            f"{metric}_{member_name(i)}": value
            for i, m in enumerate(found)
            for metric, value in (("loss", m.loss), ("acc", m.accuracy))
        }
        for split, found in members.items()
    }
    return SoupResult(rows, endpoints)
