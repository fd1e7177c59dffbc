"""lwlc.core.measurement: a spec run on two networks gives the rows of a naive loop, one
interpolated model at a time, and the extra measures' rows written out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine_reference import naive_curve
from lwlc.core.alignment import weight_matching
from lwlc.core.measurement import ALIGNED, measure_extras, plan_paths, prepare
from lwlc.core.measures import MEASURE_COLUMNS, robustness_rows
from lwlc.core.spec import MeasureSpec


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny tensors: one thread avoids contention on a shared machine (conftest restores it)."""
    torch.set_num_threads(1)


def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()


def _pair() -> tuple[nn.Module, dict, dict, dict]:
    model = _net(0)
    a, b = _net(1).state_dict(), _net(2).state_dict()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    return model, a, b, {"test": (x, y)}


def test_prepared_sweep_gives_the_naive_curves_before_and_after_alignment() -> None:
    model, a, b, data = _pair()
    spec = MeasureSpec(plans=["full", "single"], num_alphas=3, align="weight-matching")
    groups, paths = plan_paths(spec, model)
    assert [g.name for g in groups] == ["0", "2"]
    prepared = prepare(spec, model, a, b, paths, data)
    assert prepared.paths == paths + [
        type(p)(ALIGNED + p.plan, p.group, p.rest_from, p.keys) for p in paths
    ]
    result = prepared.run()
    aligned_b = weight_matching(model, a, b)[0]
    x, y = data["test"]
    for path in prepared.paths:
        other = aligned_b if path.plan.startswith(ALIGNED) else b
        losses, accs = naive_curve(model, a, other, set(path.keys), spec.grid, path.rest_from, x, y)
        rows = [r for r in result.curves if (r["plan"], r["group"], r["rest_from"]) == (
            path.plan, path.group, path.rest_from)]  # fmt: skip
        assert [r["alpha"] for r in rows] == spec.grid
        assert [r["loss"] for r in rows] == pytest.approx(losses, abs=1e-9)
        assert [r["accuracy"] for r in rows] == pytest.approx(accs, abs=1e-6)  # naive: float32
    assert result.endpoints["test"]["loss_b"] == pytest.approx(
        F.cross_entropy(_net(2)(x), y).item(), abs=1e-12
    )


def test_run_sweeps_only_the_paths_asked_and_drops_calibration_it_does_not_need() -> None:
    model, a, b, data = _pair()
    spec = MeasureSpec(plans=["single"], rest_from=["b"], num_alphas=2)
    _, paths = plan_paths(spec, model)
    prepared = prepare(spec, model, a, b, paths, data, calibration=data["test"][0])
    assert prepared.calibration is None  # bn=keep (and no BatchNorm): nothing to recalibrate
    result = prepared.run(todo={paths[1]})
    assert {(r["plan"], r["group"], r["rest_from"]) for r in result.curves} == {
        ("single", "2", "b")
    }
    assert len(result.barriers) == 2  # path and models references; no alpha 0.5, no midpoint


def test_measure_extras_gives_each_measure_in_registry_order_as_computed_by_hand() -> None:
    model, a, b, data = _pair()
    spec = MeasureSpec(measures=["robustness", "agreement", "weights"], robustness_seeds=2)
    groups, _ = plan_paths(spec, model)
    rows = measure_extras(spec, model, groups, a, b, data)
    assert all(tuple(r) == MEASURE_COLUMNS for r in rows)
    kinds = ["weights" if k in ("l2_distance", "cosine_similarity") else k
             for k in (r["measure"] for r in rows)]  # fmt: skip
    assert list(dict.fromkeys(kinds)) == ["weights", "agreement", "random_loss"]
    assert kinds == sorted(kinds, key=["weights", "agreement", "random_loss"].index)
    whole = {r["measure"]: r["value"] for r in rows if (r["group"], r["between"]) == ("all", "a-b")}
    flat = lambda s: torch.cat([v.reshape(-1) for v in s.values()])  # noqa: E731
    assert whole["l2_distance"] == pytest.approx(float(torch.linalg.norm(flat(a) - flat(b))))
    x, _ = data["test"]
    same = (_net(1)(x).argmax(1) == _net(2)(x).argmax(1)).double().mean().item()
    assert whole["agreement"] == pytest.approx(same)
    robust = [r for r in rows if r["measure"] == "random_loss"]
    assert [(r["group"], r["alpha"], r["split"]) for r in robust] == [
        (g, t, "test") for g in ("0", "2", "all") for t in (0.5, 1.0)
    ]
    two_seeds = robustness_rows(_net(0), groups, a, b, *data["test"], seeds=(0, 1))
    assert [r["value"] for r in robust] == [r["value"] for r in two_seeds]
