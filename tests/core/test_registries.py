"""The choices of a measurement come from registries ({name: function}), each named once by a
Literal of MeasureSpec; every registered function does what its name says; each default of a
measurement option has one source."""

from __future__ import annotations

import re
from typing import get_args

import pytest
import torch
from torch import nn

from conftest import REPO_ROOT
from lwlc.core.alignment import ALIGN_METHODS, align
from lwlc.core.barriers import BARRIER_COLUMNS, METRICS
from lwlc.core.engine import Metrics
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import PLANS, REST_FROM, InterpolationPath, make_paths
from lwlc.core.layers import Group
from lwlc.core.measurement import MEASURES
from lwlc.core.precision import PRECISIONS
from lwlc.core.spec import Alignment, Measure, Plan, Precision, Rest
from lwlc.core.sweep import curve_barrier_rows

SRC = REPO_ROOT / "src" / "lwlc"


@pytest.mark.parametrize(
    ("literal", "registry"),
    [
        (Plan, PLANS),
        (Alignment, ALIGN_METHODS),
        (Precision, PRECISIONS),
        (Measure, MEASURES),
        (Rest, REST_FROM),
    ],
    ids=["plans", "align", "precision", "measures", "rest_from"],
)
def test_each_literal_names_exactly_its_registry_in_order(literal, registry) -> None:
    assert get_args(literal) == tuple(registry)


GROUPS = [Group("g0", ("k0",)), Group("g1", ("k1", "k2")), Group("g2", ("k3",))]
CUSTOM = {"ends": [GROUPS[0], GROUPS[2]]}


def _paths(plan: str, per_group: list[set[str]]) -> list[InterpolationPath]:
    return [
        InterpolationPath(plan, g.name, r, frozenset(keys))
        for g, keys in zip(GROUPS, per_group, strict=True)
        for r in ("a", "b")
    ]


EXPECTED = {
    "full": [InterpolationPath("full", "all", "a", frozenset({"k0", "k1", "k2", "k3"}))],
    "single": _paths("single", [{"k0"}, {"k1", "k2"}, {"k3"}]),
    "cumulative_front": _paths(
        "cumulative_front", [{"k0"}, {"k0", "k1", "k2"}, {"k0", "k1", "k2", "k3"}]
    ),
    "cumulative_back": _paths(
        "cumulative_back", [{"k0", "k1", "k2", "k3"}, {"k1", "k2", "k3"}, {"k3"}]
    ),
    "custom": [InterpolationPath("custom", "ends", r, frozenset({"k0", "k3"})) for r in "ab"],
}


@pytest.mark.parametrize("plan", list(EXPECTED))
def test_each_plan_builds_the_paths_written_out_by_hand(plan: str) -> None:
    assert PLANS[plan](GROUPS, ("a", "b"), CUSTOM) == EXPECTED[plan]


def test_make_paths_looks_the_plans_up_in_the_order_asked() -> None:
    found = make_paths(GROUPS, ["custom", "full", "single"], ["a", "b"], CUSTOM)
    assert found == EXPECTED["custom"] + EXPECTED["full"] + EXPECTED["single"]
    with pytest.raises(LwlcError, match="unknown plan 'diagonal'; choose from full, single"):
        make_paths(GROUPS, ["diagonal"])


def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))


def test_alignment_methods_leave_b_or_undo_a_permutation_of_its_hidden_units() -> None:
    model = _mlp(0)
    a = model.state_dict()
    perm = torch.tensor([3, 0, 4, 1, 2])
    b = {
        "0.weight": a["0.weight"][perm],
        "0.bias": a["0.bias"][perm],
        "2.weight": a["2.weight"][:, perm],
        "2.bias": a["2.bias"],
    }
    unchanged = align("none", model, a, b)
    assert all(torch.equal(unchanged[k], b[k]) for k in b)
    matched = align("weight-matching", model, a, b)
    assert all(torch.equal(matched[k], a[k]) for k in a)
    with pytest.raises(LwlcError, match="unknown --align 'git-rebasin': choose none or weight"):
        align("git-rebasin", model, a, b)


def test_precisions_set_the_arithmetic_of_a_pass_and_restore_it() -> None:
    x = torch.randn(4, 4)
    with PRECISIONS["bf16"](torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16
    exact = x @ x
    for name in ("fp32", "tf32"):  # nothing changes on a CPU
        with PRECISIONS[name](torch.device("cpu")):
            assert torch.equal(x @ x, exact)
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with PRECISIONS["fp32"](torch.device("cuda")):  # the flags only, no CUDA needed
            assert flags() == (False, False)
        assert flags() == (True, True)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with PRECISIONS["tf32"](torch.device("cuda")):
            assert flags() == (True, True)
        assert flags() == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_each_metric_gives_its_barrier_column_from_loss_and_accuracy() -> None:
    assert METRICS["loss"](0.7, 0.9) == 0.7
    assert METRICS["error"](0.7, 0.9) == pytest.approx(0.1)
    assert BARRIER_COLUMNS[-len(METRICS) :] == ("loss_barrier", "error_barrier")
    path = InterpolationPath("single", "g0", "a", frozenset({"k0"}))
    curve = [Metrics(10.0, 9, 10), Metrics(25.0, 6, 10), Metrics(12.0, 8, 10)]  # loss, accuracy
    _, rows = curve_barrier_rows(path, "test", [0.0, 0.5, 1.0], curve, (curve[0], curve[2]))
    midpoint = {r["reference"]: r for r in rows}["midpoint"]
    assert midpoint["loss_barrier"] == pytest.approx(2.5 - (1.0 + 1.2) / 2)
    assert midpoint["error_barrier"] == pytest.approx(0.4 - (0.1 + 0.2) / 2)


# The modules that take measurement options (data loaders' own batch sizes are other options).
OPTION_MODULES = [p for p in SRC.rglob("*.py") if p.parent.name not in ("data", "formats",
                  "models", "training")]  # fmt: skip
OPTION_DEFAULT = re.compile(
    r"\b(batch_size|bn_batch_size|chunk_size|bn_samples|num_alphas|robustness_seeds|seeds)"
    r"\s*(:[^=\n]*)?=\s*[0-9(]"
)


def test_each_measurement_default_and_registry_has_one_source() -> None:
    literal_defaults = {
        str(p.relative_to(SRC)): OPTION_DEFAULT.findall(p.read_text()) for p in OPTION_MODULES
    }
    assert {k: v for k, v in literal_defaults.items() if v} == {}
    for name in ("METRICS", "PLANS", "ALIGN_METHODS", "PRECISIONS", "MEASURES", "REST_FROM"):
        defined = [
            p.name for p in SRC.rglob("*.py") if re.search(rf"^{name}\b.*=", p.read_text(), re.M)
        ]
        assert len(defined) == 1, (name, defined)
