"""Split a model's state dict into named groups of keys, in forward order (science.md section 3).

A group is a set of state-dict keys found by name: by default one group per module that
directly owns parameters or buffers (weight, bias and running statistics together), named by
module path. Users regroup by glob or regex patterns, or by module-path depth.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lwlc.core.errors import LwlcError


@dataclass(frozen=True)
class Group:
    """A named set of state-dict keys interpolated together."""

    name: str
    keys: tuple[str, ...]


def _owned_keys(model: nn.Module) -> dict[str, list[str]]:
    """Module path -> the state-dict keys it owns directly (registration order)."""
    state_keys = set(model.state_dict().keys())
    owned: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        local = [n for n, _ in module.named_parameters(recurse=False)]
        local += [n for n, _ in module.named_buffers(recurse=False)]
        keys = [prefix + n for n in local if prefix + n in state_keys]
        if keys:
            owned[path] = keys
    return owned


def forward_order(model: nn.Module, example_input: Tensor | None) -> list[str]:
    """Module paths in order of first call in a forward pass (registration order without input)."""
    paths = [p for p, _ in model.named_modules()]
    if example_input is None:
        return paths
    seen: list[str] = []
    handles = []
    for path, module in model.named_modules():

        def hook(_m: nn.Module, _inp: object, path: str = path) -> None:
            if path not in seen:
                seen.append(path)

        handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen + [p for p in paths if p not in seen]


def default_groups(model: nn.Module, example_input: Tensor | None = None) -> list[Group]:
    """One group per module owning state, named by module path, in forward order."""
    owned = _owned_keys(model)
    order = forward_order(model, example_input)
    return [Group(path or "(root)", tuple(owned[path])) for path in order if path in owned]


def _matcher(pattern: str) -> re.Pattern[str]:
    """A glob pattern, or a regular expression when written ``re:<regex>``."""
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as err:
            raise LwlcError(f"invalid group regex {pattern!r}: {err}") from None
    return re.compile(fnmatch.translate(pattern))


def regroup(groups: Sequence[Group], patterns: Sequence[str]) -> list[Group]:
    """Merge the groups matching each pattern into one group named by the pattern.

    Groups no pattern matches stay as they are; the merged group sits where its first member
    was. A pattern matching nothing, or a group claimed by two patterns, is an error.
    """
    owner: dict[str, str] = {}
    for pattern in patterns:
        rx = _matcher(pattern)
        hits = [g.name for g in groups if rx.fullmatch(g.name)]
        if not hits:
            raise LwlcError(
                f"group pattern {pattern!r} matches no layer; available: {available(groups)}"
            )
        for name in hits:
            if name in owner:
                raise LwlcError(f"layer {name!r} matches both {owner[name]!r} and {pattern!r}")
            owner[name] = pattern
    merged: dict[str, list[str]] = {}
    for g in groups:
        merged.setdefault(owner.get(g.name, g.name), []).extend(g.keys)
    return [Group(name, tuple(keys)) for name, keys in merged.items()]


def group_by_depth(groups: Sequence[Group], depth: int) -> list[Group]:
    """Merge groups by the first ``depth`` components of their module path (1: top-level blocks)."""
    if depth < 1:
        raise LwlcError(f"group depth must be >= 1, got {depth}")
    merged: dict[str, list[str]] = {}
    for g in groups:
        merged.setdefault(".".join(g.name.split(".")[:depth]), []).extend(g.keys)
    return [Group(name, tuple(keys)) for name, keys in merged.items()]


def select(groups: Sequence[Group], names: Sequence[str]) -> list[Group]:
    """The groups with these names (or matching these patterns), in forward order."""
    chosen: list[Group] = []
    for name in names:
        rx = _matcher(name)
        hits = [g for g in groups if g.name == name or rx.fullmatch(g.name)]
        if not hits:
            raise LwlcError(f"unknown layer or group {name!r}; available: {available(groups)}")
        chosen.extend(h for h in hits if h not in chosen)
    return [g for g in groups if g in chosen]


def available(groups: Sequence[Group], limit: int = 40) -> str:
    """Comma-separated group names for error messages, shortened past ``limit``."""
    names = [g.name for g in groups]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_compatible(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> None:
    """Raise naming the first key, shape or dtype where two state dicts differ."""
    missing_b = [k for k in a if k not in b]
    missing_a = [k for k in b if k not in a]
    if missing_a or missing_b:
        which = (
            f"{missing_b[0]!r} is in A but not in B"
            if missing_b
            else f"{missing_a[0]!r} is in B but not in A"
        )
        raise LwlcError(
            f"the two models have different layers ({which}): "
            "compare checkpoints of the same architecture"
        )
    for k in a:
        if a[k].shape != b[k].shape:
            raise LwlcError(
                f"shape mismatch at {k!r}: A {tuple(a[k].shape)} vs B {tuple(b[k].shape)}; "
                "compare checkpoints of the same architecture"
            )
        if a[k].dtype != b[k].dtype:
            raise LwlcError(
                f"dtype mismatch at {k!r}: A {a[k].dtype} vs B {b[k].dtype}; convert one "
                "checkpoint so both hold the same dtypes (e.g. save model.float().state_dict())"
            )


def check_finite(state: Mapping[str, Tensor], label: str) -> None:
    """Raise naming every tensor holding NaN or Inf (broken checkpoints: meaningless barriers)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise LwlcError(
            f"model {label} has NaN/Inf weights in: {', '.join(bad)}; "
            "use a checkpoint from before training diverged"
        )
