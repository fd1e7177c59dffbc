"""lwlc.core.measures against computations written out by hand."""

from __future__ import annotations

import torch
from torch import nn

from lwlc.core.layers import default_groups
from lwlc.core.measures import agreement_rows, robustness_rows, weight_measures


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(6, 3)).double()


def _state(seed: int) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _net(seed).state_dict().items()}


def _value(rows, group, measure, between):
    (hit,) = [
        r for r in rows if (r["group"], r["measure"], r["between"]) == (group, measure, between)
    ]
    return hit["value"]


def test_weight_measures_match_flattened_norms_and_cosines() -> None:
    model = _net(0)
    a, b, ia, ib = _state(1), _state(2), _state(3), _state(4)
    rows = weight_measures(default_groups(model), a, b, ia, ib)
    first = lambda s: torch.cat([s["0.weight"].reshape(-1), s["0.bias"].reshape(-1)])  # noqa: E731
    floating = [k for k in a if k != "2.num_batches_tracked"]
    whole = lambda s: torch.cat([s[k].reshape(-1) for k in floating])  # noqa: E731
    for between, x, y in [("a-b", a, b), ("a-init", a, ia), ("b-init", b, ib)]:
        for group, f in [("0", first), ("all", whole)]:
            u, v = f(x), f(y)
            dist = float(torch.linalg.norm(u - v))
            cos = float(nn.functional.cosine_similarity(u, v, dim=0))
            assert abs(_value(rows, group, "l2_distance", between) - dist) < 1e-10
            assert abs(_value(rows, group, "cosine_similarity", between) - cos) < 1e-10
    assert {r["group"] for r in rows} == {"0", "2", "3", "all"}


def test_agreement_counts_equal_argmax_one_by_one() -> None:
    model = _net(0)
    a, b = _state(1), _state(2)
    x = torch.randn(50, 4, dtype=torch.float64)
    (row,) = agreement_rows(model, a, b, x, batch_size=7)
    same = 0
    for i in range(len(x)):
        pa, pb = _net(1).eval(), _net(2).eval()
        same += int(pa(x[i : i + 1]).argmax() == pb(x[i : i + 1]).argmax())
    assert row["value"] == same / len(x)
    assert 0 < row["value"] < 1


def test_robustness_is_loss_of_a_along_scaled_gaussian() -> None:
    model = _net(0)
    groups = default_groups(model)
    a, b = _state(1), _state(2)
    x, y = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
    rows = robustness_rows(model, groups, a, b, x, y, alphas=(0.5, 1.0), seeds=(0, 1), batch_size=9)
    keys = ["3.weight", "3.bias"]
    dist = torch.linalg.norm(torch.cat([(a[k] - b[k]).reshape(-1) for k in keys]))
    for alpha in (0.5, 1.0):
        losses = []
        for seed in (0, 1):
            gen = torch.Generator().manual_seed(seed)
            r = {k: torch.randn(a[k].shape, generator=gen, dtype=torch.float64) for k in keys}
            norm = torch.sqrt(sum((v**2).sum() for v in r.values()))
            net = _net(1).eval()
            with torch.no_grad():
                for k in keys:
                    net.state_dict()[k].add_(alpha * dist / norm * r[k])
                total = sum(
                    float(nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1]))
                    for i in range(len(x))
                )
            losses.append(total / len(x))
        (hit,) = [r for r in rows if r["group"] == "3" and r["alpha"] == alpha]
        assert abs(hit["value"] - sum(losses) / 2) < 1e-9
    assert {r["group"] for r in rows} == {"0", "2", "3", "all"}


def test_layer_distances_draws_each_layer_value_as_a_bar() -> None:
    from lwlc.figures import layer_distances

    model = _net(0)
    a, b, init = _state(1), _state(2), _state(3)
    rows = weight_measures(default_groups(model), a, b, init, init)
    fig = layer_distances(rows)
    top, bottom = fig.axes[:2]
    for ax, measure in [(top, "l2_distance"), (bottom, "cosine_similarity")]:
        drawn = sorted(round(p.get_height(), 9) for p in ax.patches if p.get_height() != 0)
        wanted = sorted(
            round(r["value"], 9)
            for r in rows
            if r["measure"] == measure and r["group"] != "all" and r["value"] != 0
        )
        assert drawn == wanted
        whole = {
            round(r["value"], 9) for r in rows if r["measure"] == measure and r["group"] == "all"
        }
        assert whole <= {round(float(line.get_ydata()[0]), 9) for line in ax.lines}
