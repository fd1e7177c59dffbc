"""``lwlc analyze --list-layers``: the layers (groups) a measurement interpolates, each with its
module, and the stages the engine evaluates the model in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lwlc.core import layers
from lwlc.core.engine import model_stages
from lwlc.core.stages import find_stages


def print_layers(
    groups: Sequence[layers.Group], state: dict[str, torch.Tensor], model: torch.nn.Module
) -> None:
    width = max(len(g.name) for g in groups)
    print(f"{'#':>3}  {'group':<{width}}  {'tensors':>7}  {'numel':>10}  module")
    modules = dict(model.named_modules())
    for i, g in enumerate(groups):
        numel = sum(state[k].numel() for k in g.keys)
        kind = describe_module(modules[g.name]) if g.name in modules else "-"
        print(f"{i:>3}  {g.name:<{width}}  {len(g.keys):>7}  {numel:>10}  {kind}")
    found = stages_record(model, list(state))
    print(f"\nstages: {found['count']} ({found['how']})")


def describe_module(m: torch.nn.Module) -> str:
    """A layer's type and shape: ``Conv2d 3->64 3x3``, ``Linear 64->128``, ``BatchNorm2d 64``."""
    name = type(m).__name__
    if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return f"{name} {m.in_channels}->{m.out_channels} {'x'.join(map(str, m.kernel_size))}"
    if isinstance(m, torch.nn.Linear):
        return f"{name} {m.in_features}->{m.out_features}"
    if isinstance(m, torch.nn.Embedding):
        return f"{name} {m.num_embeddings}x{m.embedding_dim}"
    if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
        return f"{name} {m.num_features}"
    if isinstance(m, torch.nn.LayerNorm):
        return f"{name} {'x'.join(map(str, m.normalized_shape))}"
    return name


def stages_record(model: torch.nn.Module, keys: list[str]) -> dict[str, Any]:
    """How many stages the engine evaluates ``model`` in and how they were found."""
    found, used = find_stages(model), model_stages(model, keys)
    how = (
        found.how
        if len(used) == len(found.pairs)
        else "one stage: the stages found do not cover the state dict"
    )
    return {"count": len(used), "how": how}
