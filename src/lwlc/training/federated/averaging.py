"""The server's averaging: which state-dict keys are averaged and their weighted mean.

Shared by the in-process simulation (:class:`~lwlc.training.federated.module.FederatedModule`)
and the Flower strategy (:mod:`lwlc.flower`), so both average the same tensors the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lwlc.core import layers
from lwlc.core.errors import LwlcError

WEIGHTINGS = ("samples", "batches")

# Named averaging schemes: the exact state-dict keys the server averages and the weighting.
AVERAGING_SCHEMES: dict[str, tuple[tuple[str, ...], str]] = {
    # The authors' personalised ResNet-18 (github.com/link-er/layer-wise-lmc,
    # LLMC/federated_train.py, ``layers_to_agg``): the first block's convolutions of each stage
    # and the head, weighted by each client's number of training batches (``len(trainloader)``).
    "authors_resnet18": (
        (
            "layer1.0.conv1.weight",
            "layer2.0.conv1.weight",
            "layer2.0.conv2.weight",
            "layer3.0.conv1.weight",
            "layer3.0.conv2.weight",
            "layer4.0.conv1.weight",
            "layer4.0.conv2.weight",
            "fc.weight",
            "fc.bias",
        ),
        "batches",
    ),
}


def weighted_average(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float], keys: Sequence[str]
) -> dict[str, Tensor]:
    """The ``weights``-weighted mean of ``keys`` over client state dicts (FedAvg's server step)."""
    if len(states) != len(weights) or not states:
        raise LwlcError(
            f"need one weight per client state, got {len(weights)} weights for {len(states)} states"
        )
    total = float(sum(weights))
    if total <= 0:
        raise LwlcError(f"client weights must sum to a positive number, got {list(weights)}")
    mean: dict[str, Tensor] = {}
    for k in keys:
        acc = torch.zeros_like(states[0][k], dtype=torch.float64)
        for state, w in zip(states, weights, strict=True):
            acc += (w / total) * state[k].double()
        mean[k] = acc.to(states[0][k].dtype)
    return mean


def averaged_keys(model: nn.Module, average: str | Sequence[str]) -> list[str]:
    """The state-dict keys to average: ``"all"``, ``"none"``, a named scheme of
    ``AVERAGING_SCHEMES`` (``"authors_resnet18"``) or layer patterns (as ``analyze``).

    Patterns (glob, or ``re:<regex>``) select default layer groups by name (``fc1``, ``layer1.*``);
    integer buffers are never averaged.
    """
    state = model.state_dict()
    float_keys = [k for k, v in state.items() if torch.is_floating_point(v)]
    if average == "all":
        return float_keys
    if average == "none":
        return []
    if isinstance(average, str) and average in AVERAGING_SCHEMES:
        keys = AVERAGING_SCHEMES[average][0]
        missing = [k for k in keys if k not in float_keys]
        if missing:
            raise LwlcError(
                f"averaging scheme {average!r} needs the tensors {', '.join(missing)}, which "
                f"{type(model).__name__} lacks: use lwlc.models.ResNet18 or layer patterns"
            )
        return [k for k in float_keys if k in keys]
    patterns = [average] if isinstance(average, str) else list(average)
    if not patterns:
        raise LwlcError("average needs 'all', 'none' or at least one layer pattern")
    chosen = {k for g in layers.select(layers.default_groups(model), patterns) for k in g.keys}
    return [k for k in float_keys if k in chosen]
