"""The measures the paper reports besides barriers, as tidy rows (one dict per observation).

Following the authors' code (link-er/layer-wise-lmc, ``layerwise_nonconvex_compute.py`` and
``layerwise_robustness_eval.py``):

* weights: L2 distance and cosine similarity of the flattened weights of each group (and of the
  whole model), between A and B and from each member to its initialisation;
* function: prediction agreement of A and B (fraction of inputs with the same argmax);
* robustness: loss of A with one group (or the whole model) moved along a random Gaussian
  direction scaled to that group's A-B distance, at alpha 0.5 and 1, averaged over seeds.

Only floating tensors count (integer buffers such as ``num_batches_tracked`` are skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lwlc.core.errors import LwlcError
from lwlc.core.layers import Group
from lwlc.core.spec import BATCH_SIZE, ROBUSTNESS_SEEDS

# The columns of measures.csv: split and alpha are empty where a measure has none (weights have
# neither; agreement has no alpha).
MEASURE_COLUMNS = ("measure", "group", "between", "split", "alpha", "value")
WHOLE_MODEL = "all"  # the group name of whole-model rows, as in the sweep's "full" plan

Rows = list[dict[str, object]]
State = Mapping[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


def _floating(keys: Sequence[str], state: State) -> list[str]:
    return [k for k in keys if torch.is_floating_point(state[k])]


def flat(state: State, keys: Sequence[str]) -> Tensor:
    """The floating tensors of ``keys`` flattened and concatenated, in float64."""
    parts = [state[k].detach().reshape(-1).double().cpu() for k in _floating(keys, state)]
    if not parts:
        raise LwlcError(f"no floating tensors among {list(keys)[:3]}...")
    return torch.cat(parts)


def _with_whole(groups: Sequence[Group], state: State) -> list[Group]:
    return [*groups, Group(WHOLE_MODEL, tuple(state.keys()))]


def weight_measures(
    groups: Sequence[Group],
    a: State,
    b: State,
    init_a: State | None = None,
    init_b: State | None = None,
) -> Rows:
    """L2 distance and cosine similarity per group and for the whole model (group ``all``).

    ``between`` is ``a-b``, ``a-init`` or ``b-init`` (the latter two when the initialisations are
    given; for a pair from one seed pass the same state twice). Cosine is of the weights
    themselves, not of their differences, as in the authors' code.
    """
    pairs = [("a-b", a, b)]
    if init_a is not None:
        pairs.append(("a-init", a, init_a))
    if init_b is not None:
        pairs.append(("b-init", b, init_b))
    rows: Rows = []
    for group in _with_whole(groups, a):
        for between, x, y in pairs:
            u, v = flat(x, group.keys), flat(y, group.keys)
            cosine = float(u @ v / (torch.linalg.norm(u) * torch.linalg.norm(v)))
            rows.append(
                {
                    "group": group.name,
                    "measure": "l2_distance",
                    "between": between,
                    "value": float(torch.linalg.norm(u - v)),
                }
            )
            rows.append(
                {
                    "group": group.name,
                    "measure": "cosine_similarity",
                    "between": between,
                    "value": cosine,
                }
            )
    return rows


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]


@torch.no_grad()
def _outputs(model: nn.Module, state: State, inputs: Tensor, batch_size: int) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        return torch.cat(
            [
                functional_call(model, dict(state), (inputs[s],))
                for s in _batches(len(inputs), batch_size)
            ]
        )
    finally:
        model.train(was_training)


def agreement(logits_a: Tensor, logits_b: Tensor) -> float:
    """Fraction of samples where the two models' argmax predictions are the same."""
    return float((logits_a.argmax(-1) == logits_b.argmax(-1)).double().mean())


def agreement_rows(
    model: nn.Module, a: State, b: State, inputs: Tensor, batch_size: int = BATCH_SIZE
) -> Rows:
    """One row: prediction agreement of A and B on ``inputs`` (group ``all``)."""
    value = agreement(
        _outputs(model, a, inputs, batch_size), _outputs(model, b, inputs, batch_size)
    )
    return [{"group": WHOLE_MODEL, "measure": "agreement", "between": "a-b", "value": value}]


def random_direction(
    state: State, keys: Sequence[str], scale: float, seed: int
) -> dict[str, Tensor]:
    """A Gaussian direction over the floating ``keys``, of total L2 norm ``scale`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    keys = _floating(keys, state)
    raw = {k: torch.randn(state[k].shape, generator=gen, dtype=torch.float64) for k in keys}
    norm = torch.linalg.norm(torch.cat([r.reshape(-1) for r in raw.values()]))
    return {k: (r * (scale / norm)).to(state[k].dtype).to(state[k].device) for k, r in raw.items()}


def mean_loss(
    model: nn.Module,
    state: State,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn = nn.functional.cross_entropy,
    batch_size: int = BATCH_SIZE,
) -> float:
    """Mean per-sample loss of ``model`` with ``state`` (``loss_fn`` averages over a batch)."""
    out = _outputs(model, state, inputs, batch_size)
    total = sum(
        float(loss_fn(out[s], targets[s])) * (s.stop - s.start)
        for s in _batches(len(inputs), batch_size)
    )
    return total / len(inputs)


def robustness_rows(
    model: nn.Module,
    groups: Sequence[Group],
    a: State,
    b: State,
    inputs: Tensor,
    targets: Tensor,
    alphas: Sequence[float] = (0.5, 1.0),
    seeds: Sequence[int] = tuple(range(ROBUSTNESS_SEEDS)),
    loss_fn: LossFn = nn.functional.cross_entropy,
    batch_size: int = BATCH_SIZE,
) -> Rows:
    """Loss of A moved along random directions, per group and for the whole model.

    As in the authors' ``layerwise_robustness_eval.py``: the group's weights become
    ``A_g + alpha * r`` with ``r`` Gaussian scaled to ``||A_g - B_g||`` (the distance a layer
    swap moves), the rest stays A; the loss is averaged over ``seeds``. Rows have ``measure``
    ``random_loss``, ``between`` ``a``, and ``alpha``; alpha 0 is A's own loss.
    """
    rows: Rows = []
    for group in _with_whole(groups, a):
        distance = float(torch.linalg.norm(flat(a, group.keys) - flat(b, group.keys)))
        directions = [random_direction(a, group.keys, distance, seed) for seed in seeds]
        for alpha in alphas:
            losses = []
            for direction in directions:
                moved = dict(a) | {k: a[k] + alpha * r for k, r in direction.items()}
                losses.append(mean_loss(model, moved, inputs, targets, loss_fn, batch_size))
            rows.append(
                {
                    "group": group.name,
                    "measure": "random_loss",
                    "between": "a",
                    "alpha": float(alpha),
                    "value": sum(losses) / len(losses),
                }
            )
    return rows
