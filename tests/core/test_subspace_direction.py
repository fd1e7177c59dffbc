"""The subspace experiment's averaging direction: away from the other net or towards it."""

from __future__ import annotations

import pytest
import torch

from lwlc.commands import experiment
from lwlc.core.errors import LwlcError

KEYS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def states() -> list[dict[str, torch.Tensor]]:
    """Two random 'trained' nets with the shapes of a 3 -> 2 -> 2 MLP."""
    gen = torch.Generator().manual_seed(3)
    shapes = {"fc1.weight": (2, 3), "fc1.bias": (2,), "fc2.weight": (2, 2), "fc2.bias": (2,)}
    return [
        {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
        for _ in range(2)
    ]


def vector(state: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    return torch.cat([state[k].reshape(-1) for k in keys])


@pytest.mark.parametrize("net", [0, 1])
def test_away_moves_away_from_the_other_net(net: int) -> None:
    recipe = experiment.load_recipe("subspace")
    finals = states()
    d = recipe.averaging_direction(finals, net, KEYS, KEYS, "away")
    me, other = vector(finals[net], KEYS), vector(finals[1 - net], KEYS)
    distances = [float((me + s * d - other).norm()) for s in (0.0, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances) and distances[-1] > distances[0]
    assert float(d.norm()) == pytest.approx(1.0)
    # the authors' notebook: net 1 + sigma * v, net 2 - sigma * v with v = (t1 - t2) / |t1 - t2|
    v = (vector(finals[0], KEYS) - vector(finals[1], KEYS)) / (
        vector(finals[0], KEYS) - vector(finals[1], KEYS)
    ).norm()
    torch.testing.assert_close(d, v if net == 0 else -v)


def test_away_is_normalised_over_the_whole_model_then_masked() -> None:
    recipe = experiment.load_recipe("subspace")
    finals = states()
    layer = ["fc2.weight", "fc2.bias"]
    d = recipe.averaging_direction(finals, 0, layer, KEYS, "away")
    # independent: the whole-model unit vector, other layers' entries zeroed, then those taken
    whole = {k: finals[0][k] - finals[1][k] for k in KEYS}
    norm = sum(float((t**2).sum()) for t in whole.values()) ** 0.5
    masked = {k: (whole[k] / norm if k in layer else torch.zeros_like(whole[k])) for k in KEYS}
    torch.testing.assert_close(d, torch.cat([masked[k].reshape(-1) for k in layer]))
    assert float(d.norm()) < 1.0  # a piece of a unit vector, not renormalised per layer


def test_towards_is_the_old_per_scope_unit_direction() -> None:
    recipe = experiment.load_recipe("subspace")
    finals = states()
    layer = ["fc1.weight", "fc1.bias"]
    d = recipe.averaging_direction(finals, 1, layer, KEYS, "towards")
    diff = vector(finals[0], layer) - vector(finals[1], layer)
    torch.testing.assert_close(d, diff / diff.norm())
    me, other = vector(finals[1], layer), vector(finals[0], layer)
    assert float((me + 0.5 * d - other).norm()) < float((me - other).norm())
    with pytest.raises(LwlcError, match="unknown direction"):
        recipe.averaging_direction(finals, 0, layer, KEYS, "sideways")


def test_smoke_reports_both_directions(tmp_path) -> None:
    recipe = experiment.load_recipe("subspace")
    result = recipe.run(tmp_path, "smoke")
    assert result["averaging_direction"] == "away"
    for name in ("mean_loss_averaging_direction_away", "mean_loss_averaging_direction_towards"):
        assert result[name] == result[name]  # not NaN
        assert f"head/{name}" in result
    assert result["mean_loss_averaging_direction"] == result["mean_loss_averaging_direction_away"]
    assert (tmp_path / "figures" / "subspace_noise.png").stat().st_size > 0
